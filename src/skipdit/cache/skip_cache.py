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
from .base import CachePolicy, StepPlan, parse_int, parse_items
from .schedule import interval_schedule


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

    def __post_init__(self):
        if self.interval < 1:
            raise UserError(f"Skip-Cache interval N must be >= 1, got {self.interval}")
        if self.branch < 1:
            raise UserError(f"Skip-Cache branch b must be >= 1, got {self.branch}")

    def check_model(self, model) -> None:
        if not getattr(model, "has_long_skips", False):
            raise UserError(
                "Skip-Cache needs a model with long skips (a -skip preset); for a vanilla DiT use a peer cache"
            )
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

    def run(self, model, h: torch.Tensor, c: torch.Tensor, step: StepPlan, slot: dict) -> torch.Tensor:
        L, b = model.num_units, self.branch
        skips: list[torch.Tensor] = []
        if step.full:
            h = model.run_units(h, c, 0, L - b, skips)
            slot["deep"] = h  # the state entering unit L-b, before its long-skip fusion; kept by reference
        else:
            model.run_units(h, c, 0, b, skips)  # pushes the b fresh shallow outputs for the long skips
            h = slot["deep"]
        return model.run_units(h, c, L - b, L, skips)

    def spec(self) -> str:
        start = "none" if self.start_t is None else self.start_t
        stop = "none" if self.stop_t is None else self.stop_t
        op = "=" if self.stop_inclusive or self.stop_t is None else "<"
        return f"{self.family}:N={self.interval},b={self.branch},start={start},stop{op}{stop}"


# Official constants (reference §B.2); N defaults to 2 everywhere.
PRESETS = {
    "skip": dict(branch=1, start_t=None, stop_t=None, stop_inclusive=True),
    "c2i": dict(branch=4, start_t=None, stop_t=20, stop_inclusive=True),
    "c2v": dict(branch=1, start_t=900, stop_t=50, stop_inclusive=False),
    "t2v": dict(branch=1, start_t=700, stop_t=50, stop_inclusive=True),
    "t2i": dict(branch=1, start_t=700, stop_t=50, stop_inclusive=True),
}
# Units (L) of the official model of each task, for planning without a model.
PRESET_UNITS = {"skip": 28, "c2i": 28, "c2v": 14, "t2v": 28, "t2i": 40}
# The official sampler's timesteps (reference §C): ADM DDPM-250 for c2i/c2v, diffusers DDIM-50
# "leading" (980, 960, ..., 0) for t2v, diffusers DDPM-100 "leading" + offset 1 (991, ..., 1) for t2i.
PRESET_RESPACING = {"skip": "250", "c2i": "250", "c2v": "250", "t2v": "ddim50", "t2i": "leading100+1"}

_OFFICIAL_T2V = re.compile(r"N(\d+)-(\d+)-(\d+)")  # "N2-700-50": interval, start_t, stop_t


def parse_skip_cache(family: str, args: str, spec: str) -> SkipCache:
    """``c2i:N=3``, ``t2v:N2-700-50``, ``skip:N=3,b=1,start=700,stop<50`` ..."""
    fields = dict(PRESETS[family], interval=2)
    official = _OFFICIAL_T2V.fullmatch(args.strip())
    if official:
        fields.update(interval=int(official[1]), start_t=int(official[2]), stop_t=int(official[3]))
        return SkipCache(**fields, family=family)
    for key, op, value in parse_items(args, spec):
        if op != "=" and key != "stop":
            raise UserError(f"malformed cache spec {spec!r}: only 'stop' takes '<' or '<='")
        if key in ("N", "interval"):
            fields["interval"] = parse_int(value, "N", spec, minimum=1)
        elif key in ("b", "branch"):
            fields["branch"] = parse_int(value, "b", spec, minimum=1)
        elif key in ("start", "start_t"):
            fields["start_t"] = parse_int(value, "start", spec, minimum=0, optional=True)
        elif key in ("stop", "stop_t"):
            fields["stop_t"] = parse_int(value, "stop", spec, minimum=0, optional=True)
            fields["stop_inclusive"] = op != "<"
        else:
            raise UserError(
                f"malformed cache spec {spec!r}: unknown key {key!r}; valid: N, b, start, stop"
            )
    return SkipCache(**fields, family=family)
