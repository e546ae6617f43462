"""Every ``--help`` tells the truth: exit 0, each option's default shown, each example one complete command
that the parser accepts, no path in the repository that does not exist; ``--model`` takes a built-in
name everywhere; ``--no-progress`` silences the libraries' progress bars too."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import skipdit
from skipdit.cli import build_parser, main
from skipdit.cli.help import HelpFormatter
from skipdit.cli.options import model_request

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(skipdit.__file__).resolve().parents[1]


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) of every command and nested action, e.g. ("cache", "plan")."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = [path for path, _ in _commands(build_parser()) if path]


def _parser_of(path: tuple[str, ...]) -> argparse.ArgumentParser:
    return dict(_commands(build_parser()))[path]


def _help(path: tuple[str, ...], capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main([*path, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def _examples(text: str) -> list[str]:
    """The lines of the ``examples:`` block (up to the first blank line)."""
    block = text.partition("\nexamples:\n")[2].split("\n\n")[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_shows_every_default(path, capsys):
    _help(path, capsys)
    formatter = HelpFormatter(" ".join(path))
    for action in _parser_of(path)._actions:
        if not action.option_strings or action.default is argparse.SUPPRESS or isinstance(
                action, argparse._SubParsersAction):
            continue
        assert action.help, f"{' '.join(path)} {action.option_strings[0]} has no help"
        shown = formatter._expand_help(action)
        default = action.default
        if default is None or default is False or default == []:  # nothing to show (0 is shown)
            continue
        assert "default" in shown, f"{action.option_strings[0]}: {shown!r}"
        if "default" not in action.help:  # the formatter adds the real value
            assert shown.endswith(f"(default: {repr(default) if default == '' else default})")


def _is_leaf(path: tuple[str, ...]) -> bool:
    return not any(isinstance(a, argparse._SubParsersAction) for a in _parser_of(path)._actions)


# every command that runs something has examples; a group (cache, analyze) only if it gives some itself
EXAMPLED = [path for path in COMMANDS if _is_leaf(path) or "examples:" in (_parser_of(path).epilog or "")]


@pytest.mark.parametrize("path", EXAMPLED, ids=" ".join)
def test_each_example_is_one_complete_command(path, capsys):
    text = _help(path, capsys)
    lines = _examples(text)
    assert lines, f"{' '.join(path)} --help has no examples"
    for line in lines:
        assert line.startswith(("  skipdit ", "  torchrun ")), f"not a command of its own: {line!r}"
        assert not line.rstrip().endswith("\\"), line
        words = shlex.split(line, comments=True)
        args = build_parser().parse_args(words[words.index("skipdit") + 1:])  # a UserError names what is wrong
        assert args.run is not None


def test_examples_name_only_config_files_that_exist(capsys):
    named = set()
    for path in COMMANDS:
        named.update(re.findall(r"configs/[\w./-]+\.ya?ml", _help(path, capsys)))
    assert "configs/digits/skip-dit.yaml" in named
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert missing == []


def test_model_takes_a_builtin_name_wherever_a_model_is_taken(tmp_path, capsys):
    """sample's --model was only an architecture preset; now a built-in name means that model, as in
    bench, analyze, cache tune and calibrate-teacache."""
    assert main(["sample", "--model", "digits/DiT", "--seeds", "0", "--steps", "2", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    assert (tmp_path / "grid.png").is_file()
    args = build_parser().parse_args(["sample", "--model", "digits/DiT"])
    assert model_request(args).source() == ("digits/DiT", None)
    args = build_parser().parse_args(["sample", "--model", "DiT-S/2-skip", "--ckpt", "x.pt"])
    assert model_request(args).source() == ("x.pt", "DiT-S/2-skip")  # with --ckpt: the architecture preset
    capsys.readouterr()


def _run_cli(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB_DISABLE")}
    env.update(PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "skipdit", *argv], capture_output=True, text=True, env=env,
                          timeout=300)


def test_no_progress_silences_the_text_encoders_bars(tmp_path):
    """The built-in MiniLM text encoder loads through transformers, whose "Loading weights" bar used to
    print even with --no-progress."""
    argv = ["sample", "--task", "t2v", "--seeds", "0", "--sampler", "ddim", "--steps", "2", "--format", "gif"]
    loud = _run_cli(*argv, "--out", str(tmp_path / "loud"))
    assert loud.returncode == 0, loud.stderr
    assert "Loading weights" in loud.stderr  # the bar this test is about exists
    quiet = _run_cli(*argv, "--out", str(tmp_path / "quiet"), "--no-progress")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert quiet.stdout.startswith("1 videos in ")


def test_no_progress_reaches_diffusers_when_it_is_imported_later():
    code = ("import sys; from skipdit.cli import silence_library_progress; silence_library_progress(); "
            "assert 'diffusers' not in sys.modules; import diffusers.utils.logging as d; "
            "import transformers.utils.logging as t; print(d.is_progress_bar_enabled(), t.is_progress_bar_enabled())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB_DISABLE")}
    env.update(PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
