"""Long skip connections (LSCs), the one architectural change of Skip-DiT (reference §A.1).

Before deep unit ``j`` (``j >= L/2``) the hidden state is fused with the output of the mirrored
shallow unit ``L-1-j``::

    h = Linear_{2D->D}( LayerNorm_fp32( concat([h, skip], -1) ) )     # replaces h, no residual

The modules live in two lists on the model, ``skip_norms[k]`` and ``skip_linears[k].linear`` with
``k = j - L/2``, which are the official checkpoint names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SKIP_INITS = ("torch_default", "xavier", "zero")


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
        raise ValueError(f"unknown skip init {scheme!r}; valid: {', '.join(SKIP_INITS)}")
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
