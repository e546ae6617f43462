"""Reading the files a user points skipdit at: PyTorch ``.pt`` / ``.bin``, safetensors and JSON configs.

Each reader turns a file that is not what it should be (a text file, a zero-byte file, a truncated zip, garbage
bytes, a pickle that safe loading refuses, malformed JSON) into one :class:`UserError` sentence that names the
file and what it is not. torch's own messages for these cases run to several lines and, for a refused pickle,
suggest ``weights_only=False``, which would execute arbitrary code from the file: we never repeat them.
Errors of the operating system (a missing or unreadable file) pass through as ``OSError`` with the file name,
which the CLI prints as one line.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import UserError

# What torch.load raises for a malformed file (it has no error type of its own): the zip reader raises
# RuntimeError, the unpickler UnpicklingError / EOFError / KeyError (an unknown opcode) / IndexError / ValueError,
# the legacy reader struct.error. AttributeError and TypeError are left out: they would be bugs.
_TORCH_FORMAT_ERRORS = (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, IndexError, ValueError,
                        struct.error, zipfile.BadZipFile)
_ZIP_MAGIC = b"PK\x03\x04"
_SNIFF_BYTES = 512


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(_SNIFF_BYTES)


def _is_text(head: bytes) -> bool:
    """True for bytes that read as UTF-8 text without control characters other than whitespace."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # the sniffed block may end inside a multi-byte character
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return bool(text) and all(c.isprintable() or c in "\t\r\n\f\v" for c in text)


def what_it_is(path: Path, head: bytes | None = None) -> str | None:
    """A short description of a file that is plainly not a checkpoint ("empty (0 bytes)", "a text file"), or
    None when its bytes could be one. ``head`` is the file's first bytes, if already read."""
    head = _head(path) if head is None else head
    if not head:
        return "empty (0 bytes)"
    if _is_text(head):
        return "a text file"
    return None


def read_torch_file(path: str | Path):
    """``torch.load(path, weights_only=True)`` on the CPU, memory-mapped when the file is a zip checkpoint;
    anything unreadable is one :class:`UserError` naming the file."""
    path = Path(path)
    head = _head(path)
    plain = what_it_is(path, head)
    if plain is not None:
        raise UserError(f"{path} is {plain}, not a PyTorch checkpoint")
    is_zip = zipfile.is_zipfile(path)
    if head.startswith(_ZIP_MAGIC) and not is_zip:  # torch.save writes a zip; its directory is at the end
        raise UserError(f"{path} is a truncated or damaged PyTorch checkpoint (its zip archive has no directory)")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": not the user's concern
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as err:
        # the safe unpickler names a refused class "GLOBAL module.name"; any other refusal is a bad opcode
        refused = re.search(r"GLOBAL (\S+)", str(err))
        if refused:
            raise UserError(f"{path} holds Python objects other than tensors, dicts, lists, numbers and strings "
                            f"({refused[1]}); skipdit reads only tensor checkpoints") from None
        if is_zip:
            raise UserError(f"{path} is a damaged PyTorch checkpoint (its pickle data cannot be read)") from None
        raise UserError(f"{path} is not a PyTorch checkpoint (its pickle data is damaged or not torch's)") \
            from None
    except _TORCH_FORMAT_ERRORS:
        if is_zip:
            raise UserError(f"{path} is a damaged PyTorch checkpoint (its zip archive cannot be read)") from None
        raise UserError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a complete pickle)") \
            from None


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a truncated or garbage file is one :class:`UserError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    metadata = read_safetensors_metadata(path)
    try:
        return load_file(str(path)), metadata
    except SafetensorError as err:  # its text is one line, e.g. "incomplete metadata, file not fully covered"
        reason = str(err).removeprefix("Error while deserializing header: ")
        raise UserError(f"{path} is not a valid safetensors file (truncated or damaged: {reason})") from None


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """Only the metadata of a safetensors file (no tensors are read)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    plain = what_it_is(path)
    if plain is not None:
        raise UserError(f"{path} is {plain}, not a safetensors file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except SafetensorError as err:
        reason = str(err).removeprefix("Error while deserializing header: ")
        raise UserError(f"{path} is not a valid safetensors file (truncated or damaged: {reason})") from None


def read_json(path: str | Path, *, object_only: bool = True):
    """A JSON object (with ``object_only``, else any JSON value) from a file; malformed JSON or another JSON type
    is one :class:`UserError` naming the file."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a JSON file (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if object_only and not isinstance(value, dict):
        raise UserError(f"{path} must hold a JSON object, found a {type(value).__name__}")
    return value


def parse_json_text(text: str, where: str):
    """JSON stored inside another file (safetensors metadata): malformed text is one :class:`UserError`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{where} is not valid JSON ({err.msg})") from None


def check_json_files(folder: str | Path, depth: int = 1) -> None:
    """Parse every ``*.json`` in ``folder`` and, to ``depth`` levels, its subfolders (a pipeline's parts), so a
    malformed config or tokenizer file is reported by name before transformers or diffusers read it; their own
    errors do not always say which file was bad."""
    folder = Path(folder)
    for path in sorted(folder.glob("*.json")):
        if path.is_file():
            read_json(path, object_only=False)
    if depth > 0:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            check_json_files(sub, depth - 1)


def check_weight_files(folder: str | Path) -> None:
    """Check the header of every ``*.safetensors`` in ``folder`` (no tensors are read), so a truncated or
    damaged weight file of a text encoder or VAE is named before transformers or diffusers open it."""
    for path in sorted(Path(folder).glob("*.safetensors")):
        if path.is_file():
            read_safetensors_metadata(path)


def check_writable_place(path: Path) -> Path:
    """``path`` if its nearest existing folder is a folder that can be written (the missing ones are made on
    writing); a :class:`UserError` naming the obstacle otherwise."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot write {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: the folder {ancestor} is not writable")
    return path
