"""The cache seam: a frozen policy, a typed per-run state, and the statistics every run reports.

A *policy* (frozen dataclass) plans a whole sampling run up front from the timesteps, so nothing in
the loop needs a host sync. :meth:`CachePolicy.start` makes a :class:`CacheState` for one run; the
sampler calls ``begin_step(k)`` once per denoising step, and the model's forward calls ``run_units`` on
the :class:`Branch` it was given. The guidance wrapper names the branch of every call: ``cond``,
``uncond``, or ``both`` for the two batched in one call. Each branch keeps its own tensors in an
instance of the policy's ``State`` dataclass, so guidance in one call or in two passes per step, or a
pipeline that calls the model a varying number of times, never mixes them.

A model caches act on implements :class:`skipdit.protocol.DiffusionModel` (``num_units``,
``has_long_skips``, ``sublayers``, ``run_units(h, ctx, start, stop, skips, memo)``, ...).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..errors import UserError

Ranges = tuple[tuple[int, int], ...]  # half-open unit ranges run at a step


@dataclass(frozen=True)
class StepPlan:
    """What one denoising step does: ``full`` recomputes everything; ``units`` are the ranges whose
    blocks run; ``reuse`` names the sublayers (``attn``, ``cross_attn``, ``mlp``, ``temporal_attn`` ...)
    whose kept outputs stand in for their computation inside the units that run. ``guided=False``: the step
    runs no classifier-free guidance, only the conditional branch, whose output is the step's (T-GATE's
    ``cfg=drop`` after the gate); the sampling loop reads it through :attr:`CacheState.guided`."""

    t: int
    full: bool
    units: Ranges
    reuse: tuple[str, ...] = ()
    guided: bool = True

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
    reused: tuple[str, ...] = ()  # sublayers whose outputs were reused, whole or for some tokens (FORA, ToCa, ...)
    # steps of a guided run that ran the conditional branch alone (T-GATE cfg=drop), and their unit evaluations
    unguided_steps: int = 0
    unguided_unit_evals: int = 0

    @property
    def ideal_speedup(self) -> float:
        """Unit evaluations without the cache / with it. A unit that runs with some sublayers reused counts
        as run, so for sublayer caches (FORA, PAB, T-GATE, and ToCa, which recomputes some of the tokens of
        every sublayer) this is a lower bound; ``skipdit bench`` counts MACs instead. In a guided run, a step
        that dropped the unconditional branch evaluates its units once where the others evaluate them twice."""
        if not self.unit_evals:
            return 1.0
        if self.unguided_steps:
            return 2 * self.steps * self.units_per_step / (2 * self.unit_evals - self.unguided_unit_evals)
        return self.steps * self.units_per_step / self.unit_evals

    @classmethod
    def from_plan(cls, plan: Sequence[StepPlan], units_per_step: int, unguided: Collection[int] = ()) -> CacheStats:
        """Stats of the steps ``plan``; ``unguided`` are the positions in it of the steps of a guided run that
        ran the conditional branch alone."""
        full = sum(p.full for p in plan)
        ran = {u for p in plan if not p.full for start, stop in p.units for u in range(start, stop)}
        reused = {name for p in plan for name in p.reuse}
        return cls(len(plan), full, len(plan) - full, sum(p.num_units for p in plan), units_per_step,
                   tuple(sorted(ran)), tuple(sorted(reused)), len(unguided), sum(plan[k].num_units for k in unguided))

    @classmethod
    def uncached(cls, steps: int, units_per_step: int) -> CacheStats:
        return cls(steps, steps, 0, steps * units_per_step, units_per_step)

    def __add__(self, other: CacheStats) -> CacheStats:
        if other.units_per_step != self.units_per_step:
            raise UserError("cannot add stats of models with different unit counts")
        return CacheStats(
            self.steps + other.steps, self.full_steps + other.full_steps, self.cached_steps + other.cached_steps,
            self.unit_evals + other.unit_evals, self.units_per_step,
            tuple(sorted(set(self.cached_units) | set(other.cached_units))),
            tuple(sorted(set(self.reused) | set(other.reused))),
            self.unguided_steps + other.unguided_steps, self.unguided_unit_evals + other.unguided_unit_evals,
        )

    def summary(self) -> str:
        ran = f" (cached steps run units {', '.join(map(str, self.cached_units))} of {self.units_per_step})" \
            if self.cached_steps else ""
        if self.reused:
            ran += f" reusing {', '.join(self.reused)}"
        if self.unguided_steps:
            ran += (f"; {self.unguided_steps} steps ran the conditional branch alone (guidance dropped: no "
                    "unconditional pass)")
        return (
            f"{self.full_steps} full / {self.cached_steps} cached steps{ran}, "
            f"{self.unit_evals} of {self.steps * self.units_per_step} unit evaluations, "
            f"ideal speed-up {self.ideal_speedup:.2f}x"
        )


BRANCHES = ("cond", "uncond", "both")  # what the guidance wrapper calls the model for (``both``: one batch of 2N)


@dataclass
class NoState:
    """The state of a policy that keeps nothing between steps."""


@dataclass
class SublayerState:
    """The kept sublayer outputs of FORA and PAB, keyed ``(unit, sublayer name)``."""

    kept: dict = field(default_factory=dict)


class CachePolicy:
    """Base class of cache policies. Subclasses are frozen dataclasses with a ``State`` dataclass (what one
    guidance branch keeps across the steps of a run) and implement :meth:`plan` and :meth:`run`;
    :meth:`check_model` rejects models they cannot act on."""

    family: str = "?"
    # spec key -> field name, for parse() and spec() (e.g. {"N": "interval"}); each value is read by the
    # field's annotation (see parse_policy)
    keys: ClassVar[dict[str, str]] = {}
    State: ClassVar[type] = NoState
    # True for policies that decide each step while sampling, from one batch-wide indicator of what the model
    # computes (TeaCache, First-Block-Cache, adaptive Skip-Cache). Their plan before a run is only tentative,
    # and a sample's output depends on the other samples of its batch: all of them skip or compute together.
    # Runs are reproducible for the same seeds in the same batches (sample-many keeps batches fixed across
    # process counts and records the batch size), but a seed can come out differently at another batch size.
    # Deciding per sample would mean running the units on a subset of the rows; no policy here does that.
    decides_at_run_time: ClassVar[bool] = False

    @classmethod
    def parse(cls, family: str, args: str, spec: str) -> CachePolicy:
        """The policy ``spec`` (``family:args``) describes; see :func:`parse_policy`."""
        return parse_policy(cls, family, args, spec, cls.keys)

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        raise NotImplementedError

    def run(self, model, h: torch.Tensor, c, step: StepPlan, state) -> tuple[torch.Tensor, StepPlan]:
        """The unit stack at one step, for one branch: its output and what ran (``step`` for a static policy;
        a policy that decides at run time says what it decided). ``state`` is this branch's ``State``."""
        raise NotImplementedError

    def new_state(self, branch: str, states: dict[str, object]) -> object:
        """The ``State`` of guidance branch ``branch``, made on its first call; ``states`` are the run's states
        by branch (T-GATE's ``cfg=drop`` averages over them). Default: a fresh ``State()``."""
        return self.State()

    def check_model(self, model) -> None:
        """Raise :class:`UserError` if this policy cannot be applied to ``model``."""
        self.check_units(model.num_units)

    def check_units(self, num_units: int) -> None:
        """Raise :class:`UserError` if this policy cannot plan for a model of ``num_units`` units."""

    def spec(self) -> str:
        """The canonical spec string; ``parse_cache(policy.spec()) == policy``."""
        return spec_of(self, self.keys)

    def start(self, model, timesteps: Sequence[int]) -> CacheState:
        """A fresh state for one sampling run of ``model`` over ``timesteps`` (original scale)."""
        self.check_model(model)
        plan = [_reusing_only(step, model.sublayers) for step in self.plan(list(timesteps), model.num_units)]
        return CacheState(self, plan, model.num_units)


def needs_long_skips(model, what: str) -> None:
    """A :class:`UserError` unless ``model`` has long skips (the caches that use them)."""
    if not model.has_long_skips:
        raise UserError(f"{what} needs a model with long skips (a -skip preset); for a vanilla DiT use a peer cache")


def needs_vanilla(model, message: str) -> None:
    """A :class:`UserError` with ``message`` if ``model`` has long skips (the caches that would cut them)."""
    if model.has_long_skips:
        raise UserError(message)


def _reusing_only(step: StepPlan, present: Collection[str]) -> StepPlan:
    """``step`` reusing only the sublayers the model has; a step left with nothing to reuse is full (PAB's
    cross-attention range on a model without cross-attention)."""
    kept = tuple(name for name in step.reuse if name in present)
    if kept == step.reuse:
        return step
    return dataclasses.replace(step, reuse=kept, full=step.full or not kept)


@dataclass
class CacheState:
    """Tensors and counters of one sampling run, never shared between runs: the plan, the step under way,
    one ``policy.State`` per guidance branch, and what each step did."""

    policy: CachePolicy
    plan: list[StepPlan]
    units_per_step: int
    step: int = -1
    branches: dict[str, object] = field(default_factory=dict)  # branch name -> its policy.State
    done: dict[int, StepPlan] = field(default_factory=dict)  # what each step run so far did
    called: dict[int, set[str]] = field(default_factory=dict)  # the branches each step called

    def begin_step(self, k: int) -> None:
        if not 0 <= k < len(self.plan):
            raise UserError(f"step {k} is outside the planned {len(self.plan)} steps")
        self.step = k

    @property
    def guided(self) -> bool:
        """Whether the step under way runs classifier-free guidance (:attr:`StepPlan.guided`): the sampling loop
        runs the conditional branch alone where it does not."""
        if self.step < 0:
            raise RuntimeError("CacheState.begin_step() must be called before the model")
        return self.plan[self.step].guided

    def branch(self, name: str) -> Branch:
        """What the model's forward gets as ``cache=`` for a call of branch ``name``."""
        if name not in BRANCHES:
            raise ValueError(f"unknown guidance branch {name!r}; valid: {', '.join(BRANCHES)}")
        return Branch(self, name)

    def state_of(self, branch: str):
        """The policy's state of ``branch``, made on its first call."""
        if branch not in self.branches:
            self.branches[branch] = self.policy.new_state(branch, self.branches)
        return self.branches[branch]

    def run_units(self, model, h: torch.Tensor, c, branch: str = "cond") -> torch.Tensor:
        if self.step < 0:
            raise RuntimeError("CacheState.begin_step() must be called before the model")
        out, ran = self.policy.run(model, h, c, self.plan[self.step], self.state_of(branch))
        self.record(ran)
        self.called.setdefault(self.step, set()).add(branch)
        return out

    def record(self, ran: StepPlan) -> None:
        """What the current step did; with two branches per step (guidance in two passes) the first counts."""
        self.done.setdefault(self.step, ran)

    @property
    def stats(self) -> CacheStats:
        """Stats of the steps actually run so far (an interrupted run reports what it did). In a run that
        guided (some step called an unconditional branch), the steps that called ``cond`` alone count as
        unguided: measured from the calls, so a run without guidance has none."""
        steps = sorted(self.done)
        guided = any(name != "cond" for names in self.called.values() for name in names)
        unguided = [i for i, k in enumerate(steps) if guided and self.called.get(k) == {"cond"}]
        return CacheStats.from_plan([self.done[k] for k in steps], self.units_per_step, unguided)


@dataclass(frozen=True)
class Branch:
    """One guidance branch of a :class:`CacheState`: the ``cache=`` a model's forward receives. The model
    calls ``cache.run_units(self, h, ctx)`` instead of running its units."""

    state: CacheState
    name: str

    def run_units(self, model, h: torch.Tensor, c) -> torch.Tensor:
        return self.state.run_units(model, h, c, self.name)


_ITEM = re.compile(r"\s*([A-Za-z_][\w]*)\s*(<=|<|=)\s*(\S+?)\s*")


def parse_items(text: str, spec: str) -> list[tuple[str, str, str]]:
    """``"N=3,b=1,stop<50"`` -> ``[("N", "=", "3"), ("b", "=", "1"), ("stop", "<", "50")]``."""
    items = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _ITEM.fullmatch(part)
        if not match:
            raise UserError(f"malformed cache spec {spec!r}: cannot read {part!r} (expected key=value)")
        items.append(match.groups())
    return items


def parse_int(value: str, key: str, spec: str, *, minimum: int | None = None, optional: bool = False) -> int | None:
    if optional and value.lower() in ("none", "off"):
        return None
    return _parse_number(int, "an integer", value, key, spec, minimum)


def parse_float(value: str, key: str, spec: str, *, minimum: float | None = None) -> float:
    return _parse_number(float, "a number", value, key, spec, minimum)


def _parse_number(kind, what: str, value: str, key: str, spec: str, minimum):
    try:
        number = kind(value)
    except ValueError:
        raise UserError(f"malformed cache spec {spec!r}: {key} must be {what}, got {value!r}") from None
    if not math.isfinite(number):  # float("nan") parses; a NaN threshold never (or always) triggers
        raise UserError(f"malformed cache spec {spec!r}: {key} must be a finite number, got {value!r}")
    if minimum is not None and number < minimum:
        raise UserError(f"malformed cache spec {spec!r}: {key} must be >= {minimum}, got {number}")
    return number


Reader = Callable[[str, str, str], object]  # (value text, key, whole spec) -> field value


def integer(value: str, key: str, spec: str) -> int:
    """``N=3``: an integer >= 0 (a policy's own check says what more it needs)."""
    return parse_int(value, key, spec, minimum=0)


def optional_integer(value: str, key: str, spec: str) -> int | None:
    """``stop=50``, or ``stop=none`` / ``off``."""
    return parse_int(value, key, spec, minimum=0, optional=True)


def number(value: str, key: str, spec: str) -> float:
    return parse_float(value, key, spec)


def numbers(value: str, key: str, spec: str) -> tuple[float, ...]:
    """``coef=1.5/-0.2/0.01``: ``/``-separated numbers."""
    return tuple(parse_float(v, key, spec) for v in value.split("/"))


@dataclass(frozen=True)
class Key:
    """One key of a spec: the policy field it sets and how its value is read. ``ops`` are the comparisons it
    takes, each with the other fields it sets (Skip-Cache's ``stop<50`` is a strict reset test); the first
    one is what :func:`spec_of` writes for a field that is ``None``."""

    field: str
    read: Reader
    ops: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = (("=", ()),)


def parse_policy(cls, family: str, args: str, spec: str, keys: dict[str, Key], **fixed) -> CachePolicy:
    """A policy dataclass ``cls`` from ``key=value`` items, read through the key table ``keys``; ``fixed``
    are the fields of a preset, which the items override."""
    values = dict(fixed)
    for key, op, value in parse_items(args, spec):
        if key not in keys:
            valid = ", ".join(dict.fromkeys(keys))
            raise UserError(f"malformed cache spec {spec!r}: unknown key {key!r}; valid: {valid}")
        entry = keys[key]
        ops = dict(entry.ops)
        if op not in ops:
            others = [name for name, k in keys.items() if len(k.ops) > 1]
            also = f"; only {', '.join(map(repr, others))} take{'s' * (len(others) == 1)} '<' or '<='" if others else ""
            raise UserError(f"malformed cache spec {spec!r}: write {key}={value}{also}")
        values[entry.field] = entry.read(value, key, spec)
        values.update(ops[op])
    try:
        return cls(**values, family=family)
    except ValueError as err:
        raise UserError(f"malformed cache spec {spec!r}: {err}") from None


def spec_of(policy: CachePolicy, keys: dict[str, Key]) -> str:
    """The spec string that :func:`parse_policy` reads back into ``policy`` (one key per field: the first)."""
    def show(value) -> str:
        if value is None:
            return "none"
        if isinstance(value, tuple):
            return "/".join(f"{v:g}" for v in value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    def op(entry: Key, value) -> str:
        if value is None:
            return entry.ops[0][0]
        return next(name for name, sets in entry.ops if all(getattr(policy, f) == v for f, v in sets))

    first = {}
    for key, entry in keys.items():
        first.setdefault(entry.field, (key, entry))
    items = [f"{key}{op(entry, getattr(policy, entry.field))}{show(getattr(policy, entry.field))}"
             for key, entry in first.values()]
    return f"{policy.family}:" + ",".join(items)


def sublayer_memo(kept: dict, reuse: Collection[str], keep: Collection[str] | None = None):
    """A memo (see :func:`skipdit.models.skip.sublayer`) that returns the kept output of the sublayers
    named in ``reuse`` and computes every other one, keeping those named in ``keep`` (default: all) by
    reference for later steps."""
    def memo(key, fn, *args):
        if key[1] in reuse and key in kept:
            return kept[key]
        out = fn(*args)
        if keep is None or key[1] in keep:
            kept[key] = out
        return out

    return memo


def relative_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``mean|a - b| / mean|b|`` as a 0-d tensor (TeaCache's and First-Block-Cache's change indicator)."""
    return (a - b).abs().mean() / b.abs().mean().clamp_min(1e-12)


class LaggedScalar:
    """A 0-d device tensor read one step later, so a decision never waits for the step that made it.

    On CUDA the value is copied into pinned memory with ``non_blocking=True`` right after it is computed
    (an event marks the copy); :meth:`pop` at the next step waits only for that copy, which the rest of
    the previous step has long overtaken. On CPU it is a plain read.
    """

    def __init__(self):
        self._pending: torch.Tensor | None = None
        self._host: torch.Tensor | None = None  # CUDA: one pinned buffer and one event, reused every step
        self._event: torch.cuda.Event | None = None

    def push(self, value: torch.Tensor) -> None:
        value = value.detach().float()
        if not value.is_cuda:
            self._pending = value
            return
        if self._host is None:
            self._host = torch.empty((), dtype=torch.float32, pin_memory=True)
            self._event = torch.cuda.Event()
        self._host.copy_(value, non_blocking=True)
        self._event.record()
        self._pending = self._host

    def pop(self) -> float | None:
        """The value pushed last (a push replaces one not read yet), or ``None``."""
        if self._pending is None:
            return None
        value, self._pending = self._pending, None
        if value is self._host:
            self._event.synchronize()
        return float(value)
