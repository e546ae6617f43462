"""DeepCache-style caching on a vanilla DiT: the "Faster-Diffusion"-like baseline of the paper.

Skip-Cache is DeepCache carried over to a transformer with long skips: cached steps recompute the
shallow units, whose fresh outputs reach the deep units through the skips. A vanilla DiT has no such
path, so the same move can only inject the hidden state kept on the last full step at unit ``L-b`` and
run the last ``b`` units (running the shallow units too would change nothing at the output). That is
what this policy does; comparing it with Skip-Cache at the same N and b isolates what the long skips buy.

    deepcache:N=2,b=1
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import UserError
from .base import CachePolicy, StepPlan
from .schedule import interval_schedule

KEYS = {"N": "interval", "b": "branch", "start": "start_t", "stop": "stop_t"}


@dataclass(frozen=True)
class DeepCacheDiT(CachePolicy):
    interval: int = 2
    branch: int = 1
    start_t: int | None = None
    stop_t: int | None = None
    family: str = "deepcache"
    keys = KEYS

    def __post_init__(self):
        if self.interval < 1 or self.branch < 1:
            raise UserError(f"DeepCache needs N >= 1 and b >= 1, got N={self.interval}, b={self.branch}")

    def check_model(self, model) -> None:
        if getattr(model, "has_long_skips", False):
            raise UserError("this model has long skips: its DeepCache is Skip-Cache (skip:N=...,b=...)")
        self.check_units(model.num_units)

    def check_units(self, num_units: int) -> None:
        if self.branch >= num_units:
            raise UserError(f"DeepCache b={self.branch} must be < the model's {num_units} units")

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        flags = interval_schedule(timesteps, self.interval, start_t=self.start_t, stop_t=self.stop_t)
        deep = ((num_units - self.branch, num_units),)
        return [StepPlan(int(t), full, ((0, num_units),) if full else deep) for t, full in zip(timesteps, flags)]

    def run(self, model, h: torch.Tensor, c, step: StepPlan, slot: dict) -> torch.Tensor:
        L, b = model.num_units, self.branch
        if step.full:
            h = slot["deep"] = model.run_units(h, c, 0, L - b)
        else:
            h = slot["deep"]
        return model.run_units(h, c, L - b, L)


