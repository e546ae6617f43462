"""Calibration and tuning: the layer above ``sampling`` that samples to choose a cache's settings.

* :func:`tune` searches the Skip-Cache schedule (interval N, branch b, start and stop windows; for the
  forecasting family ``taylor`` also the order and explicit per-step masks) for the best fidelity at a target
  speed-up, and reports the Pareto front of what it sampled: ``skipdit cache tune``.
* :func:`calibrate_teacache` fits TeaCache's rescaling polynomial for a model: ``skipdit cache
  calibrate-teacache``.

The search is cheap where it can be. Every candidate's ideal speed-up comes from its plan over the run's
timesteps (no model call); candidates below the target are dropped, and specs that give the same step
plan on this sampler are run once. Only the survivors are sampled on the calibration seeds and ranked
by PSNR against the uncached run (SSIM breaks ties), the fidelity convention of reference §E.1.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .cache import CacheStats, SkipCache, StepPlan, TaylorSkipCache
from .cache.base import relative_l1
from .cache.skip_cache import PRESETS
from .cache.taylor import with_order
from .errors import UserError
from .metrics.fidelity import SSIM_WINDOW, psnr, ssim
from .sampling import Condition, Runtime, Sampling, denoise, generate

DEFAULT_STARTS: tuple[int | None, ...] = (None, 900, 800, 700)
DEFAULT_STOPS: tuple[int | None, ...] = (None, 50, 20)
DEFAULT_ORDERS = (0, 1, 2)  # forecast orders the taylor family tries
MAX_DEFAULT_BRANCHES = 4
FAMILIES = (*PRESETS, "taylor")
SELECTIONS = ("closest", "spread")


@dataclass(frozen=True)
class TuneCandidate:
    """One evaluated schedule. ``psnr`` and ``ssim`` are means over the calibration seeds (``ssim`` is
    ``None`` for images smaller than its 11-pixel window); ``measured_speedup`` is uncached ÷ cached time."""

    spec: str
    policy: SkipCache
    ideal_speedup: float
    full_steps: int
    cached_steps: int
    psnr: float
    ssim: float | None
    seconds: float
    measured_speedup: float

    def row(self) -> dict:
        """A JSON-ready row (an infinite PSNR, i.e. identical images, becomes ``None``)."""
        return dict(spec=self.spec, ideal_speedup=self.ideal_speedup, measured_speedup=self.measured_speedup,
                    psnr=self.psnr if math.isfinite(self.psnr) else None, ssim=self.ssim,
                    full_steps=self.full_steps, cached_steps=self.cached_steps, seconds=self.seconds)


@dataclass(frozen=True)
class TuneResult:
    """The candidates ranked best first, and the counts of the search that led to them."""

    target_speedup: float
    candidates: list[TuneCandidate]
    uncached_seconds: float
    considered: int  # specs enumerated
    reachable: int  # distinct plans at or above the target (within the tolerance)
    duplicates: int  # reachable specs dropped because an earlier spec has the same plan
    seeds: list[int] = field(default_factory=list)

    @property
    def best(self) -> TuneCandidate:
        return self.candidates[0]

    @property
    def measured_speedup(self) -> float:
        """The best candidate's measured speed-up (uncached time ÷ its time, in one process)."""
        return self.best.measured_speedup

    @property
    def pareto(self) -> list[TuneCandidate]:
        """The sampled candidates no other beats on both ideal speed-up and PSNR, fastest first."""
        front: list[TuneCandidate] = []
        for cand in sorted(self.candidates, key=lambda c: (-c.ideal_speedup, -c.psnr)):
            if not front or cand.psnr > front[-1].psnr:
                front.append(cand)
        return front


def tune(
    model, target_speedup: float, seeds: Sequence[int], condition: Condition | int | Sequence[int] | None = None, *,
    sampling: Sampling = Sampling(), runtime: Runtime = Runtime(), family: str = "skip",
    intervals: Iterable[int] = range(2, 9), branches: Iterable[int] | None = None,
    starts: Iterable[int | None] = DEFAULT_STARTS, stops: Iterable[int | None] = DEFAULT_STOPS,
    orders: Iterable[int] = DEFAULT_ORDERS, masks: bool = False, tolerance: float = 0.05,
    max_candidates: int = 24, select: str = "closest", progress: bool = True,
) -> TuneResult:
    """The Skip-Cache schedule of ``model`` with the best fidelity at ``target_speedup``.

    Candidates are every combination of ``intervals`` (N), ``branches`` (b; default 1..L//2, at most four),
    ``starts`` and ``stops`` (``None``: no window); for ``family="taylor"`` (forecasting Skip-Cache) each also
    with every forecast order of ``orders``, and with ``masks`` the per-step masks of :func:`graded_masks`
    (full steps spaced more densely at one end of sampling than at the other, and their three-level forms).
    Those whose ideal speed-up is at least ``target_speedup * (1 - tolerance)`` are deduplicated by what they
    compute; ``max_candidates`` of them are sampled on ``seeds`` (calibration seeds: keep them apart from the
    seeds you evaluate on) with ``condition``, ``sampling`` and ``runtime`` and ranked by mean PSNR against the
    uncached run, then SSIM. ``select``: ``"closest"`` samples those nearest the target, ``"spread"`` those
    spread evenly over the reachable speed-ups, to draw the Pareto front (:attr:`TuneResult.pareto`).
    ``progress`` shows a bar over the candidates.
    """
    if not model.has_long_skips:
        raise UserError("cache tune searches Skip-Cache schedules, which need a model with long skips "
                         "(a -skip preset); for a vanilla DiT use a peer cache")
    if family not in FAMILIES:
        raise UserError(f"unknown Skip-Cache family {family!r}; valid: {', '.join(FAMILIES)}")
    if masks and family != "taylor":
        raise UserError("per-step masks are a form of the forecasting family: use family 'taylor' (its order 0 is "
                        "Skip-Cache with a mask)")
    if not target_speedup >= 1:
        raise UserError(f"target speed-up must be >= 1, got {target_speedup}")
    if not 0 <= tolerance < 1:
        raise UserError(f"tolerance must be in [0, 1), got {tolerance}")
    if max_candidates < 1:
        raise UserError(f"max_candidates must be >= 1, got {max_candidates}")
    if select not in SELECTIONS:
        raise UserError(f"unknown selection {select!r}; valid: {', '.join(SELECTIONS)}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UserError("no calibration seeds given")

    units = model.num_units
    timesteps = sampling.cache_timesteps(model)
    policies = _enumerate("skip" if family == "taylor" else family, units, intervals, branches, starts, stops)
    if family == "taylor":
        policies = _with_orders(policies, orders, graded_masks(len(timesteps), intervals) if masks else [])
    plans = [(policy, policy.plan(timesteps, units)) for policy in policies]
    ideal = {policy: CacheStats.from_plan(plan, units).ideal_speedup for policy, plan in plans}
    floor = target_speedup * (1 - tolerance)
    reaching = [(policy, plan) for policy, plan in plans if ideal[policy] >= floor]
    if not reaching:
        highest = max(ideal.values())
        raise UserError(f"no Skip-Cache schedule reaches {target_speedup:g}x on {len(timesteps)} steps "
                         f"with these ranges; the highest ideal speed-up available is {highest:.2f}x")
    distinct = _dedupe(reaching)
    if select == "closest":
        shortlist = sorted(distinct, key=lambda p: abs(ideal[p] - target_speedup))[:max_candidates]
    else:
        shortlist = _spread(sorted(distinct, key=lambda p: ideal[p]), max_candidates)

    runtime = runtime.replace(progress=False)
    run = lambda **kw: generate(model, seeds, condition, runtime=runtime, **kw)  # noqa: E731
    run(sampling=sampling.warm_up())  # warm-up at the full batch, so the timed
    base = run(sampling=sampling)  # uncached run pays no first-call or allocator costs
    window_fits = min(base.images.shape[-3:-1]) >= SSIM_WINDOW
    evaluated = []
    for policy in _progress(shortlist, progress):
        out = run(sampling=sampling, cache=policy)
        stats = out.stats
        evaluated.append(TuneCandidate(
            policy.spec(), policy, stats.ideal_speedup, stats.full_steps, stats.cached_steps,
            float(psnr(out.images, base.images).mean()),
            float(ssim(out.images, base.images).mean()) if window_fits else None,
            out.seconds, base.seconds / out.seconds if out.seconds > 0 else math.inf,
        ))
    evaluated.sort(key=lambda c: (-c.psnr, -(c.ssim if c.ssim is not None else 0.0), -c.ideal_speedup))
    return TuneResult(target_speedup, evaluated, base.seconds, len(policies), len(distinct),
                      len(reaching) - len(distinct), seeds)


def graded_masks(steps: int, gaps: Iterable[int]) -> list[str]:
    """Per-step masks (taylor's ``mask=``) whose gap between full steps changes linearly over sampling, from
    ``g0`` at the first step to ``g1`` at the last, for every pair of ``gaps`` (equal gaps: the interval
    schedule), each also in its three-level form, where every second cached step of a gap is a whole-step reuse
    (``R``)."""
    gaps = [g for g in gaps if g >= 1]
    masks = []
    for first, last in itertools.product(gaps, repeat=2):
        letters, k = ["C"] * steps, 0
        while k < steps:
            letters[k] = "F"
            k += max(1, round(first + (last - first) * k / max(steps - 1, 1)))
        two = "".join(letters)
        three = re.sub("CC", "CR", two)  # within each run of cached steps: C R C R ...
        masks += [two, three] if three != two else [two]
    return list(dict.fromkeys(masks))


def _with_orders(policies: list[SkipCache], orders: Iterable[int], masks: list[str]) -> list[TaylorSkipCache]:
    """The forecasting form of each (N, b, start, stop) policy at each order, then each mask at each order and
    branch (a mask replaces the interval; the window still forces full steps)."""
    orders = list(orders)
    if not orders:
        raise UserError("orders must give at least one value")
    out = [with_order(p, order) for p in policies for order in orders]
    branches = list(dict.fromkeys(p.branch for p in policies))
    out += [TaylorSkipCache(branch=b, order=order, mask=mask) for mask in masks for b in branches for order in orders]
    return out


def _spread(ordered: list, count: int) -> list:
    """``count`` items evenly spaced over ``ordered`` (its ends included)."""
    if len(ordered) <= count:
        return ordered
    picks = np.linspace(0, len(ordered) - 1, count).round().astype(int)
    return [ordered[i] for i in dict.fromkeys(picks.tolist())]


def _enumerate(family: str, units: int, intervals, branches, starts, stops) -> list[SkipCache]:
    """Every (N, b, start, stop) combination as a policy, in the order given (the first spec of a plan wins)."""
    intervals, starts, stops = list(intervals), list(starts), list(stops)
    limit = units // 2
    branches = list(range(1, min(limit, MAX_DEFAULT_BRANCHES) + 1)) if branches is None else list(branches)
    bad = [b for b in branches if not 1 <= b <= limit]
    if bad:
        raise UserError(f"branch b={bad[0]} is out of range: a model of {units} units takes b in 1..{limit}")
    if not (intervals and branches and starts and stops):
        raise UserError("intervals, branches, starts and stops must each give at least one value")
    inclusive = PRESETS[family]["stop_inclusive"]
    return [SkipCache(n, b, start, stop, stop_inclusive=inclusive, family=family)
            for n, b, start, stop in itertools.product(intervals, branches, starts, stops)]


def _dedupe(candidates: list[tuple[SkipCache, list[StepPlan]]]) -> list[SkipCache]:
    """One policy per distinct computation: step plan and forecast. On 10 steps (t = 999, 888, ..., 0), for
    example, ``start=900`` plans as no start (only the first step, always full, has t >= 900) and ``stop=50``
    as no stop (only the last step has t <= 50, and a reset after it changes nothing)."""
    seen: set[tuple] = set()
    kept = []
    for policy, plan in candidates:
        forecast = (policy.order, policy.correct) if isinstance(policy, TaylorSkipCache) else (0, 0.0)
        key = (tuple((step.full, step.units) for step in plan), forecast)
        if key not in seen:
            seen.add(key)
            kept.append(policy)
    return kept


def _progress(items: list, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="cache tune", unit="candidate")


# -- TeaCache calibration ----------------------------------------------------------------------------------
def calibrate_teacache(
    model, seeds: Sequence[int], condition: Condition | int | Sequence[int] | None = None, *,
    sampling: Sampling = Sampling(), runtime: Runtime = Runtime(), degree: int = 4,
) -> tuple[tuple[float, ...], dict]:
    """Fit TeaCache's polynomial for ``model``: uncached runs on ``seeds``, least squares from the first
    block's input change to the unit stack's output change over consecutive steps of each guidance branch.
    Returns the coefficients (highest degree first) and fit statistics."""
    pairs: list[tuple[float, float]] = []
    denoise(model, seeds, condition, sampling=sampling, runtime=runtime,
            start_cache=lambda timesteps: _ChangeRecorder(model, len(timesteps), pairs))
    pairs = np.array(pairs)
    if len(pairs) <= degree:
        raise UserError(f"{len(pairs)} step pairs are too few to fit a degree-{degree} polynomial; use more steps")
    x, y = pairs[:, 0], pairs[:, 1]
    coefficients = np.polyfit(x, y, degree)
    residual = y - np.polyval(coefficients, x)
    r2 = 1 - (residual**2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-30)
    return tuple(float(c) for c in coefficients), {"pairs": len(pairs), "r2": float(r2)}


class _ChangeRecorder:
    """The cache seam of one uncached run that records, per guidance branch and pair of consecutive steps,
    (change of the first block's modulated input, change of the unit stack's output): TeaCache's data. It
    runs every unit: it is a measurement, not a policy."""

    guided = True  # an uncached run: guidance (if any) on every step

    def __init__(self, model, steps: int, pairs: list):
        self.stats = CacheStats.uncached(steps, model.num_units)
        self.pairs = pairs
        self._last: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # branch -> (probe, output)

    def begin_step(self, k: int) -> None:
        pass

    def branch(self, name: str) -> _RecordedBranch:
        return _RecordedBranch(self, name)

    def run_units(self, model, h: torch.Tensor, c, branch: str) -> torch.Tensor:
        probe, out = model.first_block_input(h, c), model.run_units(h, c)
        if branch in self._last:
            last_probe, last_out = self._last[branch]
            self.pairs.append((relative_l1(probe, last_probe).item(), relative_l1(out, last_out).item()))
        self._last[branch] = probe, out
        return out


@dataclass(frozen=True)
class _RecordedBranch:
    recorder: _ChangeRecorder
    name: str

    def run_units(self, model, h: torch.Tensor, c) -> torch.Tensor:
        return self.recorder.run_units(model, h, c, self.name)
