"""Latte-T2V and Latte-T2V-skip for text-to-video (reference §A.4).

A unit is one *layer*: a spatial block (self-attention over a frame's tokens, cross-attention to the
caption, feed-forward) and a temporal block (self-attention over the frames, feed-forward). Both are
PixArt-alpha "adaLN-single" blocks: one timestep MLP for the whole network (``adaln_single``) and a
learned ``scale_shift_table`` per block. Latte-T2V-skip (28 layers) has 14 long skips at layer
granularity.

Parameter names follow diffusers' ``LatteTransformer3DModel`` (``pos_embed.proj``,
``transformer_blocks.i.attn1.to_q``, ``temporal_transformer_blocks.i.ff.net.0.proj``, ...), which is
also the naming of the official ``Latte-skip.pt``, so both load by identity. The 2-D and temporal
sin-cos tables are non-persistent buffers, as in diffusers.

Videos are ``(N, C, F, H, W)``. Captions are token embeddings ``(N, L, caption_channels)`` from a
text encoder (T5-XXL for the official model, see :mod:`skipdit.text`) with an optional boolean mask
``(N, L)``; the official pipeline passes no mask (it truncates the padding away for batch 1, §G.18),
skipdit passes one so that a sample does not depend on its batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .config import ModelConfig
from .latte import VideoContext, VideoStack, check_frames, to_spatial, to_temporal, unpatchify_frames
from .layers import PatchEmbed, attend, sincos_1d, sincos_2d, take_rows, timestep_embedding
from .skip import init_long_skips_, make_long_skips, scoped, sublayer


@dataclass(frozen=True)
class LatteT2VConfig(ModelConfig):
    """Field names are ours; :mod:`skipdit.convert.latte` maps diffusers' ``config.json`` onto them
    (``sample_size`` -> ``input_size``, ``num_layers`` -> ``depth``, ``video_length`` -> ``num_frames``,
    heads x head dim -> ``hidden_size``). Defaults are Latte-0 / Latte-1 (§A.4)."""

    input_size: int = 64
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    caption_channels: int = 4096
    num_frames: int = 16
    norm_eps: float = 1e-6
    attention_bias: bool = True
    learn_sigma: bool = True
    caption_dropout_prob: float = 0.1  # training: captions replaced by the empty caption
    long_skip: bool = False
    skip_init: str = "torch_default"  # official: skip modules keep PyTorch's default init (§A.4)
    family = "Latte-T2V"

    def __post_init__(self):
        self.check(("caption_channels", "num_frames"), dropout="caption_dropout_prob")
        if self.long_skip and self.depth % 2:
            raise UserError(f"long skips pair layer i with layer depth-1-i; depth must be even, got {self.depth}")


# -- layers in diffusers' naming ---------------------------------------------------------------------------
class SplitQKVAttention(nn.Module):
    """Multi-head attention with separate ``to_q``/``to_k``/``to_v`` and ``to_out.0`` (diffusers' names),
    where DiT's :class:`~skipdit.models.layers.Attention` fuses them into one ``qkv``. Keys and values come
    from ``context`` when given (cross-attention); ``mask`` (N, L) bool marks the context tokens to attend to.
    ``rows`` and ``received`` are :class:`~skipdit.models.layers.Attention`'s: the output at the tokens
    ``rows`` (N, k) only, and the attention each key token received."""

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None, bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=bias)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                rows: torch.Tensor | None = None, received: bool = False):
        context = x if context is None else context
        heads = lambda z: z.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # noqa: E731  (N, H, L, d)
        queries = x if rows is None else take_rows(x, rows)  # (N, Q, D)
        q, k, v = heads(self.to_q(queries)), heads(self.to_k(context)), heads(self.to_v(context))
        attn_mask = None if mask is None else mask[:, None, None, :]  # (N, 1, 1, L)
        merge = lambda o: self.to_out[0](o.transpose(1, 2).flatten(2))  # noqa: E731  (N, H, Q, d) -> (N, Q, D)
        if received:
            out, score = attend(q, k, v, attn_mask, received=True)
            return merge(out), score
        return merge(attend(q, k, v, attn_mask))


class GELUProj(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """``net.0.proj`` -> GELU(tanh) -> ``net.2`` (``net.1`` is diffusers' dropout slot)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(GELUProj(dim, hidden), nn.Identity(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AdaLNSingleBlock(nn.Module):
    """PixArt-alpha block: ``t6`` (N, 6D) from the shared timestep MLP plus this block's
    ``scale_shift_table`` give shift/scale/gate for attention and feed-forward. The cross-attention
    (spatial blocks only) takes the un-normalised state and has no gate, as in PixArt."""

    def __init__(self, cfg: LatteT2VConfig, cross_attention: bool):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = nn.LayerNorm(d, eps=cfg.norm_eps, elementwise_affine=False)
        self.attn1 = SplitQKVAttention(d, cfg.num_heads, bias=cfg.attention_bias)
        if cross_attention:
            self.attn2 = SplitQKVAttention(d, cfg.num_heads, context_dim=d, bias=cfg.attention_bias)
        self.norm2 = nn.LayerNorm(d, eps=cfg.norm_eps, elementwise_affine=False)
        self.ff = FeedForward(d, int(d * cfg.mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)

    def forward(self, x: torch.Tensor, t6: torch.Tensor, text=None, text_mask=None, memo=None) -> torch.Tensor:
        """``memo``: see :func:`skipdit.models.skip.sublayer`."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self._modulation(t6)  # (N, 1, D) each
        x = x + gate_msa * sublayer(memo, "attn", self.attn1, self.norm1(x) * (1 + scale_msa) + shift_msa)
        if text is not None:
            x = x + sublayer(memo, "cross_attn", self.attn2, x, text, text_mask)
        return x + gate_mlp * sublayer(memo, "mlp", self.ff, self.norm2(x) * (1 + scale_mlp) + shift_mlp)

    def attn_input(self, x: torch.Tensor, t6: torch.Tensor) -> torch.Tensor:
        """The modulated input of the self-attention sublayer."""
        shift_msa, scale_msa = self._modulation(t6)[:2]
        return self.norm1(x) * (1 + scale_msa) + shift_msa

    def _modulation(self, t6: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.scale_shift_table[None] + t6.unflatten(1, (6, -1))).chunk(6, dim=1)  # 6 x (N, 1, D)


class TimestepMLP(nn.Module):
    def __init__(self, dim: int, frequency_dim: int = 256):
        super().__init__()
        self.linear_1 = nn.Linear(frequency_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = timestep_embedding(t, self.linear_1.in_features).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(freq)))


class AdaLNSingle(nn.Module):
    """``emb.timestep_embedder`` (sinusoid -> MLP) and ``linear``: the 6 modulation vectors of all blocks."""

    def __init__(self, dim: int):
        super().__init__()
        self.emb = nn.Module()
        self.emb.timestep_embedder = TimestepMLP(dim)
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedded = self.emb.timestep_embedder(t)  # (N, D)
        return self.linear(F.silu(embedded)), embedded  # (N, 6D), (N, D)


class CaptionProjection(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


# -- the model ----------------------------------------------------------------------------------------------
class LatteT2V(VideoStack, nn.Module):
    """Latte-T2V / Latte-T2V-skip. ``forward(x, t, text, text_mask)``: ``x`` (N, C, F, H, W), ``t`` (N,)
    on the 0..999 scale, ``text`` (N, L, caption_channels), ``text_mask`` (N, L) bool or None."""

    def __init__(self, config: LatteT2VConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.hidden_size
        self.pos_embed = PatchEmbed(cfg.patch_size, cfg.in_channels, d)
        self.transformer_blocks = nn.ModuleList(AdaLNSingleBlock(cfg, cross_attention=True) for _ in range(cfg.depth))
        self.temporal_transformer_blocks = nn.ModuleList(
            AdaLNSingleBlock(cfg, cross_attention=False) for _ in range(cfg.depth)
        )
        self.norm_out = nn.LayerNorm(d, eps=1e-6, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(2, d) / d**0.5)
        self.proj_out = nn.Linear(d, cfg.patch_size**2 * cfg.out_channels)
        self.adaln_single = AdaLNSingle(d)
        self.caption_projection = CaptionProjection(cfg.caption_channels, d)
        if cfg.long_skip:
            self.skip_norms, self.skip_linears = make_long_skips(d, cfg.depth // 2)
        grid = cfg.input_size // cfg.patch_size
        scale = max(cfg.input_size // 64, 1)  # diffusers' interpolation_scale for the 2-D table
        self.register_buffer("spatial_pos", sincos_2d(d, grid, scale).float().unsqueeze(0), persistent=False)
        temporal = sincos_1d(d, torch.arange(cfg.num_frames)).float().unsqueeze(0)
        self.register_buffer("temp_pos_embed", temporal, persistent=False)
        self.gradient_checkpointing = False
        if cfg.long_skip:
            init_long_skips_(self.skip_norms, self.skip_linears, cfg.skip_init)

    # -- the model protocol (skipdit.protocol), used by caches, guidance, samplers and training -------
    conditioning = "text"
    num_classes = 0
    null_label = None  # the unconditional branch is the empty caption, not a label
    sublayers = ("attn", "cross_attn", "mlp", "temporal_attn", "temporal_mlp")  # see models.skip.sublayer

    @property
    def task(self) -> str:
        """A one-frame model is a text-to-image model (its samples are images)."""
        return "t2i" if self.config.num_frames == 1 else "t2v"

    @property
    def num_units(self) -> int:
        """Units a cache schedules over: the layers (reference §B.2: 28 for Latte-T2V)."""
        return self.config.depth

    def repeated_blocks(self) -> Iterator[nn.Module]:
        return itertools.chain(self.transformer_blocks, self.temporal_transformer_blocks)

    # -- forward segments ---------------------------------------------------------------------------------
    def embed(
        self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None = None, *,
        num_image_frames: int = 0, image_text: torch.Tensor | None = None, image_text_mask: torch.Tensor | None = None,
        temporal: bool = True,
    ) -> tuple[torch.Tensor, VideoContext]:
        n, _, frames, height, width = x.shape
        size = self.config.input_size
        if (height, width) != (size, size):
            raise UserError(f"expected frames of size {size}x{size}, got {height}x{width}")
        if text.shape[-1] != self.config.caption_channels:
            raise UserError(f"caption embeddings of width {text.shape[-1]}, but this model takes "
                             f"{self.config.caption_channels} (use the text encoder it was trained with)")
        video = check_frames(frames, num_image_frames, self.config.num_frames)
        h = self.pos_embed(x.transpose(1, 2).flatten(0, 1)) + self.spatial_pos  # (N*F, T, D)
        t6, embedded = self.adaln_single(t)  # (N, 6D), (N, D)
        tokens = self.caption_projection(text)  # (N, L, D)
        per_frame = tokens.unsqueeze(1).expand(n, frames, *tokens.shape[1:])  # (N, F, L, D)
        mask = None if text_mask is None else text_mask.bool().unsqueeze(1).expand(n, frames, -1)  # (N, F, L)
        if num_image_frames and image_text is not None:  # each appended image has its own caption
            per_frame = torch.cat([per_frame[:, :video], self.caption_projection(image_text)], dim=1)
            if mask is not None:
                image_mask = torch.ones(image_text.shape[:3], dtype=torch.bool, device=x.device) \
                    if image_text_mask is None else image_text_mask.bool()
                mask = torch.cat([mask[:, :video], image_mask], dim=1)
        ctx = VideoContext(
            n, frames, video, spatial=t6.repeat_interleave(frames, 0), temporal=t6.repeat_interleave(h.shape[1], 0),
            text=per_frame.flatten(0, 1), text_mask=None if mask is None else mask.flatten(0, 1),
            temporal_blocks=temporal, head=embedded.repeat_interleave(frames, 0),
        )
        return h, ctx

    def unit(self, i: int, h: torch.Tensor, ctx: VideoContext, memo=None) -> torch.Tensor:
        h = self.transformer_blocks[i](h, ctx.spatial, ctx.text, ctx.text_mask, scoped(memo, i))  # (N*F, T, D)
        if not (ctx.temporal_blocks and ctx.video_frames):  # images only: the spatial blocks alone
            return h
        video, images = to_temporal(h, ctx)  # (N*T, Fv, D)
        if i == 0 and ctx.video_frames > 1:  # diffusers adds the temporal table only to real videos
            video = video + self.temp_pos_embed[:, : ctx.video_frames].to(video.dtype)
        video = self.temporal_transformer_blocks[i](video, ctx.temporal, memo=scoped(memo, i, "temporal_"))
        return to_spatial(video, images, ctx)

    def first_block_input(self, h: torch.Tensor, ctx: VideoContext) -> torch.Tensor:
        return self.transformer_blocks[0].attn_input(h, ctx.spatial)

    def head(self, h: torch.Tensor, ctx: VideoContext) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + ctx.head[:, None]).chunk(2, dim=1)  # (N*F, 1, D)
        x = self.proj_out(self.norm_out(h) * (1 + scale) + shift)  # (N*F, T, p*p*C_out)
        return unpatchify_frames(x, ctx, self.config.patch_size, self.config.out_channels)  # (N, C_out, F, H, W)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None = None, *,
        cache=None, num_image_frames: int = 0, image_text: torch.Tensor | None = None,
        image_text_mask: torch.Tensor | None = None, temporal: bool = True,
    ) -> torch.Tensor:
        """``cache`` is a cache's guidance branch (``CacheState.branch(name)``). ``num_image_frames``: the last
        frames of ``x`` are independent images (joint training) with captions ``image_text`` (N, K, L, C).
        ``temporal=False`` skips the temporal blocks (diffusers' ``enable_temporal_attentions=False``, for images)."""
        h, ctx = self.embed(x, t, text, text_mask, num_image_frames=num_image_frames, image_text=image_text,
                            image_text_mask=image_text_mask, temporal=temporal)  # (N*F, T, D) per-frame tokens
        # the stack of layers with its long skips, as DiT.forward spells out (encoder half, decoder half), or
        # what the cache makes of it at this step
        h = self.run_units(h, ctx) if cache is None else cache.run_units(self, h, ctx)
        return self.head(h, ctx)  # (N, C_out, F, H, W)
