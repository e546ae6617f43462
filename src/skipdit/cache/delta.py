"""Δ-DiT (Chen et al. 2024): cache the *change* a range of blocks makes (its residual, the Δ-Cache),
not a hidden state. Early in sampling (t > boundary) the outline forms in the front blocks, so cached
steps run the front and add the back blocks' kept residual; late in sampling (t <= boundary) they start
from the input plus the front blocks' kept residual and run the back blocks. The author's DiT-XL/2
baseline (reference §B.7, ``DiT_delta``) caches 21 of 28 blocks (75 %) with boundary t = 600 and N = 2.

    delta:N=2,boundary=600,cached=6     # 6 of the model's units are skipped on cached steps

Δ-DiT acts on a stack without long skips: a skip model's shallow and deep units are wired across the
ranges it cuts (its own cache is Skip-Cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import UserError
from .base import CachePolicy, Key, StepPlan, integer, needs_vanilla, optional_integer
from .schedule import interval_schedule

KEYS = {"N": Key("interval", integer), "boundary": Key("boundary", integer),
        "cached": Key("cached_units", optional_integer), "start": Key("start_t", optional_integer),
        "stop": Key("stop_t", optional_integer)}


@dataclass
class DeltaState:
    front: torch.Tensor | None = None  # residual of the front range (units 0..m-1) on the last full step
    back: torch.Tensor | None = None  # residual of the back range (units L-m..L-1) on that step


@dataclass(frozen=True)
class DeltaDiT(CachePolicy):
    """``cached_units`` m: units skipped on a cached step (``None``: 75 % of the model's, rounded);
    the back range is the last m units, the front range the first m."""

    interval: int = 2
    boundary: int = 600
    cached_units: int | None = None
    start_t: int | None = None
    stop_t: int | None = None
    family: str = "delta"
    keys = KEYS
    State = DeltaState

    def __post_init__(self):
        if self.interval < 1:
            raise UserError(f"Δ-DiT interval N must be >= 1, got {self.interval}")

    def check_model(self, model) -> None:
        needs_vanilla(model, "Δ-DiT cuts the block stack in two ranges, which long skips cross; use it on a "
                      "vanilla model (a skip model's cache is skip:/c2i:/...)")
        self.check_units(model.num_units)

    def check_units(self, num_units: int) -> None:
        m = self.skipped(num_units)
        if not 0 < m < num_units:
            raise UserError(f"Δ-DiT cached={m} must be in 1..{num_units - 1} for a model of {num_units} units")

    def skipped(self, num_units: int) -> int:
        return round(0.75 * num_units) if self.cached_units is None else self.cached_units

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        flags = interval_schedule(timesteps, self.interval, start_t=self.start_t, stop_t=self.stop_t)
        m = self.skipped(num_units)
        front, back = ((0, num_units - m),), ((m, num_units),)  # the units that *run* on a cached step
        return [StepPlan(int(t), full, ((0, num_units),) if full else front if t > self.boundary else back)
                for t, full in zip(timesteps, flags)]

    def run(self, model, h: torch.Tensor, c, step: StepPlan, state: DeltaState) -> tuple[torch.Tensor, StepPlan]:
        L = model.num_units
        m = self.skipped(L)
        if step.full:  # run in segments to read the states at units 0, m, L-m and the output
            states, start = {0: h}, 0
            for stop in sorted({m, L - m, L}):
                h = states[stop] = model.run_units(h, c, start, stop)
                start = stop
            state.front, state.back = states[m] - states[0], states[L] - states[L - m]
            return h, step
        if step.units[0][0] == 0:  # early: run the front, add the back range's residual
            return model.run_units(h, c, 0, L - m) + state.back, step
        return model.run_units(h + state.front, c, m, L), step  # late: skip the front range


