"""Caches for DiT sampling. ``parse_cache("c2i:N=3")`` turns a spec string into a policy.

Spec strings are ``FAMILY[:ARGS]``: ``skip:N=3,b=1,start=700,stop=50`` (``stop<50`` for a strict
reset test), the official presets ``c2i``, ``c2v``, ``t2v``, ``t2i`` with the same keys as overrides
(``c2i:N=4``), the official text-to-video form ``t2v:N2-700-50``, and ``none``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry
from .base import CachePolicy, CacheState, CacheStats, StepPlan
from .schedule import interval_schedule
from .skip_cache import PRESET_RESPACING, PRESET_UNITS, PRESETS, SkipCache, parse_skip_cache

# family name -> parser(family, args, full_spec) -> policy
CACHE_FAMILIES: Registry[Callable[[str, str, str], CachePolicy]] = Registry("cache")
for _family in PRESETS:
    CACHE_FAMILIES.register(_family, parse_skip_cache)


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
        raise ValueError(f"malformed cache spec {spec!r}: {err}") from None
    return parser(family.strip(), args, spec)


def official_setting(policy: CachePolicy) -> tuple[int, str]:
    """(units L, timestep respacing) of the official model and sampler a preset was written for,
    to plan a schedule without a model."""
    return PRESET_UNITS.get(policy.family, 28), PRESET_RESPACING.get(policy.family, "250")


from .adapters import disable, enable, stats  # noqa: E402  (adapters parse specs with parse_cache)

__all__ = [
    "CACHE_FAMILIES", "CachePolicy", "CacheState", "CacheStats", "SkipCache", "StepPlan", "disable", "enable",
    "official_setting", "interval_schedule", "parse_cache", "stats",
]
