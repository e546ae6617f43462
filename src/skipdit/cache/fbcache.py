"""First-Block-Cache (ParaAttention; diffusers' ``FirstBlockCacheConfig``): the first unit always runs;
when its residual changed by less than ``threshold`` (relative L1 against the residual of the last
computed step), the other units are skipped and the output is the first unit's output plus the rest
of the stack's residual kept from that step.

    fbc:threshold=0.05

The decision reads one scalar per step on the host (``.item()``), as the original.

Batch dependence: the indicator is one mean over the whole batch, so a sample's output depends on the other
samples of its batch (``decides_at_run_time``; docs/caches.md, "Batch dependence").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import UserError
from .base import CachePolicy, Key, StepPlan, number, relative_l1

KEYS = {"threshold": Key("threshold", number)}


@dataclass
class FirstBlockState:
    head: torch.Tensor | None = None  # the first unit's residual at the last computed step
    tail: torch.Tensor | None = None  # the rest of the stack's residual at that step


@dataclass(frozen=True)
class FirstBlockCache(CachePolicy):
    threshold: float = 0.05
    family: str = "fbc"
    keys = KEYS
    State = FirstBlockState
    decides_at_run_time = True

    def __post_init__(self):
        if not 0 <= self.threshold < float("inf"):  # NaN too: it would never trigger a reuse
            raise UserError(f"First-Block-Cache threshold must be a finite number >= 0, got {self.threshold}")

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        """Tentative: the first step is full; the others are decided as they run."""
        return [StepPlan(int(t), k == 0, ((0, num_units),)) for k, t in enumerate(timesteps)]

    def run(self, model, h: torch.Tensor, c, step: StepPlan, state: FirstBlockState) -> tuple[torch.Tensor, StepPlan]:
        skips: list[torch.Tensor] = []
        first = model.run_units(h, c, 0, 1, skips)
        residual = first - h
        if not step.full and state.head is not None and relative_l1(residual, state.head).item() < self.threshold:
            return first + state.tail, StepPlan(step.t, False, ((0, 1),))
        out = model.run_units(first, c, 1, model.num_units, skips)
        state.head, state.tail = residual, out - first
        return out, StepPlan(step.t, True, step.units)
