"""Long skip connections (LSCs), the one architectural change of Skip-DiT (reference §A.1).

Before deep unit ``j`` (``j >= L/2``) the hidden state is fused with the output of the mirrored
shallow unit ``L-1-j``::

    h = Linear_{2D->D}( LayerNorm_fp32( concat([h, skip], -1) ) )     # replaces h, no residual

The modules live in two lists on the model, ``skip_norms[k]`` and ``skip_linears[k].linear`` with
``k = j - L/2``, which are the official checkpoint names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import UserError

SKIP_INITS = ("torch_default", "xavier", "zero")

# A sublayer memo lets a cache reuse the outputs of attention / MLP sublayers across steps. A block calls
# ``memo(name, fn, *args)`` instead of ``fn(*args)``; the memo computes or returns a kept output. Names are
# ``"attn"``, ``"cross_attn"``, ``"mlp"``, with a ``"temporal_"`` prefix in the temporal blocks of video models.
# ``fn`` is the sublayer module and ``args[0]`` its (rows, tokens, D) input. MLPs act on each token alone; the
# attention modules (names ending in ``attn``) also take ``rows=`` (rows, k) token indices, for their output at
# those tokens only, and self-attention ``received=True``, for the attention each token received (ToCa).
Memo = Callable[..., torch.Tensor]


def sublayer(memo: Memo | None, name: str, fn: Callable[..., torch.Tensor], *args) -> torch.Tensor:
    """``fn(*args)``, or what ``memo`` makes of it."""
    return fn(*args) if memo is None else memo(name, fn, *args)


def scoped(memo, unit: int, prefix: str = "") -> Memo | None:
    """The memo a block of unit ``unit`` sees: it keys sublayer ``name`` as ``(unit, prefix + name)``."""
    if memo is None:
        return None
    return lambda name, fn, *args: memo((unit, prefix + name), fn, *args)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, so fusion is stable under bf16/fp16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class SkipLinear(nn.Module):
    """The 2D -> D projection. The official class is called ``ResidualLinear`` but adds no residual;
    it exists so that the parameter is named ``skip_linears.k.linear``."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def make_long_skips(dim: int, count: int) -> tuple[nn.ModuleList, nn.ModuleList]:
    """``count`` fusion modules for hidden size ``dim``: (skip_norms, skip_linears)."""
    norms = nn.ModuleList(FP32LayerNorm(2 * dim, eps=1e-6) for _ in range(count))
    linears = nn.ModuleList(SkipLinear(dim) for _ in range(count))
    return norms, linears


def fuse(norm: nn.Module, linear: nn.Module, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """The LSC: concat [deep, skip] (this order), fp32 LayerNorm, Linear; the result replaces ``h``."""
    return linear(norm(torch.cat([h, skip], dim=-1)))  # (..., 2D) -> (..., D)


def init_long_skips_(norms: nn.ModuleList, linears: nn.ModuleList, scheme: str) -> None:
    """Initialise the fusion modules in place.

    ``torch_default`` is what the official DiT-skip and Latte-T2V-skip get (the DiT init pass runs
    before the LSCs are built); ``xavier`` is the official class-to-video Latte-skip (xavier weight,
    zero bias); ``zero`` zeroes the Linear. The LayerNorms always start at weight 1, bias 0. No scheme
    makes a converted vanilla model function-preserving, because the LayerNorm precedes the Linear.
    """
    if scheme not in SKIP_INITS:
        raise UserError(f"unknown skip init {scheme!r}; valid: {', '.join(SKIP_INITS)}")
    for norm in norms:
        norm.reset_parameters()
    for module in linears:
        lin = module.linear
        if scheme == "torch_default":
            lin.reset_parameters()
        elif scheme == "xavier":
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        else:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)


class LongSkipStack:
    """The unit loop shared by every model with (optional) long skips: DiT blocks, Latte
    (spatial, temporal) pairs and Latte-T2V layers are all "units" (reference §B.1).

    This is the part of :class:`skipdit.protocol.DiffusionModel` that all skipdit models share:
    ``run_units``, ``has_long_skips``, ``in_channels`` and ``learn_sigma``. A model mixes it in and
    provides the rest of the protocol (``task``, ``conditioning``, ``num_classes``, ``null_label``,
    ``num_frames``, ``num_units``, ``sublayers``, ``sample_shape``, ``first_block_input``,
    ``repeated_blocks``, ``forward``; the video models get ``num_frames`` and ``sample_shape`` from
    ``models.latte.VideoStack``), plus what the loop needs: ``config`` (with ``long_skip``,
    ``in_channels`` and ``learn_sigma``), ``unit(i, h, ctx, memo)`` (run unit ``i``),
    ``gradient_checkpointing`` and, with long skips, ``skip_norms`` / ``skip_linears``. Units
    ``0 .. L/2-1`` push their outputs; unit ``i >= L/2`` first fuses the top of the stack through
    ``skip_norms[i - L/2]`` (LIFO, so unit ``i`` meets unit ``L-1-i``). ``ctx`` is whatever the model's
    units need (a conditioning vector, per-frame contexts, ...): caches pass it through untouched.
    """

    num_units: int
    gradient_checkpointing: bool

    @property
    def has_long_skips(self) -> bool:
        return self.config.long_skip

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def learn_sigma(self) -> bool:
        return self.config.learn_sigma

    def unit(self, i: int, h: torch.Tensor, ctx, memo=None) -> torch.Tensor:
        raise NotImplementedError

    def first_block_input(self, h: torch.Tensor, ctx) -> torch.Tensor:
        """The timestep-modulated input of the first attention sublayer (TeaCache's indicator)."""
        raise NotImplementedError

    def fuse_skip(self, i: int, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """The long skip into deep unit ``i`` (``i >= L/2``): ``h`` fused with ``skip`` (the output of unit
        ``L-1-i``) through ``skip_norms[i - L/2]`` / ``skip_linears[i - L/2]``, before the unit runs."""
        k = i - self.num_units // 2
        if not self.has_long_skips or not 0 <= k < len(self.skip_norms):
            raise ValueError(f"unit {i} of {type(self).__name__} fuses no long skip")
        return fuse(self.skip_norms[k], self.skip_linears[k], h, skip)

    def run_units(
        self, h: torch.Tensor, ctx, start: int = 0, stop: int | None = None, skips: list[torch.Tensor] | None = None,
        memo=None,
    ) -> torch.Tensor:
        """Run units ``start .. stop-1``, pushing to / popping from ``skips`` as the wiring says. ``memo``
        (a cache's, see :func:`sublayer`) sees every attention and MLP call of the units."""
        stop = self.num_units if stop is None else stop
        half = self.num_units // 2
        long_skip = self.has_long_skips
        if long_skip and skips is None:
            skips = []
        for i in range(start, stop):
            if long_skip and i >= half:
                h = self.fuse_skip(i, h, skips.pop())
            if self.gradient_checkpointing and torch.is_grad_enabled():
                h = checkpoint(self.unit, i, h, ctx, use_reentrant=False)
            else:
                h = self.unit(i, h, ctx, memo)
            if long_skip and i < half:
                skips.append(h)
        return h
