"""Checks shared by the subcommands, run before any model loads or any sample is drawn.

Numbers a user types are checked where argparse reads them (:func:`positive_int`, :func:`finite_float` ...), so
``--steps 0`` fails in the parser instead of silently meaning "the default". Paths are checked before work starts
(:func:`check_out_dir`, :func:`check_out_file`), so a run never spends minutes sampling and then fails to write.
Seed lists are counted before they are expanded (``io.parse_int_list`` with ``limit=MAX_SEEDS``), so
``--seeds 0-999999999`` is refused instead of filling the memory.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from ..errors import UserError

# One `skipdit sample` / `bench` run keeps every sample in memory (for the grid, PSNR and the report); far more
# seeds belong in `skipdit sample-many`, which streams them to disk.
MAX_SEEDS = 10_000


# -- argparse types: a bad number is an argument error, reported with the option's name -------------------
def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):  # NaN or inf would run and give all-black images or meaningless numbers
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _at_least(parse, minimum, what: str):
    """An argparse type: ``parse(text)``, refused below ``minimum`` with "must be <what>"."""

    def check(text: str):
        value = parse(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return check


positive_int = _at_least(_int, 1, "a positive integer")
nonnegative_int = _at_least(_int, 0, "an integer >= 0")
nonnegative_float = _at_least(finite_float, 0, ">= 0")
guidance_scale = _at_least(finite_float, 1, ">= 1 (1 disables guidance)")


# -- numbers of options shared with commands whose parsers this module does not build ----------------------
def check_number(value, option: str, *, minimum: float | None = None, integer: bool = False) -> None:
    """``value`` of ``option`` is None (the default) or a finite number >= ``minimum``; else one line."""
    if value is None:
        return
    if not math.isfinite(value) or (integer and int(value) != value):
        kind = "an integer" if integer else "a finite number"
        raise UserError(f"{option} must be {kind}, got {value}")
    if minimum is not None and value < minimum:
        raise UserError(f"{option} must be >= {minimum:g}, got {value}")


# -- paths ---------------------------------------------------------------------------------------------------
def check_out_dir(path, option: str = "--out") -> Path:
    """``path`` is a folder that exists or can be made, and can be written; nothing is created here."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file, not a folder")
    _check_parent_writable(path, option)
    return path


def check_out_file(path, option: str) -> Path:
    """``path`` is a file that can be written: not a folder, in a folder that exists or can be made."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder, not a file")
    _check_parent_writable(path.parent, option, leaf=path)
    return path


def _check_parent_writable(path: Path, option: str, leaf: Path | None = None) -> None:
    """The nearest existing folder at or above ``path`` is a folder and can be written (mkdir -p works)."""
    leaf = path if leaf is None else leaf
    existing = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    if not existing.is_dir():
        raise UserError(f"{option} {leaf}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option} {leaf}: the folder {existing} is not writable")


def check_in_file(path, option: str) -> Path:
    """``path`` exists and is a file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{option} {path} not found")
    if not path.is_file():
        raise UserError(f"{option} {path} is a folder, not a file")
    return path
