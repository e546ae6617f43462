"""Adaptive Skip-Cache: refresh the deep features when the shallow ones say they have gone stale.

Skip-Cache runs the shallow units ``0..b-1`` on every step anyway, so their output is a free indicator
of how far the sample has moved since the last full step: ``d_k = mean|s_k - s_full| / mean|s_full|``.
The static schedule refreshes every N steps whatever happens; this policy refreshes when the predicted
change of the current step reaches ``threshold`` (or after ``max`` steps), so it spends full steps
where the trajectory moves fast and saves them where it is flat.

No host sync per step: ``d`` of step k is computed on the device and read at step k+1
(:class:`~skipdit.cache.base.LaggedScalar`). Step k+1 decides from it with a linear extrapolation
``d_k * s / (s - 1)``, ``s`` being the steps since the last full step (the step right after a full
step is always cached). The window is Skip-Cache's: steps with ``t >= start`` are full, and from a step
with ``t <= stop`` on the cache resets.

    adaptive:threshold=0.05,b=1,max=6

Batch dependence: the indicator is one mean over the whole batch, so a sample's output depends on the other
samples of its batch (``decides_at_run_time``; docs/caches.md, "Batch dependence").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from .base import (
    CachePolicy,
    Key,
    LaggedScalar,
    StepPlan,
    integer,
    needs_long_skips,
    number,
    optional_integer,
    relative_l1,
)
from .schedule import interval_schedule

KEYS = {"threshold": Key("threshold", number), "b": Key("branch", integer), "max": Key("max_interval", integer),
        "start": Key("start_t", optional_integer), "stop": Key("stop_t", optional_integer)}


@dataclass
class AdaptiveState:
    lagged: LaggedScalar = field(default_factory=LaggedScalar)  # the shallow change d, read one step late
    since: int = 0  # steps since the last full step
    deep: torch.Tensor | None = None  # the hidden state entering unit L-b on the last full step
    reference: torch.Tensor | None = None  # the shallow output of the last full step
_NEVER = 1 << 30  # an interval no run reaches: only the window forces full steps


@dataclass(frozen=True)
class AdaptiveSkipCache(CachePolicy):
    threshold: float = 0.05
    branch: int = 1
    max_interval: int = 6
    start_t: int | None = None
    stop_t: int | None = None
    family: str = "adaptive"
    keys = KEYS
    State = AdaptiveState
    decides_at_run_time = True

    def __post_init__(self):
        # `not 0 <= threshold < inf` also catches NaN, which would never refresh
        if not 0 <= self.threshold < float("inf") or self.branch < 1 or self.max_interval < 1:
            raise UserError("adaptive Skip-Cache needs a finite threshold >= 0, b >= 1 and max >= 1")

    def check_model(self, model) -> None:
        needs_long_skips(model, "adaptive Skip-Cache")
        self.check_units(model.num_units)

    def check_units(self, num_units: int) -> None:
        if 2 * self.branch > num_units:
            raise UserError(f"b={self.branch} needs b <= {num_units // 2} for a model of {num_units} units")

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        """Tentative: the window's full steps are full; the others are decided as they run."""
        forced = interval_schedule(timesteps, _NEVER, start_t=self.start_t, stop_t=self.stop_t)
        return [StepPlan(int(t), full, ((0, num_units),)) for t, full in zip(timesteps, forced)]

    def run(self, model, h: torch.Tensor, c, step: StepPlan, state: AdaptiveState) -> tuple[torch.Tensor, StepPlan]:
        L, b = model.num_units, self.branch
        skips: list[torch.Tensor] = []
        shallow = model.run_units(h, c, 0, b, skips)
        change = state.lagged.pop()  # d of the previous step, or None right after a full step
        since = state.since + 1  # steps since the last full step, this one included
        cached = not step.full and state.deep is not None and since < self.max_interval and (
            since == 1 or (change is not None and change * since / (since - 1) < self.threshold))
        if cached:
            state.lagged.push(relative_l1(shallow, state.reference))
            state.since, h = since, state.deep
            ran = StepPlan(step.t, False, ((0, b), (L - b, L)))
        else:
            h = state.deep = model.run_units(shallow, c, b, L - b, skips)
            state.reference, state.since = shallow, 0
            ran = StepPlan(step.t, True, step.units)
        return model.run_units(h, c, L - b, L, skips), ran
