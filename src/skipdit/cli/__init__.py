"""The ``skipdit`` command. Each subcommand parses its arguments and calls one library function.

Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib.abc
import importlib.util
import logging
import os
import re
import sys

from .. import __version__
from ..errors import UserError, is_out_of_memory
from . import (
    analyze_cmd,
    bench_cmd,
    cache_cmd,
    convert_cmd,
    eval_cmd,
    export_cmd,
    latents_cmd,
    sample_cmd,
    sample_many_cmd,
    serve_cmd,
    train_cmd,
)
from .help import HelpFormatter

COMMANDS = (sample_cmd, sample_many_cmd, train_cmd, export_cmd, convert_cmd, latents_cmd, cache_cmd, bench_cmd,
            analyze_cmd, eval_cmd, serve_cmd)
# What the operating system says about a path the user gave (unwritable, a file where a folder should be, disk
# full) is the user's to fix, not a bug of skipdit: one line too.
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOENT,
                errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG}


class _Parser(argparse.ArgumentParser):
    """An argument error is bad input like any other: one line, exit 2 (argparse would add its usage).
    Every subcommand's help shows the defaults and keeps its examples' lines (:class:`HelpFormatter`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        command = self.prog.partition(" ")[2]
        raise UserError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="skipdit", description="Skip-DiT: diffusion transformers with long skips, and Skip-Cache."
    )
    parser.add_argument("--version", action="version", version=f"skipdit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="skipdit: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "no_progress", False):
            silence_library_progress()
        return args.run(args) or 0
    except UserError as err:
        return _fail(str(err))
    except OSError as err:
        if err.errno not in _PATH_ERRNOS or err.filename is None:
            raise
        return _fail(f"{err.filename}: {err.strerror}")
    except (MemoryError, RuntimeError) as err:  # CUDA raises OutOfMemoryError, the CPU a plain RuntimeError
        if not is_out_of_memory(err):
            raise
        return _fail(f"{_OUT_OF_MEMORY} ({_allocation(err)})" if isinstance(err, RuntimeError) else _OUT_OF_MEMORY)
    except KeyboardInterrupt:
        print("skipdit: interrupted", file=sys.stderr)
        return 130


def silence_library_progress() -> None:
    """``--no-progress`` for the libraries skipdit loads models with: huggingface_hub (and transformers,
    which follows it) read ``HF_HUB_DISABLE_PROGRESS_BARS`` when imported; diffusers has only a function,
    called when it is imported (importing it here would cost seconds to runs that never use it). Libraries
    already imported are switched off directly."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        importlib.import_module("transformers.utils.logging").disable_progress_bar()
    _after_import("diffusers.utils.logging", lambda module: module.disable_progress_bar())


def _after_import(name: str, action) -> None:
    """Call ``action(module)`` once module ``name`` is imported: now if it already is, else when it is."""
    if name in sys.modules:
        action(sys.modules[name])
    elif not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, action))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds ``name`` with the other finders and wraps its loader so that ``action`` runs on the loaded
    module; it then leaves ``sys.meta_path``."""

    def __init__(self, name: str, action):
        self.name, self.action = name, action

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            load, action = spec.loader.exec_module, self.action

            def exec_module(module):
                load(module)
                action(module)

            spec.loader.exec_module = exec_module
        return spec


_OUT_OF_MEMORY = "out of memory: ask for fewer seeds, frames, a smaller image or a smaller --batch-size"


def _allocation(err: RuntimeError) -> str:
    """The size torch tried to allocate, from its message, e.g. "tried to allocate 40.00 TB"."""
    text = str(err)
    match = re.search(r"tried to allocate (\d+) bytes", text)
    if match:
        return f"tried to allocate {int(match[1]) / 2**30:,.1f} GiB"
    match = re.search(r"Tried to allocate ([\d.]+ [KMGT]iB)", text)
    return f"tried to allocate {match[1]}" if match else type(err).__name__


def _fail(message: str) -> int:
    line = " ".join(message.split())  # one line, whatever the message held
    print(f"skipdit: error: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
