"""Building blocks shared by the DiT-family models.

Parameter names follow the official DiT checkpoints (which use timm's layer names), so official
state dicts load by identity: ``x_embedder.proj``, ``attn.qkv``/``attn.proj``, ``mlp.fc1``/``mlp.fc2``,
``t_embedder.mlp.{0,2}``, ``y_embedder.embedding_table``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation; ``shift``/``scale`` are per sample (N, D), ``x`` is (N, T, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens, as a strided convolution (timm layout)."""

    def __init__(self, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, C, H, W) -> (N, T, D)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
           received: bool = False):
    """Multi-head attention of queries (N, H, Q, d) over keys and values (N, H, T, d): SDPA, or with
    ``received=True`` the softmax written out, which also returns the attention each key token received, summed
    over the queries and averaged over the heads, (N, T): ToCa's attention score (same MACs as SDPA's math
    kernel, but the (N, H, Q, T) weights are materialised)."""
    if not received:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    logits = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # (N, H, Q, T)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    weights = logits.softmax(dim=-1)
    return weights @ v, weights.sum(dim=-2).mean(dim=1)  # (N, H, Q, d), (N, T)


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The tokens ``rows`` (N, k) of each sample of ``x`` (N, T, D): (N, k, D)."""
    return x.gather(1, rows.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Attention(nn.Module):
    """Multi-head self-attention with a fused QKV projection and SDPA.

    ``rows`` (N, k) token indices: the output at those tokens only, their queries attending over the keys and
    values of every token of ``x`` (ToCa's partial step: the Q and output projections and the attention run on
    k tokens, the K/V projection on all T). ``received=True`` also returns the attention each token received
    (:func:`attend`)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise UserError(f"hidden size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None, received: bool = False):
        n, t, d = x.shape
        heads = lambda z: z.unflatten(-1, (-1, self.num_heads, d // self.num_heads)).permute(2, 0, 3, 1, 4)  # noqa: E731
        if rows is None:
            q, k, v = heads(self.qkv(x)).unbind(0)  # 3 x (N, H, T, d_head)
        else:  # the fused weight cut in two: queries of the k tokens, keys and values of all T
            weight, bias = self.qkv.weight, self.qkv.bias
            q = heads(F.linear(take_rows(x, rows), weight[:d], None if bias is None else bias[:d]))[0]
            k, v = heads(F.linear(x, weight[d:], None if bias is None else bias[d:])).unbind(0)
        merge = lambda o: self.proj(o.transpose(1, 2).flatten(2))  # noqa: E731  (N, H, Q, d) -> (N, Q, D)
        if received:
            out, score = attend(q, k, v, received=True)
            return merge(out), score
        return merge(attend(q, k, v))


class Mlp(nn.Module):
    """Two-layer MLP with tanh-approximated GELU (DiT's choice)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features [cos, sin] with frequencies exp(-ln(max_period) * i / half) (DiT).

    diffusers' ``Timesteps(downscale_freq_shift=1)`` divides by ``half - 1`` instead; see
    ``skipdit.convert.diffusers`` for what that means for parity.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb  # (N, dim)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = timestep_embedding(t, self.frequency_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(freq)  # (N, D)


class LabelEmbedder(nn.Module):
    """Class embedding table with one extra "null" row used for classifier-free guidance.

    During training each label is replaced by the null id with probability ``dropout_prob``.
    """

    def __init__(self, num_classes: int, dim: int, dropout_prob: float):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), dim)

    def forward(self, labels: torch.Tensor, force_drop: torch.Tensor | None = None) -> torch.Tensor:
        if force_drop is not None:
            labels = torch.where(force_drop.bool(), self.num_classes, labels)
        elif self.training and self.dropout_prob > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.dropout_prob
            labels = torch.where(drop, self.num_classes, labels)
        return self.embedding_table(labels)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """1-D sin-cos table [sin, cos] in float64 (MAE / DiT convention)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = positions.reshape(-1).double()[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (P, dim)


def sincos_2d(dim: int, grid_size: int, interpolation_scale: float = 1.0) -> torch.Tensor:
    """2-D sin-cos table for a square grid, as in DiT: the first half encodes the column, the second the row.

    Tokens are in row-major order (token ``r * grid_size + c``). Positions are divided by
    ``interpolation_scale`` (diffusers' PatchEmbed, for models trained at a larger size).
    """
    if dim % 4:
        raise UserError(f"2-D sin-cos embedding needs a hidden size divisible by 4, got {dim}")
    coords = torch.arange(grid_size, dtype=torch.float64) / interpolation_scale
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)  # (G*G, dim)
