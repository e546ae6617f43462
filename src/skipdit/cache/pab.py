"""Pyramid Attention Broadcast (Zhao et al. 2024): inside a window of timesteps, attention outputs are
broadcast (reused) across steps, each kind with its own range: spatial < temporal < cross, since
cross-attention changes least. A kind with range r recomputes on every r-th step of the window and
reuses its last output in between; outside the window everything is computed. The defaults are the
VideoSys settings for Latte (spatial 2, temporal 3, cross 6, window 100 < t < 800). ``mlp=r`` also
broadcasts the feed-forward outputs (0: never).

    pab                                  # VideoSys defaults
    pab:spatial=4,temporal=6,cross=8     # a faster setting
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import UserError
from .base import CachePolicy, Key, StepPlan, SublayerState, integer, sublayer_memo

KEYS = {name: Key(name, integer) for name in ("spatial", "temporal", "cross", "mlp", "lo", "hi")}
# sublayers broadcast by each range
KINDS = {"spatial": ("attn",), "temporal": ("temporal_attn",), "cross": ("cross_attn",),
         "mlp": ("mlp", "temporal_mlp")}


@dataclass(frozen=True)
class PyramidAttentionBroadcast(CachePolicy):
    """Ranges per kind (0 or 1: never reused) and the window ``lo < t < hi``."""

    spatial: int = 2
    temporal: int = 3
    cross: int = 6
    mlp: int = 0
    lo: int = 100
    hi: int = 800
    family: str = "pab"
    keys = KEYS
    State = SublayerState

    def __post_init__(self):
        if self.lo >= self.hi:
            raise UserError(f"PAB window needs lo < hi, got lo={self.lo}, hi={self.hi}")

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        plan, inside = [], 0
        for t in timesteps:
            reuse: tuple[str, ...] = ()
            if self.lo < t < self.hi:
                reuse = tuple(name for kind, names in KINDS.items() for name in names
                              if getattr(self, kind) > 1 and inside % getattr(self, kind))
                inside += 1
            plan.append(StepPlan(int(t), not reuse, ((0, num_units),), reuse))
        return plan

    def run(self, model, h: torch.Tensor, c, step: StepPlan, state: SublayerState) -> tuple[torch.Tensor, StepPlan]:
        broadcast = [name for kind, names in KINDS.items() for name in names if getattr(self, kind) > 1]
        return model.run_units(h, c, memo=sublayer_memo(state.kept, step.reuse, keep=broadcast)), step


