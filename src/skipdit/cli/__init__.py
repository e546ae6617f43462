"""The ``skipdit`` command. Each subcommand parses its arguments and calls one library function.

Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys

from .. import __version__
from ..errors import UserError
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
    train_cmd,
)

COMMANDS = (sample_cmd, sample_many_cmd, train_cmd, export_cmd, convert_cmd, latents_cmd, cache_cmd, bench_cmd,
            analyze_cmd, eval_cmd)
# What the operating system says about a path the user gave (unwritable, a file where a folder should be, disk
# full) is the user's to fix, not a bug of skipdit: one line too.
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOENT,
                errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG}


class _Parser(argparse.ArgumentParser):
    """An argument error is bad input like any other: one line, exit 2 (argparse would add its usage)."""

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
        return args.run(args) or 0
    except UserError as err:
        return _fail(str(err))
    except OSError as err:
        if err.errno not in _PATH_ERRNOS or err.filename is None:
            raise
        return _fail(f"{err.filename}: {err.strerror}")
    except MemoryError:
        return _fail("out of memory: ask for fewer seeds, frames or a smaller batch")
    except KeyboardInterrupt:
        print("skipdit: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    line = " ".join(message.split())  # one line, whatever the message held
    print(f"skipdit: error: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
