"""Bad input to ``skipdit train`` and ``skipdit export``: one stderr line, exit 2, nothing changed or written
(the contract of tests/badinput.py). Covers configs (YAML that does not parse, is not a mapping, is not text),
values (absurd batches, non-finite numbers) and run folders whose files are empty, torn, garbage or corrupt."""

import shutil
import struct
from pathlib import Path

import pytest
import torch

from skipdit.train import train
from skipdit.train.checkpoint import checkpoint_path, list_checkpoints
from skipdit.train.config import from_dict

from .badinput import expect_user_error

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")

TINY = ["--set", "data.kind=digits", "--set", "model=DiT-S/4-skip", "--set",
        "model_args={hidden_size: 32, depth: 2, num_heads: 2}", "--set", "global_batch=8", "--set", "device=cpu",
        "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 4-step run with checkpoints 2 and 4 (copy it before damaging it)."""
    root = tmp_path_factory.mktemp("trained")
    cfg = from_dict(dict(run_dir=str(root / "run"), model="DiT-S/4-skip",
                         model_args={"hidden_size": 32, "depth": 2, "num_heads": 2}, data={"kind": "digits"},
                         steps=4, global_batch=8, log_every=1, ckpt_every=2, device="cpu"))
    train(cfg, progress=False)
    return Path(cfg.run_dir)


def copy_run(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def checkpoints(run: Path) -> list[Path]:
    return [p for _, p in list_checkpoints(run)]


def flip_a_weight(path: Path) -> None:
    """One EMA weight overwritten inside the file: it still loads, with a weight of 1e29."""
    tensor = torch.load(path, weights_only=True)["ema"]["final_layer.linear.weight"]
    data = path.read_bytes()
    at = data.find(tensor.contiguous().numpy().tobytes()[:64])
    path.write_bytes(data[:at] + struct.pack("<f", 1e29) + data[at + 4:])


# -- configs and values ----------------------------------------------------------------------------------------
CONFIG_FILES = {
    "invalid YAML": (b"lr: 1e-4\nsteps: [1,\n", r"is not valid YAML \(.*line 3"),
    "a list at the top": (b"- lr: 1e-4\n- steps: 3\n", r"must be a mapping of keys \(key: value\) at the top level, "
                                                       r"got a list"),
    "a scalar at the top": (b"just some words\n", "at the top level, got a str"),
    "binary": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", r"is not a UTF-8 text file \(byte 0 is 0xff\)"),
    "empty": (b"", r"is empty \(0 bytes\)"),
    "only comments": (b"# lr: 1e-4\n", r"holds no keys \(only comments\)"),
    "a NUL character": (b"lr: \x00\n", "is not valid YAML .*unacceptable character"),
    "a key that is a number": (b"1: 2\nlr: 1e-4\n", r"unknown config key\(s\) 1; valid: run_dir"),
    "a python tag": (b"lr: !!python/object/apply:os.system [echo]\n", "is not valid YAML .*constructor"),
}


@pytest.mark.parametrize("case", list(CONFIG_FILES))
def test_a_bad_config_file_is_one_line(tmp_path, capsys, case):
    content, message = CONFIG_FILES[case]
    config = tmp_path / "train.yaml"
    config.write_bytes(content)
    expect_user_error(capsys, ["train", "--config", config, "--run-dir", tmp_path / "run"], message,
                      inputs=[config], outputs=[tmp_path])


def test_a_folder_as_config_is_one_line(tmp_path, capsys):
    expect_user_error(capsys, ["train", "--config", tmp_path], "is a folder, not a YAML file", outputs=[tmp_path])


SETTINGS = {
    "unclosed list": (["steps=[1,"], r"--set steps: '\[1,' is not a valid YAML value \(.*line 1, column 4\)"),
    "unclosed mapping": (["model_args={depth: 2"], "--set model_args: .* is not a valid YAML value"),
    "python tag": (["lr=!!python/name:os.system"], "--set lr: .* is not a valid YAML value .*constructor"),
    "tab in a flow mapping": (["data={kind:\tdigits"], "--set data: .* is not a valid YAML value"),
    "absurd global batch": (["global_batch=1e12"], r"global_batch 1000000000000 needs about .* of memory per step"),
    "absurd micro batch": (["micro_batch=1e12"], "micro_batch 1000000000000 does not divide the per-process batch 8"),
    "infinite steps": (["steps=.inf"], "config key steps: expected int, got inf"),
    "steps as text inf": (["steps=inf"], "config key steps: expected int, got 'inf'"),
    "nan lr": (["lr=.nan"], "lr must be a number > 0, got nan"),
    "nan grad clip": (["grad_clip=.nan"], "grad_clip must be a number > 0 or null, got nan"),
    "beta of 1.5": (["adam_betas=[0.9, 1.5]"], r"adam_betas must both be in \[0, 1\), got \[0.9, 1.5\]"),
    "negative weight decay": (["weight_decay=-1"], "weight_decay must be a number >= 0"),
    "data not a section": (["data=3"], "data must be a mapping, got int"),
    "model_args a list": (["model_args=[1]"], "config key model_args: expected dict, got \\[1\\]"),
    "dotted key under a value": (["lr=1", "lr.x=2"], "--set lr.x: lr is not a section"),
}


@pytest.mark.parametrize("case", list(SETTINGS))
def test_a_bad_setting_is_one_line(tmp_path, capsys, case):
    sets, message = SETTINGS[case]
    argv = ["train", "--run-dir", tmp_path / "run", *TINY] + [a for s in sets for a in ("--set", s)]
    expect_user_error(capsys, argv, message, outputs=[tmp_path])


# -- run folders ---------------------------------------------------------------------------------------------------
def damage_all(run: Path, how: str) -> None:
    for path in checkpoints(run):
        if how == "empty":
            path.write_bytes(b"")
        elif how == "garbage":
            path.write_bytes(b"\x00not a checkpoint\xff" * 100)
        elif how == "truncated":
            path.write_bytes(path.read_bytes()[:2000])
        elif how == "flipped":
            flip_a_weight(path)
        elif how == "foreign":
            torch.save({"state_dict": {"w": torch.zeros(2)}}, path)


RUN_DAMAGE = {
    "empty": r"no readable checkpoint in .*ckpt-0000004.pt is empty \(0 bytes.*ckpt-0000002.pt is empty",
    "garbage": r"ckpt-0000004.pt is unreadable: not a PyTorch checkpoint \(its pickle data is damaged",
    "truncated": r"ckpt-0000002.pt is unreadable: a truncated or damaged PyTorch checkpoint",
    "flipped": r"ckpt-0000004.pt is corrupt: its contents do not match the checksum it was saved with",
    "foreign": r"ckpt-0000004.pt is not a skipdit training checkpoint \(missing model, ema, opt, step, config\)",
}


@pytest.mark.parametrize("how", list(RUN_DAMAGE))
def test_resuming_a_run_with_no_good_checkpoint_is_one_line_and_changes_nothing(tmp_path, capsys, trained, how):
    run = copy_run(trained, tmp_path)
    damage_all(run, how)
    expect_user_error(capsys, ["train", "--run-dir", run, *TINY, "--set", "steps=6"], RUN_DAMAGE[how],
                      inputs=[*checkpoints(run), run / "log.jsonl", run / "config.yaml"], outputs=[run])


@pytest.mark.parametrize("how", list(RUN_DAMAGE))
def test_exporting_a_run_with_no_good_checkpoint_is_one_line(tmp_path, capsys, trained, how):
    run = copy_run(trained, tmp_path)
    damage_all(run, how)
    expect_user_error(capsys, ["export", run], RUN_DAMAGE[how], inputs=checkpoints(run), outputs=[run])


@pytest.mark.parametrize("what, kind", [("run", "folder"), ("checkpoints", "folder"), ("log.jsonl", "file"),
                                        ("config.yaml", "file")])
def test_a_file_in_the_way_of_a_run_is_one_line(tmp_path, capsys, what, kind):
    run = tmp_path / "run"
    target = tmp_path / "run" if what == "run" else run / what
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "folder":
        target.write_text("x")
    else:
        target.mkdir()
    expect_user_error(capsys, ["train", "--run-dir", run, *TINY], f"{target} is in the way: the run needs a {kind}",
                      outputs=[tmp_path])


def test_export_of_a_corrupt_step_is_one_line(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path)
    flip_a_weight(checkpoint_path(run, 4))
    expect_user_error(capsys, ["export", run, "--step", "4"], "ckpt-0000004.pt is corrupt",
                      inputs=checkpoints(run), outputs=[run])


def test_export_of_a_garbled_checksum_entry_is_one_line(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path)
    path = checkpoint_path(run, 4)
    payload = torch.load(path, weights_only=True)
    payload["checksum"] = "sha256:deadbeef"
    torch.save(payload, path)
    expect_user_error(capsys, ["export", run, "--step", "4"], "ckpt-0000004.pt is corrupt: its checksum entry is "
                      "garbled", inputs=checkpoints(run), outputs=[run])


@pytest.mark.parametrize("argv, message", [
    (["--step", "3"], r"no checkpoint for step 3 in .* \(kept steps: 2, 4\)"),
    (["--out", "model.pt"], r"output must end in .safetensors, got model.pt"),
    (["--weights", "best"], r"export: argument --weights: invalid choice: 'best'"),
    (["--step", "four"], r"export: argument --step: invalid int value: 'four'"),
], ids=["missing-step", "out-not-safetensors", "bad-weights", "step-not-a-number"])
def test_bad_export_arguments_are_one_line(tmp_path, capsys, trained, argv, message):
    run = copy_run(trained, tmp_path)
    expect_user_error(capsys, ["export", run, *argv], message, inputs=checkpoints(run), outputs=[run, tmp_path])


def test_export_of_no_run_is_one_line(tmp_path, capsys):
    expect_user_error(capsys, ["export", tmp_path / "nothing"], "run folder not found", outputs=[tmp_path])
    (tmp_path / "empty-run").mkdir()
    expect_user_error(capsys, ["export", tmp_path / "empty-run"], "no checkpoints in", outputs=[tmp_path])
