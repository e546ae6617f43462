"""Reading, recognising, loading and writing checkpoints of every model family.

Accepted inputs (reference §A.2-A.4, peers §1.4):

* official DiT / Skip-DiT ``.pt`` files: a raw state dict (``DiT-XL-2-256x256.pt``) or a training
  checkpoint ``{"model", "ema", "opt", "args"}`` (the EMA weights are preferred);
* official Latte / Latte-skip class-to-video ``.pt`` files (``{"ema"}``), same naming plus ``temp_embed``;
* official Latte-T2V-skip ``Latte-skip.pt`` (``{"model", "ema"}``) and diffusers
  ``LatteTransformer3DModel`` folders (``config.json`` + safetensors), in diffusers naming;
* diffusers ``DiTTransformer2DModel`` state dicts (``.safetensors`` / ``.bin``), converted on load;
* our safetensors, which carry the architecture and its config in their metadata.

A state dict is matched against a model key by key: every key must be consumed and every shape must
agree, otherwise the error lists the missing, unexpected and mis-shaped keys. Two gaps are tolerated:

* a vanilla checkpoint loaded into a model with long skips when ``skip_init`` names how to initialise
  them (the two-stage conversion, §D.1); those keys are then reported as new;
* the buffers named in :data:`IGNORED_KEYS`, which official code saves but no forward pass reads; they
  are dropped and reported as ignored. Any other unexpected key is an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..assets import resolve_weights
from ..errors import UserError
from ..io import atomic_write
from ..models.presets import ARCHS, arch_of, config_from_dict, model_from_config, preset_config
from ..models.skip import init_long_skips_
from .diffusers import (
    DIT_CLASSES,
    SKIPDIT_CLASS,
    SKIPLATTE_CLASS,
    read_diffusers_dit,
    read_skipdit_folder,
    read_skiplatte_folder,
)
from .files import check_writable_place, parse_json_text, read_safetensors, read_safetensors_metadata, read_torch_file
from .latte import (
    heads_for,
    is_diffusers_folder,
    latte_geometry,
    latte_t2v_geometry,
    read_diffusers_latte,
    read_model_config,
)

log = logging.getLogger(__name__)
# Official training checkpoints pickle their argparse Namespace under "args"; allow exactly that class.
torch.serialization.add_safe_globals([argparse.Namespace])

CONFIG_KEY = "skipdit_config"
ARCH_KEY = "skipdit_arch"
TEXT_KEY = "skipdit_text_encoder"  # text models: the encoder spec they were trained with (skipdit.text)
SKIP_PREFIXES = ("skip_norms.", "skip_linears.")


@dataclass(frozen=True)
class IgnoredKey:
    """A tensor that checkpoints of some code carry and no forward pass reads. ``fits(tensor, expected)`` says
    whether a found tensor is that buffer (its shape against the model's state dict ``expected``); one that
    does not fit stays an unexpected key."""

    why: str
    fits: Callable[[torch.Tensor, dict[str, torch.Tensor]], bool]


def _caption_null_embedding(tensor: torch.Tensor, expected: dict[str, torch.Tensor]) -> bool:
    # diffusers 0.24 CaptionProjection(in_features, hidden_size, num_tokens=120) registers
    # y_embedding = randn(num_tokens, in_features) / in_features**0.5: 2-D, as wide as the caption features.
    # The row count is not checked (num_tokens is a constructor argument; 120 in Latte-T2V and PixArt-alpha).
    projection = expected.get("caption_projection.linear_1.weight")
    return projection is not None and tensor.dim() == 2 and tensor.shape[1] == projection.shape[1]


# Persistent buffers that official or older-diffusers checkpoints hold but that nothing reads. The official
# Latte-T2V code pins diffusers 0.24.0, whose CaptionProjection keeps PixArt's null-caption embedding as a
# persistent buffer; newer diffusers (PixArtAlphaTextProjection) dropped it, and so does our model.
IGNORED_KEYS: dict[str, IgnoredKey] = {
    "caption_projection.y_embedding": IgnoredKey(
        "diffusers 0.24 CaptionProjection buffer (PixArt's null-caption embedding), unused in forward",
        _caption_null_embedding),
}


@dataclass
class LoadReport:
    """What a load did. ``new`` are long-skip keys initialised because the checkpoint lacked them;
    ``ignored`` are ``(key, why)`` of known unused buffers (:data:`IGNORED_KEYS`) that were dropped."""

    source_format: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, expected, found
    new: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)

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
) -> tuple[dict[str, torch.Tensor], tuple[str, dict] | None]:
    """The state dict in a file and, for our safetensors and ``skipdit train`` checkpoints, ``(arch, config
    fields)`` from the metadata. Of a training checkpoint's entries, the first of ``prefer`` present is taken."""
    path = Path(path)
    _check_checkpoint_file(path)
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors(path)
        stored = None
        if CONFIG_KEY in metadata:
            fields = parse_json_text(metadata[CONFIG_KEY], f"the {CONFIG_KEY} metadata of {path}")
            stored = _checked_config(metadata.get(ARCH_KEY, "dit"), fields, path)
        return state, stored
    obj = read_torch_file(path)
    stored = None
    if isinstance(obj, dict) and isinstance(obj.get("model_config"), dict):  # a `skipdit train` checkpoint
        stored = _checked_config(obj.get("arch", "dit"), obj["model_config"], path)
    return unwrap_state_dict(obj, path, prefer), stored


def _check_checkpoint_file(path: Path) -> None:
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a checkpoint file (a diffusers model folder holds config.json)")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")


def _checked_config(arch, fields, path) -> tuple[str, dict]:
    """``(arch, config fields)`` a file states, checked to name a known architecture and only its fields."""
    if not isinstance(arch, str) or arch not in ARCHS:
        raise UserError(f"{path} names an unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    if not isinstance(fields, dict):
        raise UserError(f"{path}: its stored model config is not a mapping of fields")
    known = {f.name for f in dataclasses.fields(ARCHS[arch][0])}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise UserError(f"{path}: its stored {arch} config has unknown fields {', '.join(map(str, unknown))}")
    return arch, fields


def unwrap_state_dict(obj, path, prefer: tuple[str, ...] = ("ema", "model", "state_dict")) -> dict[str, torch.Tensor]:
    """A raw state dict, or the first entry of ``prefer`` found in a training checkpoint."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in prefer:
            if isinstance(obj.get(key), dict):
                return unwrap_state_dict(obj[key], path, prefer)
    raise UserError(f"{path}: no state dict found (expected tensors, or an 'ema' / 'model' entry)")


# format name -> architecture
FORMATS = {"dit": "dit", "diffusers-dit": "dit", "diffusers-skipdit": "dit", "latte": "latte",
           "latte-t2v": "latte_t2v", "diffusers-latte": "latte_t2v", "diffusers-skiplatte": "latte_t2v"}


def detect_format(state: dict[str, torch.Tensor]) -> str:
    """``"dit"`` (official DiT / Skip-DiT naming, also ours), ``"latte"`` (official class-to-video Latte),
    ``"latte-t2v"`` (Latte-T2V in diffusers naming) or ``"diffusers-dit"``."""
    if "x_embedder.proj.weight" in state:
        return "latte" if "temp_embed" in state else "dit"
    if "temporal_transformer_blocks.0.attn1.to_q.weight" in state:
        return "latte-t2v"
    if "pos_embed.proj.weight" in state and "transformer_blocks.0.norm1.linear.weight" in state:
        return "diffusers-dit"
    raise UserError(
        "unrecognised checkpoint: not a DiT, Latte or Latte-T2V state dict (first keys: "
        + _few(sorted(state), 4) + ")"
    )


def to_dit_layout(state: dict[str, torch.Tensor], input_size: int | None = None):
    """(state dict in our layout, source format name): diffusers DiT weights are converted, every other
    format already is in our layout."""
    fmt = detect_format(state)
    if fmt == "diffusers-dit":
        from .diffusers import from_diffusers_dit

        state = from_diffusers_dit(state, input_size)
    return state, fmt


# -- config inference -----------------------------------------------------------------------------
def infer_geometry(state: dict[str, torch.Tensor], arch: str = "dit") -> dict:
    """Config fields that the tensor shapes determine (everything but the head count)."""
    if arch == "latte":
        return latte_geometry(state)
    if arch == "latte_t2v":
        return latte_t2v_geometry(state)
    try:
        hidden, in_channels, patch, _ = state["x_embedder.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        mlp_hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        out_channels = state["final_layer.linear.weight"].shape[0] // (patch * patch)
        table_rows = state["y_embedder.embedding_table.weight"].shape[0]
        num_tokens = state["pos_embed"].shape[1]
    except (KeyError, ValueError) as err:
        raise UserError(f"incomplete DiT state dict: cannot read its shape ({err})") from None
    grid = math.isqrt(num_tokens)
    return dict(
        hidden_size=hidden, in_channels=in_channels, patch_size=patch, depth=depth,
        mlp_ratio=mlp_hidden / hidden, learn_sigma=out_channels == 2 * in_channels,
        num_classes=table_rows - 1, input_size=grid * patch,
        long_skip=any(k.startswith(SKIP_PREFIXES) for k in state),
    )


def infer_config(state: dict[str, torch.Tensor], arch: str | None = None, **overrides):
    """A config for a state dict in our layout. The head count is not in the shapes; it is taken from
    the DiT size with the same width (S 6, B 12, L 16, XL 16) unless ``num_heads`` is given."""
    arch = arch or FORMATS[detect_format(state)]
    fields = infer_geometry(state, arch)
    fields["num_heads"] = overrides["num_heads"] if "num_heads" in overrides else heads_for(fields["hidden_size"])
    return config_from_dict(arch, {**fields, **overrides})


# -- loading --------------------------------------------------------------------------------------------
def load_state_into(
    model, state: dict[str, torch.Tensor], *, skip_init: str | None = None, source_format: str = "dit"
) -> LoadReport:
    """Copy ``state`` into ``model`` strictly; see the module docstring for the two tolerated gaps."""
    expected = model.state_dict()
    report = LoadReport(source_format)
    ignorable = {k for k, v in state.items() if k not in expected and k in IGNORED_KEYS
                 and IGNORED_KEYS[k].fits(v, expected)}
    report.ignored = [(k, IGNORED_KEYS[k].why) for k in sorted(ignorable)]
    state = {k: v for k, v in state.items() if k not in ignorable}
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
            raise UserError(
                "this is a vanilla DiT checkpoint and the model has long skips: pass skip_init "
                "(--skip-init torch_default|xavier|zero) to initialise them as new modules"
            )
        report.new, report.missing = report.missing, []
    if not report.ok:
        raise UserError("checkpoint does not match the model: " + report.describe_problems())
    with torch.no_grad():
        for key, value in state.items():
            expected[key].copy_(value)
    if report.new:
        init_long_skips_(model.skip_norms, model.skip_linears, skip_init)
        log.warning("initialised %d new long-skip tensors with %r", len(report.new), skip_init)
    for key, why in report.ignored:
        log.info("ignored %s: %s", key, why)
    return report


def read_weights(
    path, prefer: tuple[str, ...] = ("ema", "model", "state_dict"), input_size: int | None = None,
) -> tuple[dict[str, torch.Tensor], str, dict]:
    """(state dict in our layout, source format, what the file says of the config: ``arch`` and, for our
    safetensors and diffusers folders, config fields) for a file, a diffusers folder or a built-in name."""
    source = resolve_weights(path)
    if is_diffusers_folder(source):
        return read_diffusers_folder(source)
    state, stored = read_checkpoint(source, prefer)
    state, fmt = to_dit_layout(state, input_size)
    if stored is not None:
        return state, fmt, {"arch": stored[0], **stored[1]}
    return state, fmt, {"arch": FORMATS[fmt]}


def read_diffusers_folder(source: Path) -> tuple[dict[str, torch.Tensor], str, dict]:
    """:func:`read_weights` of a diffusers model folder, or of a pipeline folder with one in ``transformer/``:
    Latte-T2V (``LatteTransformer3DModel``), vanilla DiT (``DiTTransformer2DModel``, converted to our layout),
    and DiT / Skip-DiT and Latte-T2V / Latte-T2V-skip as :class:`skipdit.diffusers.SkipDiTTransformer2DModel` and
    :class:`skipdit.diffusers.SkipLatteTransformer3DModel` (our layout under a prefix)."""
    folder, raw = read_model_config(source)
    kind = raw.get("_class_name", "?")
    if kind == "LatteTransformer3DModel":
        state, known = read_diffusers_latte(folder)
        return state, "diffusers-latte", {"arch": "latte_t2v", **known}
    if kind in DIT_CLASSES:
        state, known = read_diffusers_dit(folder, raw)
        return state, "diffusers-dit", {"arch": "dit", **known}
    if kind == SKIPDIT_CLASS:
        state, fields = read_skipdit_folder(folder, raw)
        arch, fields = _checked_config("dit", fields, folder / "config.json")
        return state, "diffusers-skipdit", {"arch": arch, **fields}
    if kind == SKIPLATTE_CLASS:
        state, fields = read_skiplatte_folder(folder, raw)
        arch, fields = _checked_config("latte_t2v", fields, folder / "config.json")
        return state, "diffusers-skiplatte", {"arch": arch, **fields}
    supported = ", ".join(("LatteTransformer3DModel", *DIT_CLASSES[:1], SKIPDIT_CLASS, SKIPLATTE_CLASS))
    raise UserError(f"{folder} holds a {kind}; supported diffusers models: {supported}")


# config fields that may differ between a file and the model it initialises: the long skips (a vanilla
# checkpoint initialises a -skip model) and the training-only dropout rates
CONVERTIBLE = ("long_skip", "skip_init", "class_dropout_prob", "caption_dropout_prob")


def check_architecture(known: dict, config, source) -> None:
    """Raise if what a file states about its architecture (our metadata, a diffusers config.json)
    disagrees with ``config``. Shapes cannot tell every field: the head count changes none of them."""
    clashes = [f"{k}={v!r} (model: {getattr(config, k)!r})" for k, v in known.items()
               if k not in CONVERTIBLE and hasattr(config, k) and getattr(config, k) != v]
    if clashes:
        raise UserError(f"{source} was saved with {', '.join(clashes)}; load it with the same architecture")


# config fields a preset takes from the file: the data geometry, never the architecture
FILE_FIELDS = {
    "dit": ("input_size", "in_channels", "learn_sigma", "num_classes"),
    "latte": ("input_size", "in_channels", "learn_sigma", "num_classes", "num_frames"),
    "latte_t2v": ("input_size", "in_channels", "learn_sigma", "caption_channels", "num_frames"),
}


def load(
    path: str | os.PathLike, preset: str | None = None, *, skip_init: str | None = None,
    return_report: bool = False, **overrides,
):
    """A model with the weights of ``path`` (a file, a diffusers Latte folder, or a built-in name such as
    ``"digits/Skip-DiT"``), in eval mode.

    Without ``preset`` the architecture comes from the file (our metadata, a diffusers ``config.json``,
    else the tensor shapes). With ``preset`` the architecture is the preset's and only the data geometry
    (input size, channels, classes, frames) comes from the file, so a checkpoint of another architecture
    is rejected. ``skip_init`` lets a vanilla checkpoint initialise a model with long skips.
    """
    state, fmt, known = read_weights(path, input_size=overrides.get("input_size"))
    arch = known.pop("arch")
    if preset is not None:
        target = preset_config(preset)
        if arch_of(target) != arch:
            raise UserError(f"{path} holds a {arch} model, but preset {preset} is a {arch_of(target)}")
        fields = {**infer_geometry(state, arch), **known}
        taken = {k: fields[k] for k in FILE_FIELDS[arch] if k in fields}
        config = target.replace(**{**taken, **overrides})
        check_architecture(known, config, path)
    elif known and set(known) >= {"hidden_size", "num_heads"}:
        config = config_from_dict(arch, {**infer_geometry(state, arch), **known, **overrides})
    else:
        config = infer_config(state, arch, **{**known, **overrides})
    model = model_from_config(config)
    report = load_state_into(model, state, skip_init=skip_init, source_format=fmt)
    model.eval()
    return (model, report) if return_report else model


def stored_text_encoder(path) -> dict | None:
    """The text encoder spec (``{"name", "max_length"}``) a text model was trained with: from our safetensors'
    metadata, or from a ``skipdit train`` checkpoint's config; None if the file does not say."""
    source = resolve_weights(path)
    if not source.is_file():
        return None
    if source.suffix == ".safetensors":
        metadata = read_safetensors_metadata(source)
        if TEXT_KEY not in metadata:
            return None
        where = f"the {TEXT_KEY} metadata of {source}"
        return _checked_text_spec(parse_json_text(metadata[TEXT_KEY], where), where)
    payload = read_torch_file(source)
    config = payload.get("config") if isinstance(payload, dict) else None
    if not isinstance(config, dict) or "text_encoder" not in config:
        return None
    spec = {"name": config["text_encoder"], "max_length": config.get("text_max_length")}
    return _checked_text_spec(spec, f"the text encoder settings in {source}")


def _checked_text_spec(spec, where: str) -> dict:
    """A spec that load_text_encoder takes: a name, and a prompt length that is a positive integer or unset."""
    length = spec.get("max_length") if isinstance(spec, dict) else None
    length_ok = length is None or (isinstance(length, int) and not isinstance(length, bool) and length >= 1)
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and length_ok):
        raise UserError(f"{where} must be a name and a positive max_length, got {spec!r}")
    return spec


def carried_metadata(path) -> dict[str, str]:
    """The metadata a conversion of ``path`` keeps: everything our safetensors hold besides the config (the text
    encoder spec, training step, weights), or the text encoder spec of a ``skipdit train`` checkpoint. Without
    the spec a converted text model would be sampled with the default encoder and prompt length."""
    source = resolve_weights(path)
    if not source.is_file():
        return {}
    if source.suffix == ".safetensors":
        return {k: v for k, v in read_safetensors_metadata(source).items() if k not in (CONFIG_KEY, ARCH_KEY)}
    spec = stored_text_encoder(source)
    return {} if spec is None else {TEXT_KEY: json.dumps(spec)}


# -- writing ------------------------------------------------------------------------------------------
# how the floating-point tensors of a safetensors file are stored (``save(..., storage=)``; a half-size file says so
# in its metadata, a float32 one, as files always were, does not); a model loads in float32 whatever the file
# holds, so a bf16 file gives the exact bf16 values, widened
STORAGE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
STORAGE_KEY = "skipdit_storage_dtype"


def save(model, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None, *,
         storage: str = "fp32") -> Path:
    """Write weights and config as safetensors, atomically (temporary file, then rename). ``storage`` ``"bf16"`` or
    ``"fp16"`` rounds the floating-point tensors to half size (the file's metadata says so), e.g. to ship a model."""
    from safetensors.torch import save_file

    if storage not in STORAGE_DTYPES:
        raise UserError(f"unknown storage dtype {storage!r}; valid: {', '.join(STORAGE_DTYPES)}")
    path = check_output(path)
    metadata = {CONFIG_KEY: json.dumps(asdict(model.config)), ARCH_KEY: arch_of(model.config),
                **({STORAGE_KEY: storage} if storage != "fp32" else {}), **(extra_metadata or {})}  # fp32: as ever
    dtype = STORAGE_DTYPES[storage]
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))  # usual permissions


def check_output(path: str | os.PathLike) -> Path:
    """``path`` as a Path if a safetensors file can be written there: it ends in ``.safetensors``, is not a
    folder, and its nearest existing folder is writable (missing folders are created on writing). Checked
    before any work, so a bad output path costs no conversion and leaves nothing behind."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise UserError(f"output must end in .safetensors, got {path.name}")
    if path.is_dir():
        raise UserError(f"output {path} is a folder; give the path of a .safetensors file")
    return check_writable_place(path)


def _check_not_the_source(source: Path, out: Path, src) -> None:
    """Refuse an output that would replace the file being converted (any spelling, a symlink, a hard link) or
    write into the diffusers folder being read: the rename would destroy the input, and its metadata with it."""
    if out.exists() and source.exists() and os.path.samefile(out, source):
        raise UserError(f"output {out} is the checkpoint being converted ({src}); give another output path")
    if is_diffusers_folder(source) and out.resolve().is_relative_to(source.resolve()):
        raise UserError(f"output {out} is inside the diffusers folder being converted ({src}); "
                        "give a path outside it")


def convert(
    src: str | os.PathLike, dst: str | os.PathLike, preset: str | None = None, *, skip_init: str | None = None,
    **overrides,
):
    """``(written path, model, load report)``: ``src`` (anything :func:`load` reads) as our safetensors at
    ``dst``, keeping the metadata that says how to sample it (:func:`carried_metadata`). ``dst`` is checked
    first and may not be ``src`` itself: the rename would replace the input while its metadata is lost."""
    out = check_output(dst)
    _check_not_the_source(resolve_weights(src), out, src)
    metadata = carried_metadata(src)
    model, report = load(src, preset, skip_init=skip_init, return_report=True, **overrides)
    return save(model, out, extra_metadata=metadata), model, report
