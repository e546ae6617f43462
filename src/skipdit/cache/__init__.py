"""Caches for DiT sampling. ``parse_cache("c2i:N=3")`` turns a spec string into a policy (the spec
language: :mod:`skipdit.cache.families`); ``enable(pipe, spec)`` puts Skip-Cache on a foreign pipeline
(:mod:`skipdit.cache.adapters`).

This package imports nothing above it (no sampling, bench, cli, train or tuning): calibration and tuning,
which sample, live in :mod:`skipdit.tuning`.
"""

from __future__ import annotations

from .adapters import disable, enable, stats
from .adaptive import AdaptiveSkipCache
from .base import BRANCHES, Branch, CachePolicy, CacheState, CacheStats, StepPlan
from .deepcache import DeepCacheDiT
from .delta import DeltaDiT
from .families import CACHE_FAMILIES, official_setting, parse_cache
from .fbcache import FirstBlockCache
from .fora import Fora
from .pab import PyramidAttentionBroadcast
from .schedule import interval_schedule
from .skip_cache import SkipCache
from .taylor import TaylorSkipCache
from .teacache import TeaCache
from .tgate import TGate
from .toca import TokenCaching

__all__ = [
    "BRANCHES", "CACHE_FAMILIES", "AdaptiveSkipCache", "Branch", "CachePolicy", "CacheState", "CacheStats",
    "DeepCacheDiT", "DeltaDiT", "FirstBlockCache", "Fora", "PyramidAttentionBroadcast", "SkipCache", "StepPlan",
    "TGate", "TaylorSkipCache", "TeaCache", "TokenCaching", "disable", "enable", "interval_schedule",
    "official_setting", "parse_cache", "stats",
]
