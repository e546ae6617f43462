"""Training checkpoints in a run folder: ``RUN/checkpoints/ckpt-0001000.pt``.

A checkpoint is ``{"model", "ema", "opt", "step", "config", "model_config", "arch", "checksum"}``, the
official DiT layout plus the step, our configs and a checksum, so ``skipdit.load`` reads its EMA weights like
any official file.

- **Checksum.** ``checksum`` is a SHA-256 over everything else in the file: every tensor's dtype, shape and
  bytes and every other value, in the payload's order (:func:`payload_digest`). Resuming and ``export``
  recompute it, so flipped bytes are caught instead of trained on. Checkpoints written before skipdit
  stored checksums still resume and export, unverified, with a one-time warning.
- **Writing** goes to a temporary file in the same folder, which is fsynced, read back and checked against
  the checksum, then renamed; a kill never leaves a half-written checkpoint under a checkpoint's name. The
  temporary files of writes that a kill cut short are removed when the run resumes
  (:func:`remove_stale_temporaries`).
- **Reading.** An empty, truncated, garbled or corrupt newest checkpoint is reported and the one before it
  is used. If there are checkpoints but none is good, that is an error: starting afresh would silently
  throw the run away.
- **Rotation** (:func:`prune_checkpoints`) runs only after a new checkpoint verified, and never deletes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..convert.files import read_torch_file
from ..errors import UserError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"ckpt-(\d+)\.pt")
_TEMPORARY = re.compile(r"ckpt-\d+\.pt\..+\.tmp")  # save_checkpoint's mkstemp names
REQUIRED_KEYS = ("model", "ema", "opt", "step", "config")
_MAPPINGS = ("model", "ema", "opt", "config", "model_config")  # entries that must be dicts
CHECKSUM_KEY = "checksum"
CHECKSUM_ALGORITHM = "sha256/skipdit-payload-v1"
_warned_unverified = False


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt-{step:07d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file in the run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name))]
    return sorted(found)


# -- the checksum ----------------------------------------------------------------------------------------------
def payload_digest(payload: dict) -> str:
    """SHA-256 (hex) of a checkpoint payload without its ``checksum`` entry.

    The payload is walked in its own order (``torch.load`` returns dicts in the order they were saved). Each
    non-tensor value contributes its type and ``repr``; each tensor its dtype, shape and the SHA-256 of its
    bytes. The per-tensor hashes run in threads (hashlib releases the GIL), so a DiT-XL checkpoint of ~11 GB
    hashes at several GB/s; the result does not depend on the thread count.
    """
    stream: list[bytes | torch.Tensor] = []
    _flatten({k: v for k, v in payload.items() if k != CHECKSUM_KEY}, stream)
    tensors = [x for x in stream if isinstance(x, torch.Tensor)]
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        digests = iter(pool.map(_tensor_digest, tensors))
    h = hashlib.sha256()
    for item in stream:
        h.update(next(digests) if isinstance(item, torch.Tensor) else item)
    return h.hexdigest()


def _flatten(obj, out: list) -> None:
    if isinstance(obj, torch.Tensor):
        out.append(f"T{obj.dtype}{tuple(obj.shape)}:".encode())
        out.append(obj)
    elif isinstance(obj, dict):
        out.append(f"D{len(obj)}:".encode())
        for key, value in obj.items():
            _flatten(key, out)
            _flatten(value, out)
    elif isinstance(obj, (list, tuple)):
        out.append(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for value in obj:
            _flatten(value, out)
    else:  # str, int, float, bool, None: repr is exact (floats round-trip) and says the type
        text = f"{type(obj).__name__}={obj!r}".encode("utf-8", "surrogatepass")
        out.append(f"V{len(text)}:".encode() + text)


def _tensor_digest(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().reshape(-1)
    if flat.device.type != "cpu":
        flat = flat.cpu()
    data = flat.contiguous().view(torch.uint8).numpy()
    return hashlib.sha256(memoryview(data)).digest()


def _verify(payload: dict, name: str) -> None:
    """Raise UserError if the payload's checksum is malformed or does not match; warn once if it has none."""
    global _warned_unverified
    record = payload.get(CHECKSUM_KEY)
    if record is None:
        if not _warned_unverified:
            _warned_unverified = True
            log.warning("%s has no checksum (written by an older skipdit): using it unverified; the checkpoints "
                        "written from now on carry one", name)
        return
    if not (isinstance(record, dict) and isinstance(record.get("digest"), str)
            and record.get("algorithm") == CHECKSUM_ALGORITHM):
        raise UserError(f"{name} is corrupt: its checksum entry is garbled")
    if payload_digest(payload) != record["digest"]:
        raise UserError(f"{name} is corrupt: its contents do not match the checksum it was saved with "
                        "(flipped bytes on disk or in a copy)")


# -- writing -----------------------------------------------------------------------------------------------------
def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """Write ``payload`` with its checksum to ``path``: a temporary file in the same folder, fsynced, read back
    and verified, then atomically renamed (and the folder fsynced). Returns ``path``, which is then known good.
    Nothing is left behind if this raises (or is interrupted); the previous file of that name stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, CHECKSUM_KEY: {"algorithm": CHECKSUM_ALGORITHM, "digest": payload_digest(payload)}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            _verify(read_torch_file(tmp), path.name)
        except UserError as err:
            raise UserError(f"checkpoint {path} did not read back as written ({err}); the disk may be "
                            "failing. The previous checkpoints are kept") from None
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX); a file system that cannot fsync a folder is left to its own devices."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Temporary files of checkpoint writes that a kill cut short."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _TEMPORARY.fullmatch(p.name) and p.is_file())


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete :func:`stale_temporaries` (with a warning saying how much space came back). Only call this from
    the one process that writes the run's checkpoints, before it writes any."""
    stale = stale_temporaries(run_dir)
    total = 0
    for path in stale:
        try:
            total += path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            pass
    if stale:
        log.warning("removed %d temporary file%s (%s) left in %s by a checkpoint write that was cut short",
                    len(stale), "" if len(stale) == 1 else "s", _size(total), Path(run_dir) / CHECKPOINT_DIR)
    return stale


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"


# -- reading -----------------------------------------------------------------------------------------------------
def read_training_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint, checked for completeness and against its checksum. Raises ``UserError`` (a
    ``ValueError``) with one sentence if it is empty, unreadable, not ours or corrupt."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise UserError(f"{path.name} is unreadable ({err.strerror})") from None
    if path.is_file() and size == 0:
        raise UserError(f"{path.name} is empty (0 bytes: a write or copy that was cut short)")
    if path.is_dir():
        raise UserError(f"{path.name} is unreadable: a folder, not a checkpoint file")
    try:
        payload = read_torch_file(path)
    except UserError as err:  # "<path> is <what it is instead>": said here by the file's name, like every problem
        reason = str(err).removeprefix(f"{path} is ")
        raise UserError(f"{path.name} is unreadable: {reason}") from None
    if not isinstance(payload, dict):
        raise UserError(f"{path.name} is not a skipdit training checkpoint (it holds a {type(payload).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise UserError(f"{path.name} is not a skipdit training checkpoint (missing {', '.join(missing)})")
    _verify(payload, path.name)
    bad = [k for k in _MAPPINGS if not isinstance(payload.get(k), dict)]
    if not isinstance(payload["step"], int) or isinstance(payload["step"], bool) or payload["step"] < 0:
        bad.append("step")
    if bad:
        raise UserError(f"{path.name} is not a complete skipdit training checkpoint (bad or missing "
                        f"{', '.join(bad)})")
    return payload


def _describe(err: BaseException) -> str:
    """An exception as one short phrase: its type and the first sentence of its message."""
    first = (str(err).strip().splitlines() or [""])[0].strip()
    first = first.split(". ")[0].rstrip(".")  # torch's weights-only errors go on with advice that does not apply
    if len(first) > 160:
        first = first[:157] + "..."
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def latest_checkpoint(run_dir: str | os.PathLike) -> tuple[dict, Path] | None:
    """The newest good checkpoint of a run, or None for a run with no checkpoints.

    Bad ones (empty, unreadable, corrupt) are skipped and reported in one warning once a good one is found.
    If there are checkpoints but none is good, that is an error that names every problem.
    """
    problems = []
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            payload = read_training_checkpoint(path)
        except UserError as err:
            problems.append(str(err))
            continue
        if problems:
            log.warning("checkpoint %s; falling back to %s", "; ".join(problems), path.name)
        return payload, path
    if problems:
        raise UserError(f"no readable checkpoint in {Path(run_dir) / CHECKPOINT_DIR}: {'; '.join(problems)}. "
                        "Move the files away to start the run afresh.")
    return None


def prune_checkpoints(
    run_dir: str | os.PathLike, keep_last: int, snapshot_every: int = 0, verified: str | os.PathLike | None = None,
) -> list[Path]:
    """Keep the ``keep_last`` newest checkpoints, the snapshots (steps that are multiples of ``snapshot_every``)
    and ``verified`` (the checkpoint just written and read back: the newest known-good one, even when a newer,
    corrupt file sits beside it); delete the rest. Returns the deleted paths."""
    found = list_checkpoints(run_dir)
    keep = Path(verified).name if verified is not None else None
    doomed = [p for s, p in found[: max(0, len(found) - keep_last)]
              if not (snapshot_every and s % snapshot_every == 0) and p.name != keep]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def load_run(run_dir: str | os.PathLike, step: int | None = None, weights: str = "ema"):
    """``(model, payload)``: a run's network with its EMA (or raw) weights at ``step`` (default: the
    newest good checkpoint), in eval mode."""
    from ..models import config_from_dict, model_from_config

    if weights not in ("ema", "model"):
        raise UserError(f"weights must be ema or model, got {weights!r}")
    if not Path(run_dir).is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    if step is None:
        found = latest_checkpoint(run_dir)
        if found is None:
            raise UserError(f"no checkpoints in {Path(run_dir) / CHECKPOINT_DIR}")
        payload, path = found
    else:
        path = checkpoint_path(run_dir, step)
        if not path.is_file():
            kept = ", ".join(str(s) for s, _ in list_checkpoints(run_dir)) or "none"
            raise UserError(f"no checkpoint for step {step} in {run_dir} (kept steps: {kept})")
        payload = read_training_checkpoint(path)
    try:
        model = model_from_config(config_from_dict(payload.get("arch", "dit"), payload["model_config"]))
        model.load_state_dict(payload[weights])
    except (TypeError, RuntimeError) as err:  # unknown fields, missing or misshapen tensors
        raise UserError(f"{path.name}: its {weights} weights do not fit its model_config ({_describe(err)})") from None
    return model.eval(), payload


def export(
    run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, weights: str = "ema",
    step: int | None = None, storage: str = "fp32",
) -> Path:
    """Write a run's weights (EMA by default) with their config as safetensors, for ``skipdit.load``.
    The default output is ``RUN_DIR/export/<weights>-<step>.safetensors``. The checkpoint's checksum is
    verified first; a corrupt newest checkpoint is reported and the one before it exported. ``storage``:
    ``"bf16"`` / ``"fp16"`` halves the file (:func:`skipdit.convert.save`)."""
    from ..convert import save
    from ..convert.checkpoint import STORAGE_DTYPES, TEXT_KEY

    if out is not None and Path(out).suffix != ".safetensors":  # before minutes of reading a large checkpoint
        raise UserError(f"output must end in .safetensors, got {Path(out).name}")
    if storage not in STORAGE_DTYPES:
        raise UserError(f"unknown storage dtype {storage!r}; valid: {', '.join(STORAGE_DTYPES)}")
    model, payload = load_run(run_dir, step, weights)
    step = int(payload["step"])
    out = Path(out) if out is not None else Path(run_dir) / "export" / f"{weights}-{step:07d}.safetensors"
    config = payload["config"]
    meta = {"skipdit_train_step": str(step), "skipdit_weights": weights,
            "skipdit_stage": str(config.get("stage", "full"))}
    if model.conditioning == "text":  # sampling must encode prompts the same way
        text = {"name": config.get("text_encoder", "minilm"), "max_length": config.get("text_max_length")}
        meta[TEXT_KEY] = json.dumps(text)
    return save(model, out, extra_metadata=meta, storage=storage)
