"""Training checkpoints in a run folder: ``RUN/checkpoints/ckpt-0001000.pt``.

A checkpoint is ``{"model", "ema", "opt", "step", "config"}``, the official DiT layout plus the step
and our config, so ``skipdit.load`` reads its EMA weights like any official file. Files are written to a
temporary name, flushed to disk and renamed, so a kill never leaves a half-written checkpoint. When
the newest file is unreadable anyway (a disk that lied, a copy cut short), resuming says so and falls
back to the one before it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

import torch

from ..errors import UserError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"ckpt-(\d+)\.pt")
REQUIRED_KEYS = ("model", "ema", "opt", "step", "config")


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt-{step:07d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file in the run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name))]
    return sorted(found)


def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_training_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint, checked for completeness. Raises ``ValueError`` if it is corrupt."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, ...: torch raises several types
        raise UserError(f"{path.name} is unreadable ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise UserError(f"{path.name} is not a skipdit training checkpoint (missing {', '.join(missing)})")
    return payload


def latest_checkpoint(run_dir: str | os.PathLike) -> tuple[dict, Path] | None:
    """The newest readable checkpoint of a run, or None for a run with no checkpoints.

    Unreadable ones are reported and skipped. If there are checkpoints but none can be read, that is an
    error: starting afresh would silently throw the run away.
    """
    found = list_checkpoints(run_dir)
    problems = []
    for _, path in reversed(found):
        try:
            payload = read_training_checkpoint(path)
        except ValueError as err:
            problems.append(str(err))
            log.warning("checkpoint %s; falling back to an older one", err)
            continue
        return payload, path
    if problems:
        raise UserError(f"no readable checkpoint in {Path(run_dir) / CHECKPOINT_DIR}: {'; '.join(problems)}. "
                         "Move the files away to start the run afresh.")
    return None


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int, snapshot_every: int = 0) -> list[Path]:
    """Keep the ``keep_last`` newest checkpoints and the snapshots (steps that are multiples of
    ``snapshot_every``); delete the rest. Returns the deleted paths."""
    found = list_checkpoints(run_dir)
    doomed = [p for s, p in found[: max(0, len(found) - keep_last)] if not (snapshot_every and s % snapshot_every == 0)]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed

def load_run(run_dir: str | os.PathLike, step: int | None = None, weights: str = "ema"):
    """``(model, payload)``: a run's network with its EMA (or raw) weights at ``step`` (default: the
    newest readable checkpoint), in eval mode."""
    from ..models import config_from_dict, model_from_config

    if weights not in ("ema", "model"):
        raise UserError(f"weights must be ema or model, got {weights!r}")
    if not Path(run_dir).is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    if step is None:
        found = latest_checkpoint(run_dir)
        if found is None:
            raise UserError(f"no checkpoints in {Path(run_dir) / CHECKPOINT_DIR}")
        payload = found[0]
    else:
        path = checkpoint_path(run_dir, step)
        if not path.is_file():
            kept = ", ".join(str(s) for s, _ in list_checkpoints(run_dir)) or "none"
            raise UserError(f"no checkpoint for step {step} in {run_dir} (kept steps: {kept})")
        payload = read_training_checkpoint(path)
    model = model_from_config(config_from_dict(payload.get("arch", "dit"), payload["model_config"]))
    model.load_state_dict(payload[weights])
    return model.eval(), payload


def export(
    run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, weights: str = "ema",
    step: int | None = None,
) -> Path:
    """Write a run's weights (EMA by default) with their config as safetensors, for ``skipdit.load``.
    The default output is ``RUN_DIR/export/<weights>-<step>.safetensors``."""
    from ..convert import save
    from ..convert.checkpoint import TEXT_KEY

    model, payload = load_run(run_dir, step, weights)
    step = int(payload["step"])
    out = Path(out) if out is not None else Path(run_dir) / "export" / f"{weights}-{step:07d}.safetensors"
    meta = {"skipdit_train_step": str(step), "skipdit_weights": weights, "skipdit_stage": payload["config"]["stage"]}
    if getattr(model, "conditioning", None) == "text":  # sampling must encode prompts the same way
        text = {"name": payload["config"]["text_encoder"], "max_length": payload["config"]["text_max_length"]}
        meta[TEXT_KEY] = json.dumps(text)
    return save(model, out, extra_metadata=meta)
