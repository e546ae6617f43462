"""The cache seam: a frozen policy, a per-run state, and the statistics every run reports.

A *policy* (frozen dataclass) plans a whole sampling run up front from the timesteps, so nothing in
the loop needs a host sync. A :class:`CacheState` is made for one run by :meth:`CachePolicy.start`;
the sampler calls ``begin_step(k)`` once per denoising step and the model calls ``run_units`` on each
forward. Several calls in one step (guidance in two passes) get separate slots for their tensors.

A model that caches act on exposes ``num_units``, ``has_long_skips`` and
``run_units(h, c, start, stop, skips)`` (see ``skipdit.models.dit.DiT``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

Ranges = tuple[tuple[int, int], ...]  # half-open unit ranges run at a step


@dataclass(frozen=True)
class StepPlan:
    """What one denoising step does: ``full`` recomputes everything; ``units`` are the ranges run."""

    t: int
    full: bool
    units: Ranges

    @property
    def num_units(self) -> int:
        return sum(stop - start for start, stop in self.units)


@dataclass(frozen=True)
class CacheStats:
    """What a run did. ``ideal_speedup`` = unit evaluations without the cache / with it;
    ``cached_units`` are the units that ran on cached steps (e.g. ``(0, 13)`` for Skip-Cache b=1 on Latte)."""

    steps: int
    full_steps: int
    cached_steps: int
    unit_evals: int
    units_per_step: int
    cached_units: tuple[int, ...] = ()

    @property
    def ideal_speedup(self) -> float:
        return self.steps * self.units_per_step / self.unit_evals if self.unit_evals else 1.0

    @classmethod
    def from_plan(cls, plan: Sequence[StepPlan], units_per_step: int) -> CacheStats:
        full = sum(p.full for p in plan)
        ran = {u for p in plan if not p.full for start, stop in p.units for u in range(start, stop)}
        return cls(len(plan), full, len(plan) - full, sum(p.num_units for p in plan), units_per_step,
                   tuple(sorted(ran)))

    @classmethod
    def uncached(cls, steps: int, units_per_step: int) -> CacheStats:
        return cls(steps, steps, 0, steps * units_per_step, units_per_step)

    def __add__(self, other: CacheStats) -> CacheStats:
        if other.units_per_step != self.units_per_step:
            raise ValueError("cannot add stats of models with different unit counts")
        return CacheStats(
            self.steps + other.steps, self.full_steps + other.full_steps, self.cached_steps + other.cached_steps,
            self.unit_evals + other.unit_evals, self.units_per_step,
            tuple(sorted(set(self.cached_units) | set(other.cached_units))),
        )

    def summary(self) -> str:
        ran = f" (cached steps run units {', '.join(map(str, self.cached_units))} of {self.units_per_step})" \
            if self.cached_steps else ""
        return (
            f"{self.full_steps} full / {self.cached_steps} cached steps{ran}, "
            f"{self.unit_evals} of {self.steps * self.units_per_step} unit evaluations, "
            f"ideal speed-up {self.ideal_speedup:.2f}x"
        )


class CachePolicy:
    """Base class of cache policies. Subclasses are frozen dataclasses and implement
    :meth:`plan` and :meth:`run`; :meth:`check_model` rejects models they cannot act on."""

    family: str = "?"

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        raise NotImplementedError

    def run(self, model, h: torch.Tensor, c: torch.Tensor, step: StepPlan, slot: dict) -> torch.Tensor:
        raise NotImplementedError

    def check_model(self, model) -> None:
        """Raise ``ValueError`` if this policy cannot be applied to ``model``."""
        self.check_units(model.num_units)

    def check_units(self, num_units: int) -> None:
        """Raise ``ValueError`` if this policy cannot plan for a model of ``num_units`` units."""

    def spec(self) -> str:
        raise NotImplementedError

    def start(self, model, timesteps: Sequence[int]) -> CacheState:
        """A fresh state for one sampling run of ``model`` over ``timesteps`` (original scale)."""
        self.check_model(model)
        return CacheState(self, self.plan(list(timesteps), model.num_units), model.num_units)


@dataclass
class CacheState:
    """Tensors and counters of one sampling run. Never shared between runs."""

    policy: CachePolicy
    plan: list[StepPlan]
    units_per_step: int
    step: int = -1
    _call: int = 0
    _slots: list[dict] = field(default_factory=list)
    units_run: dict[int, Ranges] = field(default_factory=dict)

    def begin_step(self, k: int) -> None:
        if not 0 <= k < len(self.plan):
            raise ValueError(f"step {k} is outside the planned {len(self.plan)} steps")
        self.step, self._call = k, 0

    def run_units(self, model, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.step < 0:
            raise RuntimeError("CacheState.begin_step() must be called before the model")
        if self._call == len(self._slots):
            self._slots.append({})
        slot = self._slots[self._call]
        self._call += 1
        step = self.plan[self.step]
        self.units_run.setdefault(self.step, step.units)
        return self.policy.run(model, h, c, step, slot)

    @property
    def stats(self) -> CacheStats:
        """Stats of the steps actually run so far (an interrupted run reports what it did)."""
        done = [self.plan[k] for k in sorted(self.units_run)]
        return CacheStats.from_plan(done, self.units_per_step)


_ITEM = re.compile(r"\s*([A-Za-z_][\w]*)\s*(<=|<|=)\s*(\S+?)\s*")


def parse_items(text: str, spec: str) -> list[tuple[str, str, str]]:
    """``"N=3,b=1,stop<50"`` -> ``[("N", "=", "3"), ("b", "=", "1"), ("stop", "<", "50")]``."""
    items = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _ITEM.fullmatch(part)
        if not match:
            raise ValueError(f"malformed cache spec {spec!r}: cannot read {part!r} (expected key=value)")
        items.append(match.groups())
    return items


def parse_int(value: str, key: str, spec: str, *, minimum: int | None = None, optional: bool = False) -> int | None:
    if optional and value.lower() in ("none", "off"):
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"malformed cache spec {spec!r}: {key} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"malformed cache spec {spec!r}: {key} must be >= {minimum}, got {number}")
    return number
