"""Spec strings to policies: the registry of cache families and :func:`parse_cache`.

Spec strings are ``FAMILY[:ARGS]``:

* Skip-Cache: ``skip:N=3,b=1,start=700,stop=50`` (``stop<50`` for a strict reset test), the official
  presets ``c2i``, ``c2v``, ``t2v``, ``t2i`` with the same keys as overrides (``c2i:N=4``), the official
  text-to-video form ``t2v:N2-700-50``; ``adaptive:threshold=0.05`` refreshes from the shallow features;
  ``taylor:N=3,order=2`` forecasts the deep state (``correct=``, ``mask=FCR...``: :mod:`skipdit.cache.taylor`).
* Peers: ``fora:N=2``, ``toca:N=3,ratio=0.3`` (token-wise), ``delta:N=2,boundary=600``, ``deepcache:N=2,b=1``
  (vanilla models), ``pab:spatial=2,temporal=3,cross=6``, ``tgate:gate=10,cfg=drop`` (text models),
  ``teacache:threshold=0.1``, ``fbc:threshold=0.05``.
* ``none``.

Every family reads its items through its policy's key table (``CachePolicy.keys``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..diffusion import make_sampler
from ..diffusion.samplers import CHAIN_SAMPLERS, default_spacing
from ..errors import UserError
from ..registry import Registry
from .adaptive import AdaptiveSkipCache
from .base import CachePolicy, CacheStats, StepPlan
from .deepcache import DeepCacheDiT
from .delta import DeltaDiT
from .fbcache import FirstBlockCache
from .fora import Fora
from .pab import PyramidAttentionBroadcast
from .skip_cache import PRESET_RESPACING, PRESET_UNITS, PRESETS, SkipCache
from .taylor import TaylorSkipCache
from .teacache import TeaCache
from .tgate import TGate
from .toca import TokenCaching

# family name -> parser(family, args, full_spec) -> policy
CACHE_FAMILIES: Registry[Callable[[str, str, str], CachePolicy]] = Registry("cache")
for _family in PRESETS:
    CACHE_FAMILIES.register(_family, SkipCache.parse)
for _policy in (AdaptiveSkipCache, TaylorSkipCache, Fora, DeltaDiT, DeepCacheDiT, PyramidAttentionBroadcast, TGate,
                TeaCache, FirstBlockCache, TokenCaching):
    CACHE_FAMILIES.register(_policy.family, _policy.parse)


def parse_cache(spec: str | CachePolicy | None) -> CachePolicy | None:
    """A policy from a spec string; ``None``, ``""`` and ``"none"`` mean no cache."""
    if spec is None or isinstance(spec, CachePolicy):
        return spec
    text = spec.strip()
    if text.lower() in ("", "none", "off"):
        return None
    family, _, args = text.partition(":")
    try:
        parser = CACHE_FAMILIES.get(family.strip())
    except ValueError as err:
        raise UserError(f"malformed cache spec {spec!r}: {err}") from None
    return parser(family.strip(), args, spec)


def official_setting(policy: CachePolicy) -> tuple[int, str]:
    """(units L, timestep respacing) of the official model and sampler a preset was written for,
    to plan a schedule without a model."""
    return PRESET_UNITS.get(policy.family, 28), PRESET_RESPACING.get(policy.family, "250")


@dataclass(frozen=True)
class OfflinePlan:
    """A policy's plan without a model: over ``timesteps`` (sampling order) of a model of ``units`` units, those
    of ``sampler`` on its step list (``respacing`` for ddpm and ddim, ``spacing`` for the others)."""

    policy: CachePolicy
    units: int
    respacing: str | None
    timesteps: list[int]
    steps: list[StepPlan]
    sampler: str = "ddpm"
    spacing: str | None = None

    @property
    def stats(self) -> CacheStats:
        """The plan's stats, guidance assumed on (so T-GATE's ``cfg=drop`` steps count as unguided)."""
        return CacheStats.from_plan(self.steps, self.units, [k for k, step in enumerate(self.steps) if not step.guided])

    @property
    def step_list(self) -> str:
        """How the timesteps were made: ``respacing '250'`` or ``dpm++2m, spacing 'linspace'``."""
        if self.respacing is not None:
            return f"respacing {self.respacing!r}"
        return f"{self.sampler}, spacing {self.spacing!r}" if self.spacing else self.sampler


def plan_offline(
    spec: str | CachePolicy, units: int | None = None, respacing: str | None = None, *, sampler="ddpm",
    steps: int | None = None, spacing: str | None = None,
) -> OfflinePlan:
    """The plan of ``spec`` on a model of ``units`` units over the timesteps ``sampler`` evaluates: for ddpm and
    ddim the 1000-step chain respaced by ``respacing`` (or ``steps``), for the other samplers (any of
    :data:`skipdit.diffusion.SAMPLER_CHOICES`) ``steps`` on their ``spacing``, each step's first model call
    rounded to an integer timestep as :func:`skipdit.generate` plans it. Without ``units`` or a step count:
    those of the official model and sampler the preset was written for (:func:`official_setting`), or the
    sampler's default steps. Policies that decide while sampling have no plan before a run, and are refused."""
    policy = parse_cache(spec)
    if policy is None:
        raise UserError("no cache: nothing to plan")
    if policy.decides_at_run_time:  # its plan() is a placeholder that the run overrides step by step
        raise UserError(f"{policy.spec()} decides each step while sampling, from what the model computes, so it has "
                        f"no plan before a run; skipdit sample --cache {policy.spec()} reports the steps it cached")
    official_units, official_respacing = official_setting(policy)
    units = official_units if units is None else units  # 0 is an error below, not "the preset's units"
    if units < 2:
        raise UserError(f"a model has at least 2 units, got {units}")
    chain = sampler in CHAIN_SAMPLERS
    if chain and respacing is None:
        respacing = official_respacing if steps is None else str(steps)
    on = make_sampler(sampler, steps=None if chain else steps, spacing=spacing, respacing=respacing)
    timesteps = on.cache_timesteps()
    policy.check_units(units)
    return OfflinePlan(policy, units, respacing, timesteps, policy.plan(timesteps, units), on.name,
                       None if chain else spacing or default_spacing(sampler))
