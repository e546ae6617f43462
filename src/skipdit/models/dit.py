"""DiT and Skip-DiT for class-conditional image (latent) generation.

``long_skip=False`` is the DiT of Peebles & Xie; ``long_skip=True`` is the official ``DiT_skip``
(reference §A.2). The ``L`` blocks form a U: the encoder half, blocks ``0 .. L/2-1``, pushes each
block's output on a stack; in the decoder half, block ``i >= L/2`` first pops the output of its mirror
block ``L-1-i`` and fuses it into the hidden state through ``skip_norms[i-L/2]`` /
``skip_linears[i-L/2]`` (:func:`skipdit.models.skip.fuse`). Without long skips the same two halves
run with nothing pushed or popped.

The forward pass is written as explicit segments so that caches can act between them:

    h, c = embed(x, t, y)                         # patchify + pos-embed (N, T, D); conditioning (N, D)
    h    = run_units(h, c, 0, L/2, skips)         # encoder half: push
    h    = run_units(h, c, L/2, L, skips)         # decoder half: pop and fuse, then the block
    out  = head(h, c)                             # final adaLN layer + unpatchify (N, C_out, H, W)

A cache replaces the two halves by its own schedule of ``run_units`` calls (``skipdit.cache``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from .config import ModelConfig
from .layers import Attention, LabelEmbedder, Mlp, PatchEmbed, TimestepEmbedder, modulate, sincos_2d
from .skip import LongSkipStack, init_long_skips_, make_long_skips, scoped, sublayer


@dataclass(frozen=True)
class DiTConfig(ModelConfig):
    """Architecture of a DiT / Skip-DiT. ``input_size`` is the latent side (image side / 8 with the
    SD VAE), so DiT-XL/2 at 256x256 has ``input_size=32`` and 256 tokens."""

    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    class_dropout_prob: float = 0.1
    learn_sigma: bool = True
    long_skip: bool = False
    skip_init: str = "torch_default"
    family = "DiT"

    def __post_init__(self):
        self.check(("num_classes",), dropout="class_dropout_prob")
        if self.long_skip and self.depth % 2:
            raise UserError(f"long skips pair block i with block depth-1-i; depth must be even, got {self.depth}")


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, memo=None) -> torch.Tensor:
        """``memo``: see :func:`skipdit.models.skip.sublayer`; the gates are always recomputed."""
        modulation = self.adaLN_modulation(c)  # (N, 6D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=1)  # (N, D) each
        attn = sublayer(memo, "attn", self.attn, modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_msa.unsqueeze(1) * attn
        mlp = sublayer(memo, "mlp", self.mlp, modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x + gate_mlp.unsqueeze(1) * mlp

    def attn_input(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The modulated input of the attention sublayer."""
        shift_msa, scale_msa = self.adaLN_modulation(c)[:, : 2 * x.shape[-1]].chunk(2, dim=1)
        return modulate(self.norm1(x), shift_msa, scale_msa)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, T, p*p*C_out)


def init_dit_weights_(model: nn.Module) -> None:
    """The DiT scheme (xavier Linears, zero adaLN and output layer, N(0, 0.02) embeddings), for DiT and
    Latte; the long skips then get ``config.skip_init`` (reference §A.2: the official DiT-skip keeps
    PyTorch's default init for them; §A.3: Latte-skip gets the xavier pass)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    grid = model.config.input_size // model.config.patch_size
    model.pos_embed.data.copy_(sincos_2d(model.config.hidden_size, grid).float().unsqueeze(0))
    w = model.x_embedder.proj.weight.data
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    nn.init.zeros_(model.x_embedder.proj.bias)
    if model.num_classes:  # an unconditional Latte has no label embedder
        nn.init.normal_(model.y_embedder.embedding_table.weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[0].weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[2].weight, std=0.02)
    for block in model.blocks:
        nn.init.zeros_(block.adaLN_modulation[-1].weight)
        nn.init.zeros_(block.adaLN_modulation[-1].bias)
    for layer in (model.final_layer.adaLN_modulation[-1], model.final_layer.linear):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    if model.has_long_skips:
        init_long_skips_(model.skip_norms, model.skip_linears, model.config.skip_init)


class DiT(LongSkipStack, nn.Module):
    """DiT / Skip-DiT. ``forward(x, t, y)`` has the official semantics: ``x`` (N, C, H, W) latents,
    ``t`` (N,) timesteps on the original 0..999 scale, ``y`` (N,) class ids (``num_classes`` = null)."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, d)
        self.t_embedder = TimestepEmbedder(d)
        self.y_embedder = LabelEmbedder(cfg.num_classes, d, cfg.class_dropout_prob)
        num_tokens = (cfg.input_size // cfg.patch_size) ** 2
        # Fixed sin-cos table, stored as a frozen Parameter so it is in the state dict, as upstream.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, d), requires_grad=False)
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        if cfg.long_skip:
            self.skip_norms, self.skip_linears = make_long_skips(d, cfg.depth // 2)
        self.final_layer = FinalLayer(d, cfg.patch_size, cfg.out_channels)
        # Training option, not architecture: recompute each block in the backward pass to save memory.
        self.gradient_checkpointing = False
        self.initialize_weights()

    # -- the model protocol (skipdit.protocol), used by caches, guidance, samplers and training -----
    task = "c2i"
    conditioning = "class"
    num_frames = None  # an image model
    sublayers = ("attn", "mlp")  # what its blocks call them (models.skip.sublayer)

    @property
    def num_units(self) -> int:
        """Units a cache schedules over: the DiT blocks."""
        return self.config.depth

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def null_label(self) -> int:
        return self.config.num_classes  # the extra row of the label table

    def repeated_blocks(self) -> Iterator[nn.Module]:
        return iter(self.blocks)

    def sample_shape(self, num_frames: int | None = None) -> tuple[int, ...]:
        """(C, H, W) of one sample; an image model takes no frame count."""
        if num_frames not in (None, 1):
            raise UserError(f"this is an image model: num_frames does not apply (got {num_frames})")
        size = self.config.input_size
        return (self.config.in_channels, size, size)

    # -- initialisation -------------------------------------------------------------------------------
    def initialize_weights(self) -> None:
        init_dit_weights_(self)

    # -- forward segments -----------------------------------------------------------------------------
    def embed(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, force_drop: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (N, T, D) with positions added, and the conditioning vector c = t_emb + y_emb (N, D)."""
        h = self.x_embedder(x) + self.pos_embed  # (N, C, H, W) -> (N, T, D), T = (H/p)(W/p)
        return h, self.t_embedder(t) + self.y_embedder(y, force_drop)  # (N, D)

    def unit(self, i: int, h: torch.Tensor, c: torch.Tensor, memo=None) -> torch.Tensor:
        """A DiT unit is one block (reference §B.2: L = 28 for DiT-XL/2)."""
        return self.blocks[i](h, c, scoped(memo, i))

    def first_block_input(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.blocks[0].attn_input(h, c)

    def head(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.unpatchify(self.final_layer(h, c))  # (N, T, D) -> (N, T, p*p*C_out) -> (N, C_out, H, W)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        p, ch = self.config.patch_size, self.config.out_channels
        g = self.config.input_size // p
        x = x.reshape(x.shape[0], g, g, p, p, ch)  # (N, H/p, W/p, p, p, C_out)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], ch, g * p, g * p)  # (N, C_out, H, W)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, *, cache=None, force_drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``cache`` is a cache's guidance branch (``CacheState.branch(name)``); it decides which blocks run at
        this step.
        ``force_drop`` (N,) bool replaces those labels by the null class; when given, the label embedder
        drops nothing at random (the training loop draws the drops itself, reproducibly)."""
        size = self.config.input_size
        if x.shape[-2:] != (size, size):
            raise UserError(f"expected inputs of spatial size {size}x{size}, got {tuple(x.shape[-2:])}")
        h, c = self.embed(x, t, y, force_drop)  # (N, T, D) tokens, (N, D) conditioning
        if cache is not None:  # the cache decides which blocks run at this step
            h = cache.run_units(self, h, c)
        else:
            depth, skips = self.num_units, []
            h = self.run_units(h, c, 0, depth // 2, skips)  # encoder half: blocks 0..L/2-1 push their outputs
            h = self.run_units(h, c, depth // 2, depth, skips)  # decoder half: block i fuses block L-1-i's first
        return self.head(h, c)  # (N, C_out, H, W)
