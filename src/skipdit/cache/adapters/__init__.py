"""Caches on models that skipdit does not own, through their pipelines:

    pipe = HunyuanDiTPipeline.from_pretrained("HunyuanDiT-v1.2-Diffusers/", local_files_only=True)
    skipdit.cache.enable(pipe, "t2i:N=2")      # or enable(pipe.transformer, spec, timesteps=[...])
    image = pipe("a cat").images[0]
    print(skipdit.cache.stats(pipe).summary())
    skipdit.cache.disable(pipe)                # the original forward, exactly

Two kinds of transformer are supported:

* a diffusers wrapper of a skipdit model, listed in :data:`SEAMS`
  (:class:`skipdit.diffusers.SkipDiTTransformer2DModel` in a ``SkipDiTPipeline``,
  :class:`skipdit.diffusers.SkipLatteTransformer3DModel` in diffusers' own ``LattePipeline``): any cache spec,
  through the wrapped model's own ``cache=`` seam, so the pipeline caches exactly as :func:`skipdit.generate` does;
* a foreign model, listed in :data:`LAYOUTS` by where its blocks are and how its long skips pair (a few
  lines; see ``docs/adapters.md``): Skip-Cache on one with long skips (``HunyuanDiT2DModel``), the
  DeepCache-style ``deepcache:N=2,b=1`` on a vanilla one (``DiTTransformer2DModel`` in diffusers'
  ``DiTPipeline``, ``LatteTransformer3DModel`` in ``LattePipeline``), through block hooks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from ...errors import UserError
from ..base import CacheStats
from ..families import parse_cache
from .blocks import BlockCache, LongSkipLayout, SeamCache, StepDriven
from .hunyuan import hunyuan_layout


def blocks_in(*attrs: str) -> Callable[[object], list[tuple]]:
    """The units of a model whose unit ``i`` calls block ``i`` of each ``ModuleList`` ``model.<attr>`` in turn."""
    return lambda model: list(zip(*(getattr(model, attr) for attr in attrs), strict=True))


def vanilla_layout(units_of: Callable[[object], list[tuple]]) -> Callable[[object], LongSkipLayout]:
    """The layout of a transformer without long skips whose units ``units_of`` lists."""
    return lambda model: LongSkipLayout(num_units=len(units_of(model)), num_pairs=0)


_DIT_UNITS = blocks_in("transformer_blocks")
_LATTE_UNITS = blocks_in("transformer_blocks", "temporal_transformer_blocks")  # spatial, then temporal
# model class name -> (its units, its layout), each a function of a model instance
LAYOUTS: dict[str, tuple[Callable[[object], list[tuple]], Callable[[object], LongSkipLayout]]] = {
    "HunyuanDiT2DModel": (blocks_in("blocks"), hunyuan_layout),
    "DiTTransformer2DModel": (_DIT_UNITS, vanilla_layout(_DIT_UNITS)),
    "LatteTransformer3DModel": (_LATTE_UNITS, vanilla_layout(_LATTE_UNITS)),
}
# wrapper class name -> the skipdit model it wraps; its forward takes that model's cache= seam
SEAMS: dict[str, Callable[[object], object]] = {
    "SkipDiTTransformer2DModel": lambda transformer: transformer.dit,
    "SkipLatteTransformer3DModel": lambda transformer: transformer.latte,
}
_ATTR = "_skipdit_cache"


def enable(target, spec, *, timesteps: Sequence[int] | None = None, calls_per_step: int = 1) -> StepDriven:
    """Put a cache on a pipeline (its ``transformer`` and ``scheduler``) or on a bare transformer.

    With a pipeline, every call plans from the scheduler's timesteps and each scheduler step ends a
    cache step. A bare transformer needs the run's ``timesteps`` (original scale, sampling order) and
    how many times it is called per step (1 with batched guidance, 2 with two passes); call
    ``enable`` again to start another run.
    """
    transformer = getattr(target, "transformer", target)
    scheduler = getattr(target, "scheduler", None) if transformer is not target else None
    kind = type(transformer).__name__
    if kind not in LAYOUTS and kind not in SEAMS:
        raise UserError(f"no cache adapter for {kind}; supported: {', '.join([*SEAMS, *LAYOUTS])} "
                        "(skipdit's own models take cache=... in skipdit.generate)")
    policy = parse_cache(spec)
    if policy is None:
        raise UserError("enable() needs a cache spec, e.g. skip:N=2 (disable() removes a cache)")
    if scheduler is None and timesteps is None:
        raise UserError("a bare transformer needs timesteps=[...] (or pass the pipeline)")
    calls = 1 if scheduler is not None else calls_per_step
    disable(target)
    if kind in SEAMS:
        cache = SeamCache(transformer, SEAMS[kind](transformer), policy, calls_per_step=calls)
    else:
        units_of, layout_of = LAYOUTS[kind]
        cache = BlockCache(units_of(transformer), layout_of(transformer), policy, calls_per_step=calls, kind=kind)
    setattr(transformer, _ATTR, cache)
    if scheduler is not None:
        cache.ends_steps = False  # the scheduler's step() ends each step
        _hook_scheduler(scheduler, cache)
    else:
        cache.start(timesteps)
    return cache


def disable(target) -> None:
    """Remove the cache: the transformer's (or its blocks') and the scheduler's own methods are back,
    nothing else changed."""
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
        raise UserError("no skipdit cache is enabled on this model")
    return cache.stats


def _hook_scheduler(scheduler, cache: StepDriven) -> None:
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


__all__ = ["LAYOUTS", "SEAMS", "BlockCache", "LongSkipLayout", "SeamCache", "blocks_in", "disable", "enable", "stats"]
