"""Skip-Cache on models that skipdit does not own, through their pipelines:

    pipe = HunyuanDiTPipeline.from_pretrained("HunyuanDiT-v1.2-Diffusers/", local_files_only=True)
    skipdit.cache.enable(pipe, "t2i:N=2")      # or enable(pipe.transformer, spec, timesteps=[...])
    image = pipe("a cat").images[0]
    print(skipdit.cache.stats(pipe).summary())
    skipdit.cache.disable(pipe)                # the original forward, exactly

A model class is supported by a layout function in :data:`LAYOUTS` (a few lines; see
``docs/adapters.md``), which says where its blocks are and how its long skips pair.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from ...errors import UserError
from ..base import CacheStats
from ..families import parse_cache
from ..skip_cache import SkipCache
from .blocks import BlockCache, LongSkipLayout
from .hunyuan import hunyuan_layout

# model class name -> (attribute holding the blocks, layout of a model instance)
LAYOUTS: dict[str, tuple[str, Callable[[object], LongSkipLayout]]] = {
    "HunyuanDiT2DModel": ("blocks", hunyuan_layout),
}
_ATTR = "_skipdit_cache"


def enable(target, spec, *, timesteps: Sequence[int] | None = None, calls_per_step: int = 1) -> BlockCache:
    """Put Skip-Cache on a pipeline (its ``transformer`` and ``scheduler``) or on a bare transformer.

    With a pipeline, every call plans from the scheduler's timesteps and each scheduler step ends a
    cache step. A bare transformer needs the run's ``timesteps`` (original scale, sampling order) and
    how many times it is called per step (1 with batched guidance, 2 with two passes); call
    ``enable`` again to start another run.
    """
    transformer = getattr(target, "transformer", target)
    scheduler = getattr(target, "scheduler", None) if transformer is not target else None
    kind = type(transformer).__name__
    if kind not in LAYOUTS:
        raise UserError(f"no Skip-Cache adapter for {kind}; supported: {', '.join(LAYOUTS)} "
                         "(skipdit's own models take cache=... in skipdit.generate)")
    policy = parse_cache(spec)
    if not isinstance(policy, SkipCache):
        raise UserError(f"the {kind} adapter runs Skip-Cache (skip / c2i / c2v / t2v / t2i specs), got {spec!r}")
    if scheduler is None and timesteps is None:
        raise UserError("a bare transformer needs timesteps=[...] (or pass the pipeline)")
    disable(target)
    attr, layout_of = LAYOUTS[kind]
    cache = BlockCache(getattr(transformer, attr), layout_of(transformer), policy,
                       calls_per_step=1 if scheduler is not None else calls_per_step)
    setattr(transformer, _ATTR, cache)
    if scheduler is not None:
        cache.ends_steps = False  # the scheduler's step() ends each step
        _hook_scheduler(scheduler, cache)
    else:
        cache.start(timesteps)
    return cache


def disable(target) -> None:
    """Remove the cache: the blocks' and the scheduler's own methods are back, nothing else changed."""
    transformer = getattr(target, "transformer", target)
    cache = getattr(transformer, _ATTR, None)
    if cache is not None:
        cache.detach()
        delattr(transformer, _ATTR)
    scheduler = getattr(target, "scheduler", None)
    for name in ("set_timesteps", "step"):
        if scheduler is not None and name in vars(scheduler) and getattr(vars(scheduler)[name], _ATTR, False):
            delattr(scheduler, name)


def stats(target) -> CacheStats:
    """What the cache did in the current (or last) run."""
    cache = getattr(getattr(target, "transformer", target), _ATTR, None)
    if cache is None:
        raise UserError("Skip-Cache is not enabled on this model")
    return cache.stats


def _hook_scheduler(scheduler, cache: BlockCache) -> None:
    """Wrap the scheduler's methods on the instance. ``functools.wraps`` keeps their signatures visible:
    pipelines inspect ``scheduler.step`` to decide whether to pass ``generator`` and ``eta``."""
    set_timesteps, step = scheduler.set_timesteps, scheduler.step

    @functools.wraps(set_timesteps)
    def planned_set_timesteps(*args, **kwargs):
        out = set_timesteps(*args, **kwargs)
        cache.start(scheduler.timesteps.tolist())  # once per pipeline call, before the first step
        return out

    @functools.wraps(step)
    def counted_step(*args, **kwargs):
        out = step(*args, **kwargs)
        cache.end_step()
        return out

    for name, fn in (("set_timesteps", planned_set_timesteps), ("step", counted_step)):
        setattr(fn, _ATTR, True)
        setattr(scheduler, name, fn)


__all__ = ["LAYOUTS", "BlockCache", "LongSkipLayout", "disable", "enable", "stats"]
