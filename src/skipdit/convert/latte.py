"""Latte checkpoints: config inference from official state dicts, and diffusers Latte folders.

* Official class-to-video ``.pt`` (Latte, Latte-skip; ``{"ema"}`` or a raw state dict, §A.3): the keys
  are ours, and every config field but the head count is in the shapes (``temp_embed`` gives the frame
  count, ``y_embedder`` the classes).
* Official ``Latte-skip.pt`` for text-to-video (``{"model", "ema"}``, §A.4) and diffusers'
  ``LatteTransformer3DModel`` weights: diffusers naming, which is ours. Their sin-cos tables are not in
  the state dict, so the latent size and frame count come from ``config.json`` in a diffusers folder, or
  default to Latte-1's (64, 16) for a bare ``.pt``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import UserError
from ..models.presets import DIT_SIZES
from .files import read_json, read_safetensors, read_torch_file

SKIP_PREFIXES = ("skip_norms.", "skip_linears.")
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def heads_for(hidden: int) -> int:
    """The head count is not in the shapes: take it from the DiT size of the same width."""
    heads = {h: n for h, _, n in DIT_SIZES.values()}.get(hidden)
    if heads is None:
        raise UserError(f"cannot infer the head count for hidden size {hidden}; pass a preset or num_heads")
    return heads


def _depth(state: dict, prefix: str) -> int:
    return 1 + max(int(k.split(".")[1]) for k in state if k.startswith(prefix))


def latte_geometry(state: dict[str, torch.Tensor]) -> dict:
    """Config fields of an official Latte state dict (all but the head count)."""
    try:
        hidden, in_channels, patch, _ = state["x_embedder.proj.weight"].shape
        out_channels = state["final_layer.linear.weight"].shape[0] // (patch * patch)
        fields = dict(
            hidden_size=hidden, in_channels=in_channels, patch_size=patch, depth=_depth(state, "blocks."),
            mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / hidden,
            learn_sigma=out_channels == 2 * in_channels,
            num_classes=state["y_embedder.embedding_table.weight"].shape[0] - 1 if "y_embedder.embedding_table.weight"
            in state else 0,
            input_size=math.isqrt(state["pos_embed"].shape[1]) * patch, num_frames=state["temp_embed"].shape[1],
            long_skip=any(k.startswith(SKIP_PREFIXES) for k in state),
        )
    except (KeyError, ValueError) as err:
        raise UserError(f"incomplete Latte state dict: cannot read its shape ({err})") from None
    return fields


def latte_t2v_geometry(state: dict[str, torch.Tensor]) -> dict:
    """Config fields of a Latte-T2V state dict that its shapes fix (not the head count, latent size or
    frame count)."""
    try:
        hidden, in_channels, patch, _ = state["pos_embed.proj.weight"].shape
        out_channels = state["proj_out.weight"].shape[0] // (patch * patch)
        fields = dict(
            hidden_size=hidden, in_channels=in_channels, patch_size=patch, depth=_depth(state, "transformer_blocks."),
            mlp_ratio=state["transformer_blocks.0.ff.net.0.proj.weight"].shape[0] / hidden,
            caption_channels=state["caption_projection.linear_1.weight"].shape[1],
            attention_bias="transformer_blocks.0.attn1.to_q.bias" in state,
            learn_sigma=out_channels == 2 * in_channels,
            long_skip=any(k.startswith(SKIP_PREFIXES) for k in state),
        )
    except (KeyError, ValueError) as err:
        raise UserError(f"incomplete Latte-T2V state dict: cannot read its shape ({err})") from None
    return fields


def is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "config.json").is_file() or (path / "transformer" / "config.json").is_file())


def model_folder(path: str | Path) -> Path:
    """The folder of a diffusers model: ``path`` itself, or its ``transformer/`` if ``path`` is a pipeline folder."""
    path = Path(path)
    return path / "transformer" if (path / "transformer" / "config.json").is_file() else path


def read_model_config(path: str | Path) -> tuple[Path, dict]:
    """(model folder, its ``config.json``) of a diffusers model or pipeline folder."""
    path = model_folder(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError(f"no diffusers model at {path}: expected config.json")
    return path, read_json(config_file)


def read_diffusers_latte(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config fields) of a diffusers ``LatteTransformer3DModel`` folder (``config.json`` and
    ``diffusion_pytorch_model.safetensors``, possibly sharded), or of a pipeline folder holding one in
    ``transformer/``."""
    path, raw = read_model_config(path)
    kind = raw.get("_class_name", "?")
    if kind != "LatteTransformer3DModel":
        raise UserError(f"{path} holds a {kind}, not a LatteTransformer3DModel")
    fields = latte_t2v_fields(raw, path / "config.json")
    return read_diffusers_weights(path), fields


# config.json entries without a default we could assume: the geometry of the network
REQUIRED_CONFIG = ("num_attention_heads", "attention_head_dim", "in_channels", "num_layers", "sample_size",
                   "patch_size", "caption_channels")


def latte_t2v_fields(raw: dict, where) -> dict:
    """Our config fields for a diffusers Latte ``config.json``; anything we do not implement is an error."""
    absent = [k for k in REQUIRED_CONFIG if k not in raw]
    if absent:
        raise UserError(f"{where} lacks {', '.join(absent)}; a LatteTransformer3DModel config names them all")
    counts = [*REQUIRED_CONFIG, *(k for k in ("video_length", "out_channels") if raw.get(k) is not None)]
    bad = [k for k in counts if not isinstance(raw[k], int) or isinstance(raw[k], bool) or raw[k] < 1]
    if bad:
        need = "must be positive integers" if len(bad) > 1 else "must be a positive integer"
        raise UserError(f"{where}: {', '.join(f'{k}={raw[k]!r}' for k in bad)} {need}")
    expected = {"norm_type": "ada_norm_single", "norm_elementwise_affine": False,
                "activation_fn": "gelu-approximate"}
    wrong = [f"{k}={raw.get(k)!r} (supported: {v!r})" for k, v in expected.items() if raw.get(k, v) != v]
    hidden = raw["num_attention_heads"] * raw["attention_head_dim"]
    if raw.get("cross_attention_dim", hidden) != hidden:
        wrong.append(f"cross_attention_dim={raw['cross_attention_dim']} (supported: the hidden size {hidden})")
    if wrong:
        raise UserError(f"{where}: unsupported Latte configuration: {', '.join(wrong)}")
    in_channels = raw["in_channels"]
    out_channels = in_channels if raw.get("out_channels") is None else raw["out_channels"]  # null: as in_channels
    if out_channels not in (in_channels, 2 * in_channels):
        raise UserError(f"{where}: out_channels {out_channels} is neither in_channels nor 2x (learned sigma)")
    return dict(
        input_size=raw["sample_size"], patch_size=raw["patch_size"], in_channels=in_channels,
        hidden_size=hidden, depth=raw["num_layers"], num_heads=raw["num_attention_heads"],
        caption_channels=raw["caption_channels"], num_frames=raw.get("video_length", 16),
        norm_eps=raw.get("norm_eps", 1e-5), attention_bias=raw.get("attention_bias", False),
        learn_sigma=out_channels == 2 * in_channels,
    )


def read_diffusers_weights(path: Path) -> dict[str, torch.Tensor]:
    for name in DIFFUSERS_WEIGHTS:
        index = path / f"{name}.index.json"
        if index.is_file():  # sharded: {"weight_map": {key: shard file}}
            state = {}
            for shard in _shards(index):
                state.update(_read_one(path / shard))
            return state
        if (path / name).is_file():
            return _read_one(path / name)
    raise UserError(f"no weights in {path}: expected {' or '.join(DIFFUSERS_WEIGHTS)}")


def _shards(index: Path) -> list[str]:
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise UserError(f"{index} has no weight_map of tensor names to shard files")
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        raise UserError(f"{index} lists shards that are not in {index.parent}: {', '.join(missing[:4])}")
    return shards


def _read_one(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        return read_safetensors(file)[0]
    state = read_torch_file(file)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{file} is not a state dict (a mapping of names to tensors)")
    return state
