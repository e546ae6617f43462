"""Reading, recognising, loading and writing DiT / Skip-DiT checkpoints.

Accepted inputs (reference §A.2, peers §1.4):

* official DiT ``.pt`` files: a raw state dict (``DiT-XL-2-256x256.pt``) or a training checkpoint
  ``{"model", "ema", "opt", "args"}`` (the EMA weights are preferred);
* official Skip-DiT ``.pt`` files (same layout plus ``skip_norms.*`` / ``skip_linears.*``);
* diffusers ``DiTTransformer2DModel`` state dicts (``.safetensors`` / ``.bin``), converted on load;
* our safetensors, which carry the model config in their metadata.

A state dict is matched against a model key by key: every key must be consumed and every shape must
agree, otherwise the error lists the missing, unexpected and mis-shaped keys. The only tolerated gap
is a vanilla checkpoint loaded into a Skip-DiT when ``skip_init`` names how to initialise the long
skips; those keys are then reported as new.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..assets import resolve_weights
from ..models.dit import DiT, DiTConfig
from ..models.presets import DIT_SIZES, preset_config
from ..models.skip import init_long_skips_

log = logging.getLogger(__name__)
# Official training checkpoints pickle their argparse Namespace under "args"; allow exactly that class.
torch.serialization.add_safe_globals([argparse.Namespace])

CONFIG_KEY = "skipdit_config"
ARCH_KEY = "skipdit_arch"
SKIP_PREFIXES = ("skip_norms.", "skip_linears.")


@dataclass
class LoadReport:
    """What a load did. ``new`` are long-skip keys initialised because the checkpoint lacked them."""

    source_format: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, expected, found
    new: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe_problems(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"missing {len(self.missing)} keys: {_few(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)} keys: {_few(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{k} (model {tuple(a)}, checkpoint {tuple(b)})" for k, a, b in self.mismatched]
            parts.append(f"mis-shaped {len(shapes)} keys: {_few(shapes)}")
        return "; ".join(parts)


def _few(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


# -- reading ------------------------------------------------------------------------------------------
def read_checkpoint(
    path: str | os.PathLike, prefer: tuple[str, ...] = ("ema", "model", "state_dict")
) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The state dict in a file and, for our safetensors, the config stored in its metadata. Of a
    training checkpoint's entries, the first of ``prefer`` that is present is taken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            state = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"cannot read {path}: not a valid safetensors file ({err})") from None
        config = json.loads(metadata[CONFIG_KEY]) if CONFIG_KEY in metadata else None
        return state, config
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:
        raise ValueError(f"cannot read {path}: not a PyTorch checkpoint of tensors ({err})") from None
    return unwrap_state_dict(obj, path, prefer), None


def unwrap_state_dict(obj, path, prefer: tuple[str, ...] = ("ema", "model", "state_dict")) -> dict[str, torch.Tensor]:
    """A raw state dict, or the first entry of ``prefer`` found in a training checkpoint."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in prefer:
            if isinstance(obj.get(key), dict):
                return unwrap_state_dict(obj[key], path, prefer)
    raise ValueError(f"{path}: no state dict found (expected tensors, or an 'ema' / 'model' entry)")


def detect_format(state: dict[str, torch.Tensor]) -> str:
    """``"dit"`` (official DiT / Skip-DiT naming, also ours) or ``"diffusers-dit"``."""
    if "x_embedder.proj.weight" in state:
        return "dit"
    if "pos_embed.proj.weight" in state and "transformer_blocks.0.norm1.linear.weight" in state:
        return "diffusers-dit"
    raise ValueError(
        "unrecognised checkpoint: not a DiT / Skip-DiT state dict (first keys: " + _few(sorted(state), 4) + ")"
    )


def to_dit_layout(state: dict[str, torch.Tensor], input_size: int | None = None):
    """(state dict in the official DiT layout, source format name)."""
    fmt = detect_format(state)
    if fmt == "diffusers-dit":
        from .diffusers import from_diffusers_dit

        state = from_diffusers_dit(state, input_size)
    return state, fmt


# -- config inference -----------------------------------------------------------------------------
def infer_geometry(state: dict[str, torch.Tensor]) -> dict:
    """Config fields that the tensor shapes determine (everything but the head count)."""
    try:
        hidden, in_channels, patch, _ = state["x_embedder.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        mlp_hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        out_channels = state["final_layer.linear.weight"].shape[0] // (patch * patch)
        table_rows = state["y_embedder.embedding_table.weight"].shape[0]
        num_tokens = state["pos_embed"].shape[1]
    except (KeyError, ValueError) as err:
        raise ValueError(f"incomplete DiT state dict: cannot read its shape ({err})") from None
    grid = math.isqrt(num_tokens)
    return dict(
        hidden_size=hidden, in_channels=in_channels, patch_size=patch, depth=depth,
        mlp_ratio=mlp_hidden / hidden, learn_sigma=out_channels == 2 * in_channels,
        num_classes=table_rows - 1, input_size=grid * patch,
        long_skip=any(k.startswith(SKIP_PREFIXES) for k in state),
    )


def infer_config(state: dict[str, torch.Tensor], **overrides) -> DiTConfig:
    """A config for an official-layout state dict. The head count is not in the shapes; it is taken from
    the DiT size with the same width (S 6, B 12, L 16, XL 16) unless ``num_heads`` is given."""
    fields = infer_geometry(state)
    if "num_heads" not in overrides:
        heads = {h: n for h, _, n in DIT_SIZES.values()}.get(fields["hidden_size"])
        if heads is None:
            raise ValueError(
                f"cannot infer the head count for hidden size {fields['hidden_size']}; pass a preset or num_heads"
            )
        fields["num_heads"] = heads
    fields.update(overrides)
    return DiTConfig(**fields)


# -- loading --------------------------------------------------------------------------------------------
def load_state_into(
    model: DiT, state: dict[str, torch.Tensor], *, skip_init: str | None = None, source_format: str = "dit"
) -> LoadReport:
    """Copy ``state`` into ``model`` strictly; see the module docstring for the one tolerated gap."""
    expected = model.state_dict()
    report = LoadReport(source_format)
    report.missing = [k for k in expected if k not in state]
    report.unexpected = [k for k in state if k not in expected]
    report.mismatched = [
        (k, tuple(expected[k].shape), tuple(v.shape)) for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    vanilla_into_skip = (
        model.has_long_skips and report.missing and all(k.startswith(SKIP_PREFIXES) for k in report.missing)
        and not any(k.startswith(SKIP_PREFIXES) for k in state)
    )
    if vanilla_into_skip and not (report.unexpected or report.mismatched):
        if skip_init is None:
            raise ValueError(
                "this is a vanilla DiT checkpoint and the model has long skips: pass skip_init "
                "(--skip-init torch_default|xavier|zero) to initialise them as new modules"
            )
        report.new, report.missing = report.missing, []
    if not report.ok:
        raise ValueError("checkpoint does not match the model: " + report.describe_problems())
    with torch.no_grad():
        for key, value in state.items():
            expected[key].copy_(value)
    if report.new:
        init_long_skips_(model.skip_norms, model.skip_linears, skip_init)
        log.warning("initialised %d new long-skip tensors with %r", len(report.new), skip_init)
    return report


def load(
    path: str | os.PathLike, preset: str | None = None, *, skip_init: str | None = None,
    return_report: bool = False, **overrides,
):
    """A DiT / Skip-DiT with the weights of ``path`` (a file, or a built-in name such as
    ``"digits/Skip-DiT"``), in eval mode.

    Without ``preset`` the architecture comes from the file (our metadata, else the tensor shapes).
    With ``preset`` the architecture is the preset's and only the input size, channels and classes come
    from the file, so a checkpoint of another architecture is rejected. ``skip_init`` lets a vanilla
    checkpoint initialise a Skip-DiT.
    """
    state, stored = read_checkpoint(resolve_weights(path))
    state, fmt = to_dit_layout(state, overrides.get("input_size"))
    if preset is not None:
        geometry = infer_geometry(state)
        keep = ("input_size", "in_channels", "learn_sigma", "num_classes")
        config = preset_config(preset, **{**{k: geometry[k] for k in keep}, **overrides})
    elif stored is not None:
        config = DiTConfig(**stored).replace(**overrides)
    else:
        config = infer_config(state, **overrides)
    model = DiT(config)
    report = load_state_into(model, state, skip_init=skip_init, source_format=fmt)
    model.eval()
    return (model, report) if return_report else model


# -- writing ------------------------------------------------------------------------------------------
def save(model: DiT, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None) -> Path:
    """Write weights and config as safetensors, atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"output must end in .safetensors, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {CONFIG_KEY: json.dumps(asdict(model.config)), ARCH_KEY: "dit", **(extra_metadata or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
