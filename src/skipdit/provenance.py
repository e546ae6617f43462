"""What made a result: library versions and the device (:func:`provenance`), and a fingerprint of the settings
that determine a set of samples (:func:`fingerprint`, :func:`differences`).

``sample-many`` writes the fingerprint into its output folder before the first sample and compares it on every
rerun, so a folder never mixes samples made with different settings; ``run.json`` / ``summary.json`` carry
:func:`provenance` so a number can be traced to the code and hardware that produced it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path

FINGERPRINT_VERSION = 1  # bump when the meaning of a key changes, so old folders are refused, not misread
_PACKAGES = ("skipdit", "torch", "diffusers", "transformers", "numpy")


def versions() -> dict[str, str | None]:
    """The installed versions of skipdit and the libraries that shape its numbers (``None``: not installed),
    plus Python and the platform."""
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    if out["skipdit"] is None:  # run from a source tree without installing
        from . import __version__

        out["skipdit"] = __version__
    out["python"] = platform.python_version()
    out["platform"] = platform.platform()
    return out


def device_name(device) -> str:
    """``"cpu"`` or the accelerator's marketing name with its index, e.g. ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def provenance(device="cpu") -> dict:
    """``{"versions": versions(), "device": device_name(device)}``: one JSON-ready dict for run records."""
    return {"versions": versions(), "device": device_name(device)}


def file_digest(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file's bytes, read in 1 MiB chunks (checkpoints are GBs), or of a folder's files
    (their relative paths and bytes, in name order; hidden files skipped), e.g. a diffusers model folder."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    for f in files:
        if f is not path:
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def identity(source: str | os.PathLike | None) -> str | None:
    """A model / VAE / encoder as a fingerprint value: the content digest of a local file or folder, else the
    name itself (a built-in model such as ``digits-skip``; ``None`` stays ``None``)."""
    if source is None:
        return None
    path = Path(source)
    return file_digest(path) if path.exists() else str(source)


def _plain(value):
    """JSON-ready values, so a fingerprint read back from disk compares equal to a fresh one."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def fingerprint(settings: Mapping) -> dict:
    """The settings as a JSON-ready dict with a format version. Values must be plain data (numbers, strings,
    lists, dicts, ``None``); anything else is stored as ``str()``."""
    return {"fingerprint_version": FINGERPRINT_VERSION, **_plain(dict(settings))}


def _short(value, limit: int = 40) -> str:
    text = "none" if value is None else value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def differences(old: Mapping, new: Mapping) -> list[str]:
    """``"key old -> new"`` for each key whose value differs (a key missing on one side counts as ``None``),
    in key order; empty when the fingerprints agree."""
    old, new = _plain(dict(old)), _plain(dict(new))
    return [f"{key} {_short(old.get(key))} -> {_short(new.get(key))}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
