"""Skip-Cache (reference §B): on a full step run every unit and keep the hidden state that enters
unit ``L-b``; on a cached step run only the shallow units ``0..b-1`` (their fresh outputs feed the
long skips) and the deep units ``L-b..L-1``, which start from the kept hidden state.

Presets reproduce the official schedules (§B.2):

========  ====  ============================  ==========================
preset     b    always full                    reset (counter and cache)
========  ====  ============================  ==========================
``c2i``     4   never (start 1000 is dead)     t <= 20
``c2v``     1   t >= 900                       t < 50
``t2v``     1   t >= 700                       t <= 50   (official ``N2-700-50``)
``t2i``     1   t >= 700                       t <= 50
========  ====  ============================  ==========================
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import UserError
from .base import CachePolicy, Key, StepPlan, integer, needs_long_skips, optional_integer, parse_policy
from .schedule import interval_schedule

_STOP_OPS = (("=", (("stop_inclusive", True),)), ("<=", (("stop_inclusive", True),)),
             ("<", (("stop_inclusive", False),)))
KEYS = {
    "N": Key("interval", integer), "b": Key("branch", integer), "start": Key("start_t", optional_integer),
    "stop": Key("stop_t", optional_integer, _STOP_OPS),
    # the field names work too
    "interval": Key("interval", integer), "branch": Key("branch", integer),
    "start_t": Key("start_t", optional_integer), "stop_t": Key("stop_t", optional_integer, _STOP_OPS),
}


@dataclass
class SkipCacheState:
    deep: torch.Tensor | None = None  # the hidden state entering unit L-b on the last full step, by reference


@dataclass(frozen=True)
class SkipCache(CachePolicy):
    """``interval`` N: a full step every N steps; ``branch`` b: units run at each end on cached steps;
    steps with ``t >= start_t`` are always full; at ``t <= stop_t`` (``t < stop_t`` if not
    ``stop_inclusive``) the counter and the cache reset, so the next step is full."""

    interval: int = 2
    branch: int = 1
    start_t: int | None = None
    stop_t: int | None = None
    stop_inclusive: bool = True
    family: str = "skip"
    keys = KEYS
    State = SkipCacheState

    def __post_init__(self):
        if self.interval < 1:
            raise UserError(f"Skip-Cache interval N must be >= 1, got {self.interval}")
        if self.branch < 1:
            raise UserError(f"Skip-Cache branch b must be >= 1, got {self.branch}")

    @classmethod
    def parse(cls, family: str, args: str, spec: str) -> SkipCache:
        """``c2i:N=3``, ``t2v:N2-700-50``, ``skip:N=3,b=1,start=700,stop<50`` ...: the preset's fields, then
        the items."""
        official = _OFFICIAL_T2V.fullmatch(args.strip())
        if official:
            fields = dict(PRESETS[family], interval=int(official[1]), start_t=int(official[2]),
                          stop_t=int(official[3]))
            return cls(**fields, family=family)
        return parse_policy(cls, family, args, spec, cls.keys, **PRESETS[family])

    def check_model(self, model) -> None:
        needs_long_skips(model, "Skip-Cache")
        self.check_units(model.num_units)

    def check_units(self, num_units: int) -> None:
        if 2 * self.branch > num_units:
            raise UserError(
                f"Skip-Cache branch b={self.branch} needs b <= {num_units // 2} for a model of {num_units} units"
            )

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        flags = interval_schedule(
            timesteps, self.interval, start_t=self.start_t, stop_t=self.stop_t, stop_inclusive=self.stop_inclusive
        )
        b, L = self.branch, num_units
        cached = ((0, b), (L - b, L))
        return [StepPlan(int(t), full, ((0, L),) if full else cached) for t, full in zip(timesteps, flags)]

    def run(self, model, h: torch.Tensor, c, step: StepPlan, state: SkipCacheState) -> tuple[torch.Tensor, StepPlan]:
        L, b = model.num_units, self.branch
        skips: list[torch.Tensor] = []
        if step.full:
            h = state.deep = model.run_units(h, c, 0, L - b, skips)  # the state entering unit L-b, before fusion
        else:
            model.run_units(h, c, 0, b, skips)  # pushes the b fresh shallow outputs for the long skips
            h = state.deep
        return model.run_units(h, c, L - b, L, skips), step


# Official constants (reference §B.2); N defaults to 2 everywhere.
PRESETS = {
    "skip": dict(interval=2, branch=1, start_t=None, stop_t=None, stop_inclusive=True),
    "c2i": dict(interval=2, branch=4, start_t=None, stop_t=20, stop_inclusive=True),
    "c2v": dict(interval=2, branch=1, start_t=900, stop_t=50, stop_inclusive=False),
    "t2v": dict(interval=2, branch=1, start_t=700, stop_t=50, stop_inclusive=True),
    "t2i": dict(interval=2, branch=1, start_t=700, stop_t=50, stop_inclusive=True),
}
# Units (L) of the official model of each task, for planning without a model.
PRESET_UNITS = {"skip": 28, "c2i": 28, "c2v": 14, "t2v": 28, "t2i": 40}
# The official sampler's timesteps (reference §C): ADM DDPM-250 for c2i/c2v, diffusers DDIM-50
# "leading" (980, 960, ..., 0) for t2v, diffusers DDPM-100 "leading" + offset 1 (991, ..., 1) for t2i.
PRESET_RESPACING = {"skip": "250", "c2i": "250", "c2v": "250", "t2v": "ddim50", "t2i": "leading100+1"}

_OFFICIAL_T2V = re.compile(r"N(\d+)-(\d+)-(\d+)")  # "N2-700-50": interval, start_t, stop_t
