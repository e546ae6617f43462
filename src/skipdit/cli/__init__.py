"""The ``skipdit`` command. Each subcommand parses its arguments and calls one library function.

Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

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
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, ImportError, NotADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skipdit", description="Skip-DiT: diffusion transformers with long skips, and Skip-Cache."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="skipdit: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"skipdit: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("skipdit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
