"""Latte and Latte-skip for class-conditional and unconditional video (reference §A.3).

Blocks alternate spatial (attention over the tokens of one frame) and temporal (attention over the
frames at one token position); a unit is one (spatial, temporal) pair, so Latte-XL/2 has 14 units and
Latte-skip 7 long skips. The fixed 1-D sin-cos ``temp_embed`` is added once, after the first spatial
block. Parameter names are the official ones (``blocks.{even}`` spatial, ``blocks.{odd}`` temporal,
``temp_embed``, ``skip_norms.k``, ``skip_linears.k.linear``), so official ``.pt`` files load by identity.

Videos are ``(N, C, F, H, W)`` here, as everywhere in skipdit (channels next to the batch, like
diffusers), where the official code takes ``(N, F, C, H, W)``; the state dict is unaffected.

Joint image-video training (``train_with_img.py``, §A.3): the last ``num_image_frames`` frames of the
input are independent images. They go through the spatial blocks with their own labels and bypass the
temporal blocks and ``temp_embed``, so they never mix with the video frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from .config import ModelConfig
from .dit import DiTBlock, FinalLayer, init_dit_weights_
from .layers import LabelEmbedder, PatchEmbed, TimestepEmbedder, sincos_1d
from .skip import LongSkipStack, make_long_skips, scoped


@dataclass(frozen=True)
class LatteConfig(ModelConfig):
    """``depth`` counts blocks (spatial and temporal), so there are ``depth // 2`` units. ``num_frames``
    is the length of ``temp_embed``: the most video frames the model serves. ``num_classes=0`` is the
    unconditional model (official ``extras=1``: FFS, Sky, Taichi); ``> 0`` adds the label embedder
    (``extras=2``: UCF101 has 101 classes, null label 101)."""

    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_frames: int = 16
    num_classes: int = 0
    class_dropout_prob: float = 0.1
    learn_sigma: bool = True
    long_skip: bool = False
    skip_init: str = "xavier"  # official Latte-skip: the xavier pass also hits the skip Linears (§A.3)
    family = "Latte"

    def __post_init__(self):
        self.check(("num_frames",), dropout="class_dropout_prob")
        if self.num_classes < 0:
            raise UserError(f"num_classes must be >= 0 (0: unconditional), got {self.num_classes}")
        if self.depth % 2:
            raise UserError(f"Latte blocks come in (spatial, temporal) pairs; depth must be even, got {self.depth}")
        if self.long_skip and self.depth % 4:
            raise UserError(f"long skips pair unit i with unit {self.depth // 2}-1-i; depth must be a multiple "
                             f"of 4, got {self.depth}")


@dataclass
class VideoContext:
    """What the units of a video model need besides the hidden state, built once per forward."""

    batch: int
    frames: int  # all frames, video and image
    video_frames: int  # the first ``video_frames`` frames are a video; the rest are independent images
    spatial: torch.Tensor  # conditioning per frame (N*F, ...)
    temporal: torch.Tensor  # conditioning per token position of the video (N*T, ...)
    text: torch.Tensor | None = None  # per-frame caption tokens for cross-attention (N*F, L, D)
    text_mask: torch.Tensor | None = None  # (N*F, L) bool, True = attend
    temporal_blocks: bool = True  # False skips them (diffusers' enable_temporal_attentions=False)
    head: torch.Tensor | None = None  # conditioning of the output layer per frame, where it differs


def check_frames(frames: int, num_image_frames: int, max_frames: int) -> int:
    """The number of video frames, or a clear error if the temporal embedding cannot serve them."""
    if not 0 <= num_image_frames <= frames:
        raise UserError(f"num_image_frames={num_image_frames} must be in 0..{frames} (the input's frames)")
    video = frames - num_image_frames
    if video > max_frames:
        raise UserError(f"{video} video frames, but this model's temporal embedding serves at most {max_frames} "
                         f"(num_frames={max_frames}); ask for {max_frames} frames or fewer")
    return video


def to_temporal(h: torch.Tensor, ctx: VideoContext) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N*F, T, D)`` -> the video frames as ``(N*T, Fv, D)``, and the image frames ``(N, Fi, T, D)``."""
    hv = h.unflatten(0, (ctx.batch, ctx.frames))  # (N, F, T, D)
    images = hv[:, ctx.video_frames :]
    video = hv[:, : ctx.video_frames].transpose(1, 2)  # (N, T, Fv, D)
    return video.flatten(0, 1), images  # (N*T, Fv, D)


def to_spatial(video: torch.Tensor, images: torch.Tensor, ctx: VideoContext) -> torch.Tensor:
    """Inverse of :func:`to_temporal`: back to ``(N*F, T, D)``."""
    video = video.unflatten(0, (ctx.batch, -1)).transpose(1, 2)  # (N, Fv, T, D)
    return torch.cat([video, images], dim=1).flatten(0, 1)  # (N*F, T, D)


def unpatchify_frames(x: torch.Tensor, ctx: VideoContext, patch: int, channels: int) -> torch.Tensor:
    """Per-frame patch tokens ``(N*F, T, p*p*C)`` -> video ``(N, C, F, H, W)``."""
    g = math.isqrt(x.shape[1])
    x = torch.einsum("nhwpqc->nchpwq", x.reshape(-1, g, g, patch, patch, channels))
    return x.reshape(ctx.batch, ctx.frames, channels, g * patch, g * patch).transpose(1, 2)


class VideoStack(LongSkipStack):
    """A long-skip unit stack over videos: Latte and Latte-T2V."""

    @property
    def num_frames(self) -> int:
        """The frames a sample has by default: the most the temporal embedding serves."""
        return self.config.num_frames

    def sample_shape(self, num_frames: int | None = None) -> tuple[int, ...]:
        """(C, F, H, W) of one sample; ``num_frames`` defaults to the most the model serves."""
        if num_frames is not None and num_frames < 1:  # 0 is an error, not "the default" (None is)
            raise UserError(f"num_frames must be >= 1, got {num_frames}")
        frames = check_frames(self.config.num_frames if num_frames is None else num_frames, 0, self.config.num_frames)
        size = self.config.input_size
        return (self.config.in_channels, frames, size, size)


class Latte(VideoStack, nn.Module):
    """Latte / Latte-skip. ``forward(x, t, y)``: ``x`` (N, C, F, H, W), ``t`` (N,) on the 0..999 scale,
    ``y`` (N,) class ids (``num_classes`` = null; ignored by an unconditional model)."""

    def __init__(self, config: LatteConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, d)
        self.t_embedder = TimestepEmbedder(d)
        if cfg.num_classes:
            self.y_embedder = LabelEmbedder(cfg.num_classes, d, cfg.class_dropout_prob)
        num_tokens = (cfg.input_size // cfg.patch_size) ** 2
        # Fixed sin-cos tables, frozen Parameters as upstream (so they are in the state dict).
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, d), requires_grad=False)
        self.temp_embed = nn.Parameter(torch.zeros(1, cfg.num_frames, d), requires_grad=False)
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        if cfg.long_skip:
            self.skip_norms, self.skip_linears = make_long_skips(d, cfg.depth // 4)
        self.final_layer = FinalLayer(d, cfg.patch_size, cfg.out_channels)
        self.gradient_checkpointing = False
        self.initialize_weights()

    # -- the model protocol (skipdit.protocol), used by caches, guidance, samplers and training -------
    task = "c2v"
    conditioning = "class"  # with num_classes 0 an unconditional model, which ignores its labels
    sublayers = ("attn", "mlp", "temporal_attn", "temporal_mlp")  # what its blocks call them (models.skip.sublayer)

    @property
    def num_units(self) -> int:
        """Units a cache schedules over: the (spatial, temporal) pairs (reference §B.2: 14 for Latte-XL/2)."""
        return self.config.depth // 2

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def null_label(self) -> int | None:
        return self.config.num_classes if self.config.num_classes else None

    def repeated_blocks(self) -> Iterator[nn.Module]:
        """The spatial and temporal blocks, all DiT blocks."""
        return iter(self.blocks)

    # -- initialisation ---------------------------------------------------------------------------------
    def initialize_weights(self) -> None:
        """DiT's scheme plus the temporal table. The official Latte-skip builds its skips before the
        xavier pass, which ``skip_init="xavier"`` (the default here) reproduces."""
        init_dit_weights_(self)
        temporal = sincos_1d(self.config.hidden_size, torch.arange(self.config.num_frames))
        self.temp_embed.data.copy_(temporal.float().unsqueeze(0))

    # -- forward segments ---------------------------------------------------------------------------------
    def embed(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, *,
        force_drop: torch.Tensor | None = None, num_image_frames: int = 0, image_labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, VideoContext]:
        n, _, frames, height, width = x.shape
        size = self.config.input_size
        if (height, width) != (size, size):
            raise UserError(f"expected frames of size {size}x{size}, got {height}x{width}")
        video = check_frames(frames, num_image_frames, self.config.num_frames)
        h = self.x_embedder(x.transpose(1, 2).flatten(0, 1)) + self.pos_embed  # (N*F, T, D)
        c = self.t_embedder(t)  # (N, D)
        per_frame = c.unsqueeze(1).expand(n, frames, c.shape[1])  # (N, F, D)
        if self.config.num_classes:
            labels = y.unsqueeze(1).expand(n, frames).clone()
            if num_image_frames and image_labels is not None:
                labels[:, video:] = image_labels  # each appended image has its own class (train_with_img.py)
            if force_drop is None and self.training and self.config.class_dropout_prob > 0:
                force_drop = torch.rand(n, device=x.device) < self.config.class_dropout_prob
            drop = None if force_drop is None else force_drop.unsqueeze(1).expand(n, frames).flatten()
            label_emb = self.y_embedder(labels.flatten(), drop).unflatten(0, (n, frames))  # (N, F, D)
            per_frame = per_frame + label_emb
            c = c + label_emb[:, 0]  # the video's class, for the temporal blocks
        tokens = h.shape[1]
        ctx = VideoContext(n, frames, video, spatial=per_frame.flatten(0, 1), temporal=c.repeat_interleave(tokens, 0))
        return h, ctx

    def unit(self, i: int, h: torch.Tensor, ctx: VideoContext, memo=None) -> torch.Tensor:
        h = self.blocks[2 * i](h, ctx.spatial, scoped(memo, i))  # (N*F, T, D)
        if not ctx.video_frames:  # images only: nothing for the temporal block to attend over
            return h
        video, images = to_temporal(h, ctx)  # (N*T, Fv, D)
        if i == 0:
            video = video + self.temp_embed[:, : ctx.video_frames]
        video = self.blocks[2 * i + 1](video, ctx.temporal, scoped(memo, i, "temporal_"))
        return to_spatial(video, images, ctx)

    def first_block_input(self, h: torch.Tensor, ctx: VideoContext) -> torch.Tensor:
        return self.blocks[0].attn_input(h, ctx.spatial)

    def head(self, h: torch.Tensor, ctx: VideoContext) -> torch.Tensor:
        x = self.final_layer(h, ctx.spatial)  # (N*F, T, p*p*C_out)
        return unpatchify_frames(x, ctx, self.config.patch_size, self.config.out_channels)  # (N, C_out, F, H, W)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, *, cache=None,
        force_drop: torch.Tensor | None = None, num_image_frames: int = 0, image_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``cache`` is a cache's guidance branch (``CacheState.branch(name)``). ``num_image_frames``: the last
        frames of ``x`` are independent images (joint training), with classes ``image_labels`` (N, num_image_frames)."""
        if self.config.num_classes and y is None:
            raise UserError("this Latte is class-conditional: pass labels y")
        h, ctx = self.embed(x, t, y, force_drop=force_drop, num_image_frames=num_image_frames,
                            image_labels=image_labels)  # (N*F, T, D) per-frame tokens
        # the stack of units with its long skips, as DiT.forward spells out (encoder half, decoder half), or
        # what the cache makes of it at this step
        h = self.run_units(h, ctx) if cache is None else cache.run_units(self, h, ctx)
        return self.head(h, ctx)  # (N, C_out, F, H, W)
