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
from .base import CachePolicy, Key, StepPlan, integer, needs_vanilla, optional_integer
from .schedule import interval_schedule
from .skip_cache import SkipCacheState

KEYS = {"N": Key("interval", integer), "b": Key("branch", integer), "start": Key("start_t", optional_integer),
        "stop": Key("stop_t", optional_integer)}


@dataclass(frozen=True)
class DeepCacheDiT(CachePolicy):
    interval: int = 2
    branch: int = 1
    start_t: int | None = None
    stop_t: int | None = None
    family: str = "deepcache"
    keys = KEYS
    State = SkipCacheState  # the deep hidden state, as Skip-Cache's

    def __post_init__(self):
        if self.interval < 1 or self.branch < 1:
            raise UserError(f"DeepCache needs N >= 1 and b >= 1, got N={self.interval}, b={self.branch}")

    def check_model(self, model) -> None:
        needs_vanilla(model, "this model has long skips: its DeepCache is Skip-Cache (skip:N=...,b=...)")
        self.check_units(model.num_units)

    def check_units(self, num_units: int) -> None:
        if self.branch >= num_units:
            raise UserError(f"DeepCache b={self.branch} must be < the model's {num_units} units")

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        flags = interval_schedule(timesteps, self.interval, start_t=self.start_t, stop_t=self.stop_t)
        deep = ((num_units - self.branch, num_units),)
        return [StepPlan(int(t), full, ((0, num_units),) if full else deep) for t, full in zip(timesteps, flags)]

    def run(self, model, h: torch.Tensor, c, step: StepPlan, state: SkipCacheState) -> tuple[torch.Tensor, StepPlan]:
        L, b = model.num_units, self.branch
        if step.full:
            h = state.deep = model.run_units(h, c, 0, L - b)
        else:
            h = state.deep
        return model.run_units(h, c, L - b, L), step


