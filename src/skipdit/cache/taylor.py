"""Forecasting Skip-Cache: on a cached step, extrapolate the deep hidden state instead of reusing it.

Skip-Cache keeps the hidden state entering unit ``L-b`` on a full step and reuses it unchanged on the cached
steps after it. A Skip-DiT's deep feature changes smoothly across steps (the paper's Figure 1a), so it can be
predicted: this policy keeps the deep states of the last ``order + 1`` full steps and, on a cached step at
timestep ``t``, evaluates the polynomial through them at ``t`` (Newton's divided differences in the timestep,
TaylorSeer's finite-difference rule applied to the long-skip cache point, with any step spacing). The
shallow units ``0..b-1`` and the deep units ``L-b..L-1`` run as in Skip-Cache, so each cached step costs the
same; ``order=0`` is Skip-Cache exactly.

* ``correct=γ`` (hybrid): the shallow units run anyway, so the error of the same forecast applied to the
  shallow feature (the output of unit ``b-1``) is known at no cost; ``γ`` times it is added to the deep
  forecast. ``γ = 0`` (the default) is the pure forecast.
* ``mask=FCCRFC...`` (three levels, one letter per step, replacing the interval schedule): ``F`` a full step,
  ``C`` a cached step as above, ``R`` a whole-step reuse that runs no unit at all and adds the last step's
  residual (output minus input of the unit stack) to this step's input, as TeaCache does. The window
  (``start`` / ``stop``) still forces full steps.

    taylor:N=3,order=2            taylor:N=3,order=1,correct=0.5            taylor:order=1,mask=FCCFCRFCC...

Until ``order + 1`` full steps have been seen, the forecast uses those there are (a lower order). The states are
kept by reference; the differences are taken in float32. A sampler that calls the model twice per step (Heun)
keeps the first call's state, the one at the step's timestep, and its cached steps forecast both calls at it;
order 0 keeps the last call's, as Skip-Cache does. On Heun the forecast loses to reuse
(``benchmarks/forecast_check.py --samplers heun:10 --seeds 4``: N=2, 27.9 / 28.1 dB at orders 1 / 2 against
Skip-Cache's 30.3 dB): the corrector's state, the most recent one, is not used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from .base import Key, StepPlan, integer, number, parse_policy
from .schedule import interval_schedule
from .skip_cache import KEYS as SKIP_KEYS
from .skip_cache import PRESETS, SkipCache

MAX_ORDER = 4
LEVELS = {"F": "full", "C": "cached", "R": "reuse"}


def mask_string(value: str, key: str, spec: str) -> str | None:
    if value.strip().lower() == "none":
        return None
    mask = value.strip().upper()
    if not mask or set(mask) - set(LEVELS):
        raise UserError(f"malformed cache spec {spec!r}: {key}={value!r} must be letters F (full), C (cached) "
                        "and R (reuse), one per step")
    return mask


KEYS = {**SKIP_KEYS, "order": Key("order", integer), "correct": Key("correct", number),
        "mask": Key("mask", mask_string)}


@dataclass
class TaylorState:
    # (t, deep, shallow) of the last order+1 full steps, oldest first; tensors by reference
    history: list[tuple[float, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    residual: torch.Tensor | None = None  # output minus input of the unit stack, of the last step that ran units


def forecast(points: Sequence[tuple[float, torch.Tensor]], t: float) -> torch.Tensor:
    """The value at ``t`` of the polynomial of degree ``len(points) - 1`` through ``points`` ``(t_i, y_i)``
    (Newton's divided differences; exact for a polynomial of at most that degree). One point: ``y_0`` itself."""
    if len(points) == 1:
        return points[0][1]
    ts = [float(p[0]) for p in points]
    if len(set(ts)) != len(ts):
        raise RuntimeError(f"forecast needs distinct timesteps, got {ts}")
    dtype = points[-1][1].dtype
    table = [p[1].float() for p in points]  # after round j: table[i] is the divided difference f[t_i .. t_i+j]
    coefficients = [table[0]]
    for j in range(1, len(points)):
        table = [(table[i + 1] - table[i]) / (ts[i + j] - ts[i]) for i in range(len(table) - 1)]
        coefficients.append(table[0])
    out = coefficients[-1]
    for j in range(len(points) - 2, -1, -1):  # Horner on the Newton form
        out = coefficients[j] + (t - ts[j]) * out
    return out.to(dtype)


@dataclass(frozen=True)
class TaylorSkipCache(SkipCache):
    """Skip-Cache (``interval``, ``branch``, window) whose cached steps forecast the deep state from the last
    ``order + 1`` full steps; ``correct`` adds that multiple of the shallow forecast's error; ``mask`` gives each
    step's level (F / C / R) instead of the interval."""

    order: int = 1
    correct: float = 0.0
    mask: str | None = None
    family: str = "taylor"
    keys = KEYS
    State = TaylorState

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.order <= MAX_ORDER:
            raise UserError(f"forecast order must be 0..{MAX_ORDER}, got {self.order}")
        if self.mask is not None and self.mask[0] != "F":
            raise UserError(f"mask {self.mask!r} must start with F: the first step has nothing to forecast from")

    @classmethod
    def parse(cls, family: str, args: str, spec: str) -> TaylorSkipCache:
        return parse_policy(cls, family, args, spec, cls.keys, **PRESETS["skip"])

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        if self.mask is None:
            return super().plan(timesteps, num_units)
        if len(self.mask) != len(timesteps):
            raise UserError(f"mask has {len(self.mask)} letters for {len(timesteps)} steps; give one per step")
        window = interval_schedule(timesteps, 1 << 30, start_t=self.start_t, stop_t=self.stop_t,
                                   stop_inclusive=self.stop_inclusive)  # full where the window forces it
        b, L = self.branch, num_units
        plans = []
        for t, letter, forced in zip(timesteps, self.mask, window):
            if forced or letter == "F":
                plans.append(StepPlan(int(t), True, ((0, L),)))
            else:
                plans.append(StepPlan(int(t), False, ((0, b), (L - b, L)) if letter == "C" else ()))
        return plans

    def run(self, model, h: torch.Tensor, c, step: StepPlan, state: TaylorState) -> tuple[torch.Tensor, StepPlan]:
        L, b = model.num_units, self.branch
        if not step.units:  # R: the whole stack's last residual on this step's input
            return h + state.residual, step
        skips: list[torch.Tensor] = []
        if step.full:
            deep = model.run_units(h, c, 0, L - b, skips)  # the state entering unit L-b, before fusion
            record = (float(step.t), deep, skips[b - 1])  # skips[b-1]: unit b-1's output
            if not self.order:  # Skip-Cache: the last call's state, whatever its timestep
                state.history = [record]
            elif not state.history or state.history[-1][0] != step.t:  # a step's first call, at t (Heun calls twice)
                state.history = [*state.history[max(len(state.history) - self.order, 0):], record]
        else:
            model.run_units(h, c, 0, b, skips)  # pushes the b fresh shallow outputs for the long skips
            deep = forecast([(t, d) for t, d, _ in state.history], float(step.t))
            if self.correct:
                shallow = forecast([(t, s) for t, _, s in state.history], float(step.t))
                deep = deep + self.correct * (skips[b - 1] - shallow)
        out = model.run_units(deep, c, L - b, L, skips)
        if self.mask is not None and "R" in self.mask:
            state.residual = out - h
        return out, step


def with_order(policy: SkipCache, order: int) -> TaylorSkipCache:
    """The forecasting form of a Skip-Cache ``policy`` (same interval, branch and window)."""
    fields = {f.name: getattr(policy, f.name) for f in dataclasses.fields(SkipCache) if f.name != "family"}
    return TaylorSkipCache(**fields, order=order)
