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
from .base import CachePolicy, StepPlan, relative_l1

KEYS = {"threshold": "threshold"}


@dataclass(frozen=True)
class FirstBlockCache(CachePolicy):
    threshold: float = 0.05
    family: str = "fbc"
    keys = KEYS
    decides_at_run_time = True

    def __post_init__(self):
        if not 0 <= self.threshold < float("inf"):  # NaN too: it would never trigger a reuse
            raise UserError(f"First-Block-Cache threshold must be a finite number >= 0, got {self.threshold}")

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        """Tentative: the first step is full; the others are decided as they run."""
        return [StepPlan(int(t), k == 0, ((0, num_units),)) for k, t in enumerate(timesteps)]

    def run(self, model, h: torch.Tensor, c, step: StepPlan, slot: dict) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        first = model.run_units(h, c, 0, 1, skips)
        residual = first - h
        if not step.full and "head" in slot and relative_l1(residual, slot["head"]).item() < self.threshold:
            slot["ran"] = StepPlan(step.t, False, ((0, 1),))
            return first + slot["tail"]
        out = model.run_units(first, c, 1, model.num_units, skips)
        slot["head"], slot["tail"] = residual, out - first
        slot["ran"] = StepPlan(step.t, True, step.units)
        return out


