"""Why a cache plan saves nothing, said before anyone reads a 1.00x speed-up as a property of the cache.

A spec can be valid and still skip no work on a given model: the official ``c2i`` preset caches all but
b=4 units at each end, which on an 8-unit model is every unit; ``N=1`` makes every step full. Sampling
with such a plan is legal (it is the uncached run with extra bookkeeping), so this is a warning, not an
error, and it names the cause computed from the plan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .cache import CachePolicy, CacheStats, SkipCache, TokenCaching, parse_cache

log = logging.getLogger(__name__)


def planned_stats(policy: CachePolicy, timesteps: Sequence[int], num_units: int) -> CacheStats | None:
    """What ``policy`` will do over ``timesteps`` on a model of ``num_units`` units, known before the run;
    ``None`` for policies that decide at run time."""
    if policy.decides_at_run_time:
        return None
    return CacheStats.from_plan(policy.plan(list(timesteps), num_units), num_units)


def no_saving_reason(stats: CacheStats, policy: CachePolicy | None = None) -> str | None:
    """Why a run (or plan) with these ``stats`` evaluates every unit of every step; ``None`` if it saves
    something. Sublayer caches (FORA, ToCa, PAB, T-GATE) save inside units that still run, so reusing any
    sublayer counts as a saving."""
    total = stats.steps * stats.units_per_step
    if stats.reused or stats.unit_evals < total:
        return None
    if not stats.cached_steps:
        return f"none of its {stats.steps} steps is cached ({_why_all_full(policy)})"
    units = stats.units_per_step
    branch = policy.branch if isinstance(policy, SkipCache) else None
    if branch is not None and 2 * branch >= units:
        return (f"b={branch} reaches its {units} units: a cached step runs the {branch} shallow and {branch} "
                f"deep units, which are all of them (b <= {(units - 1) // 2} would skip some)")
    return f"its {stats.cached_steps} cached steps still run all {units} units"


def _why_all_full(policy: CachePolicy | None) -> str:
    if getattr(policy, "interval", None) == 1:
        return "N=1 makes every step full"
    if isinstance(policy, TokenCaching):
        return "ratio=1 recomputes every token of every sublayer"
    threshold = getattr(policy, "threshold", None)
    if policy is not None and policy.decides_at_run_time and threshold is not None:
        return f"threshold={threshold} was never met"
    start, stop = getattr(policy, "start_t", None), getattr(policy, "stop_t", None)
    if start is not None or stop is not None:
        return f"start={start} and stop={stop} leave no step between them to cache"
    return "the schedule has no cached step for these timesteps"


def warn_if_plan_saves_nothing(spec: str | None, model, sampling) -> str | None:
    """Before a run of ``model`` with cache ``spec`` and :class:`~skipdit.sampling.Sampling` settings
    ``sampling``: warn if its plan saves nothing; return the reason. Nothing for no cache or a policy that
    decides at run time."""
    policy = parse_cache(spec)
    if policy is None:
        return None
    timesteps = sampling.cache_timesteps(model)
    return warn_if_saves_nothing(spec, planned_stats(policy, timesteps, model.num_units), policy)


def warn_if_saves_nothing(spec: str, stats: CacheStats | None, policy: CachePolicy | None = None) -> str | None:
    """Log one warning line if ``stats`` show that cache ``spec`` saves nothing; return the reason."""
    reason = None if stats is None else no_saving_reason(stats, policy)
    if reason is not None:
        log.warning("warning: cache %s saves nothing on this model: %s", spec, reason)
    return reason
