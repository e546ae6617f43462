"""Our DiT layout <-> diffusers' ``DiTTransformer2DModel`` layout (peers §1.3-1.4).

diffusers copies the timestep and label embedders into every block
(``transformer_blocks.{i}.norm1.emb.*``), splits the fused QKV projection, and keeps the 2-D sin-cos
table as a non-persistent buffer. Two numerical differences exist in the stock diffusers model:

* its timestep features use ``downscale_freq_shift=1`` (frequencies ``exp(-ln(1e4) i / (half-1))``)
  where DiT uses 0, a ~1e-3 relative difference at t = 500;
* the official conversion script leaves ``norm_eps=1e-5`` for the second LayerNorm of each block,
  where DiT uses 1e-6.

:func:`build_diffusers_dit` with ``exact=True`` (the default) removes both, so the diffusers model
computes the same function as ours.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..models.dit import DiT, DiTConfig
from ..models.layers import sincos_2d
from .latte import latte_t2v_fields, read_diffusers_weights

_BLOCK_RENAMES = {
    "adaLN_modulation.1": "norm1.linear",
    "attn.proj": "attn1.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
}
_TOP_RENAMES = {
    "x_embedder.proj": "pos_embed.proj",
    "final_layer.adaLN_modulation.1": "proj_out_1",
    "final_layer.linear": "proj_out_2",
}
_EMBEDDERS = {
    "t_embedder.mlp.0": "norm1.emb.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "norm1.emb.timestep_embedder.linear_2",
    "y_embedder.embedding_table": "norm1.emb.class_embedder.embedding_table",
}


def to_diffusers_dit(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Convert a vanilla DiT state dict; every key is consumed (long skips have no diffusers form)."""
    if any(k.startswith(("skip_norms.", "skip_linears.")) for k in state):
        raise UserError("diffusers' DiTTransformer2DModel has no long skips; only vanilla DiT converts")
    out, todo = {}, dict(state)
    todo.pop("pos_embed", None)  # recomputed by diffusers
    for ours, theirs in _TOP_RENAMES.items():
        for p in ("weight", "bias"):
            out[f"{theirs}.{p}"] = todo.pop(f"{ours}.{p}")
    embedders = {ours: [todo.pop(f"{ours}.{p}") for p in _params(ours)] for ours in _EMBEDDERS}
    for i in range(depth):
        pre = f"transformer_blocks.{i}"
        for ours, theirs in _EMBEDDERS.items():
            for p, tensor in zip(_params(ours), embedders[ours]):
                out[f"{pre}.{theirs}.{p}"] = tensor.clone()
        for p in ("weight", "bias"):
            q, k, v = todo.pop(f"blocks.{i}.attn.qkv.{p}").chunk(3, dim=0)
            out[f"{pre}.attn1.to_q.{p}"], out[f"{pre}.attn1.to_k.{p}"], out[f"{pre}.attn1.to_v.{p}"] = q, k, v
            for ours, theirs in _BLOCK_RENAMES.items():
                out[f"{pre}.{theirs}.{p}"] = todo.pop(f"blocks.{i}.{ours}.{p}")
    if todo:
        raise UserError(f"keys not converted to diffusers: {sorted(todo)[:6]}")
    return out


def from_diffusers_dit(state: dict[str, torch.Tensor], input_size: int | None) -> dict[str, torch.Tensor]:
    """Convert a diffusers DiT state dict to ours. The per-block embedder copies must be identical.
    diffusers does not save the sin-cos table, so the latent ``input_size`` must be given."""
    if input_size is None:
        raise UserError("a diffusers DiT state dict does not record its sample size: pass input_size")
    todo = dict(state)
    depth = 1 + max(int(k.split(".")[1]) for k in todo if k.startswith("transformer_blocks."))
    out = {}
    for ours, theirs in _TOP_RENAMES.items():
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = todo.pop(f"{theirs}.{p}")
    for ours, theirs in _EMBEDDERS.items():
        for p in _params(ours):
            copies = [todo.pop(f"transformer_blocks.{i}.{theirs}.{p}") for i in range(depth)]
            if any(not torch.equal(copies[0], c) for c in copies[1:]):
                raise UserError(f"per-block copies of {theirs}.{p} differ; DiT shares one embedder")
            out[f"{ours}.{p}"] = copies[0]
    for i in range(depth):
        pre = f"transformer_blocks.{i}"
        for p in ("weight", "bias"):
            qkv = [todo.pop(f"{pre}.attn1.to_{n}.{p}") for n in "qkv"]
            out[f"blocks.{i}.attn.qkv.{p}"] = torch.cat(qkv, dim=0)
            for ours, theirs in _BLOCK_RENAMES.items():
                out[f"blocks.{i}.{ours}.{p}"] = todo.pop(f"{pre}.{theirs}.{p}")
    if todo:
        raise UserError(f"keys not converted from diffusers: {sorted(todo)[:6]}")
    hidden, _, patch, _ = out["x_embedder.proj.weight"].shape
    if input_size % patch:
        raise UserError(f"input size {input_size} is not divisible by the patch size {patch}")
    out["pos_embed"] = sincos_2d(hidden, input_size // patch).float().unsqueeze(0)
    return out


def _params(ours: str) -> tuple[str, ...]:
    return ("weight",) if ours.endswith("embedding_table") else ("weight", "bias")


def diffusers_dit_kwargs(config: DiTConfig) -> dict:
    if config.mlp_ratio != 4.0:
        raise UserError("diffusers' DiT supports mlp_ratio 4 only")
    return dict(
        num_attention_heads=config.num_heads, attention_head_dim=config.hidden_size // config.num_heads,
        in_channels=config.in_channels, out_channels=config.out_channels, num_layers=config.depth,
        sample_size=config.input_size, patch_size=config.patch_size, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=config.num_classes, norm_type="ada_norm_zero",
        norm_elementwise_affine=False, norm_eps=1e-6,
    )


def build_diffusers_dit(model: DiT, *, exact: bool = True):
    """A diffusers ``DiTTransformer2DModel`` holding ``model``'s weights. With ``exact`` the timestep
    frequency shift is set to DiT's (see module docstring); without it, the stock diffusers numerics."""
    try:
        from diffusers import DiTTransformer2DModel
    except ImportError as err:
        raise UserError("this needs diffusers: pip install 'skipdit[diffusers]'") from err
    kwargs = diffusers_dit_kwargs(model.config)
    if not exact:
        kwargs["norm_eps"] = 1e-5
    target = DiTTransformer2DModel(**kwargs)
    target.load_state_dict(to_diffusers_dit(model.state_dict(), model.config.depth), strict=True)
    if exact:
        use_dit_frequencies(target)
    dtype = next(model.parameters()).dtype
    return (target if dtype == torch.float32 else target.to(dtype)).eval()


def use_dit_frequencies(transformer) -> None:
    """Make a diffusers ``DiTTransformer2DModel`` embed timesteps as DiT does (``downscale_freq_shift=0`` on every
    block; see the module docstring). diffusers keeps the shift out of ``config.json``, so a reloaded model needs
    this again."""
    for block in transformer.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0


# -- diffusers folders (config.json + weights), read without diffusers --------------------------------------
# DiTTransformer2DModel, and the legacy class name facebook/DiT-XL-2-256 still ships (peers §1.1)
DIT_CLASSES = ("DiTTransformer2DModel", "Transformer2DModel")
SKIPDIT_CLASS = "SkipDiTTransformer2DModel"  # skipdit.diffusers: our DiT / Skip-DiT as a diffusers model
SKIPDIT_PREFIX = "dit."  # its state dict is our DiT's, under the attribute that holds the DiT
SKIPLATTE_CLASS = "SkipLatteTransformer3DModel"  # skipdit.diffusers: our Latte-T2V(-skip) as a diffusers model
SKIPLATTE_PREFIX = "latte."
# config.json entries of a diffusers DiT without a default we could assume: the geometry of the network
_DIT_REQUIRED = ("num_attention_heads", "attention_head_dim", "in_channels", "num_layers", "sample_size",
                 "patch_size")


def dit_fields(raw: dict, where) -> dict:
    """Our config fields for a diffusers DiT ``config.json``; anything our DiT does not compute is an error.
    ``norm_eps`` is not read: DiT uses 1e-6 (the official conversion script leaves diffusers' 1e-5)."""
    absent = [k for k in _DIT_REQUIRED if k not in raw]
    if absent:
        raise UserError(f"{where} lacks {', '.join(absent)}; a DiTTransformer2DModel config names them all")
    counts = [*_DIT_REQUIRED, "num_embeds_ada_norm", *(["out_channels"] if raw.get("out_channels") is not None else [])]
    raw = {"num_embeds_ada_norm": 1000, **raw}  # diffusers' default: ImageNet's classes
    bad = [k for k in counts if not isinstance(raw[k], int) or isinstance(raw[k], bool) or raw[k] < 1]
    if bad:
        raise UserError(f"{where}: {', '.join(f'{k}={raw[k]!r}' for k in bad)} must be positive integers")
    expected = {"norm_type": "ada_norm_zero", "activation_fn": "gelu-approximate", "attention_bias": True,
                "norm_elementwise_affine": False}
    wrong = [f"{k}={raw.get(k)!r} (supported: {v!r})" for k, v in expected.items() if raw.get(k, v) != v]
    if wrong:
        raise UserError(f"{where}: unsupported DiT configuration: {', '.join(wrong)}")
    in_channels = raw["in_channels"]
    out_channels = in_channels if raw.get("out_channels") is None else raw["out_channels"]
    if out_channels not in (in_channels, 2 * in_channels):
        raise UserError(f"{where}: out_channels {out_channels} is neither in_channels nor 2x (learned sigma)")
    return dict(
        input_size=raw["sample_size"], patch_size=raw["patch_size"], in_channels=in_channels,
        hidden_size=raw["num_attention_heads"] * raw["attention_head_dim"], depth=raw["num_layers"],
        num_heads=raw["num_attention_heads"], num_classes=raw["num_embeds_ada_norm"],
        learn_sigma=out_channels == 2 * in_channels, long_skip=False,
    )


def read_diffusers_dit(folder: Path, raw: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict in our layout, config fields) of a diffusers ``DiTTransformer2DModel`` folder."""
    fields = dit_fields(raw, folder / "config.json")
    state = from_diffusers_dit(read_diffusers_weights(folder), fields["input_size"])
    return state, fields


def read_skipdit_folder(folder: Path, raw: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config fields) of a ``SkipDiTTransformer2DModel`` folder: our DiT's own keys under
    :data:`SKIPDIT_PREFIX`, and our DiTConfig fields in ``config.json``."""
    fields = {k: v for k, v in raw.items() if not k.startswith("_")}  # _class_name, _diffusers_version
    return _unprefixed(folder, SKIPDIT_CLASS, SKIPDIT_PREFIX), fields


def read_skiplatte_folder(folder: Path, raw: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config fields) of a ``SkipLatteTransformer3DModel`` folder: our Latte-T2V's keys under
    :data:`SKIPLATTE_PREFIX`; ``config.json`` is diffusers' Latte config plus the long-skip fields."""
    fields = latte_t2v_fields(raw, folder / "config.json")
    fields.update({k: raw[k] for k in ("long_skip", "skip_init", "caption_dropout_prob") if k in raw})
    return _unprefixed(folder, SKIPLATTE_CLASS, SKIPLATTE_PREFIX), fields


def _unprefixed(folder: Path, kind: str, prefix: str) -> dict[str, torch.Tensor]:
    weights = read_diffusers_weights(folder)
    foreign = [k for k in weights if not k.startswith(prefix)]
    if foreign:
        raise UserError(f"{folder}: {kind} weights must all start with {prefix!r}; "
                        f"found {', '.join(sorted(foreign)[:4])}")
    return {k.removeprefix(prefix): v for k, v in weights.items()}
