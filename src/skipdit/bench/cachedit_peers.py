"""cache-dit's caches as external peers, on our weights, seeds and sampler.

cache-dit (vipshop/cache-dit; tested with 1.5.3: ``pip install 'skipdit[cachedit]'``) accelerates diffusers
transformers by calling fewer of their blocks:

* ``dbcache`` (Dual Block Cache): each call runs the first ``Fn_compute_blocks`` blocks and compares the residual
  they made with the one of the last call that ran everything (relative L1, over the whole batch). Below
  ``residual_diff_threshold`` it skips the middle blocks, adding their residual cached at that call, and then
  runs the last ``Bn_compute_blocks``;
* ``taylorseer``: DBCache whose cached middle residual is forecast by its TaylorSeer calibrator (a Taylor
  expansion of order ``taylorseer_order`` over the calls that ran everything) instead of reused;
* ``dbprune`` (Dynamic Block Prune): the same test per block: each block outside the first ``Fn`` and the last
  ``Bn`` is skipped when its input changed less than the threshold, adding its cached residual.

None of them decides during the first ``max_warmup_steps`` calls of a run (cache-dit's default: 8).

:class:`CacheDitPeer` converts our vanilla DiT to diffusers' ``DiTTransformer2DModel`` (as :class:`DiffusersPeer`
does: the same function), which cache-dit supports as it is, and enables cache-dit on that transformer alone
(``cache_dit.enable_cache(transformer, cache_config=..., calibrator_config=...)``, no pipeline). cache-dit then
replaces the transformer's ``forward`` with its own copy of diffusers' DiT forward (its ``DiTPatchFunctor``).

**Runs.** On a bare transformer cache-dit keeps one persistent context and counts every call as a step: it
cannot see where a sampling run starts. The peer gives it the run's number of model calls
(``num_inference_steps``) and starts a fresh context (``cache_dit.refresh_context``) when a call's timestep is
above the previous call's (a new run: consecutive ``generate`` calls and the batches of one are independent)
and in :meth:`CacheDitPeer.reset`. A run with more calls than it was set up for is an error.

**Guidance.** Batched guidance [cond, uncond] is one call per step, decided for the whole batch. Guidance in two
passes (cond, then uncond) is cache-dit's *separate CFG* in its default order: pass ``separate_cfg=True``, and
each branch gets its own residuals and decisions.

**Engagement.** cache-dit does not call a block it skips, so forward pre-hooks on the blocks count what ran:
:meth:`CacheDitPeer.report` says how many block calls were skipped, and in how many forwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from .diffusers_peers import TransformerPeer, build_dit, config_from

METHODS = ("dbcache", "taylorseer", "dbprune")


def _cache_dit():
    try:
        import cache_dit
    except ImportError as err:
        raise UserError("cache-dit peers need cache-dit (tested with 1.5.3): pip install 'skipdit[cachedit]'") \
            from err
    return cache_dit


@contextlib.contextmanager
def _quiet():
    """cache-dit logs each setting at INFO and a warning per disable; this keeps it to errors."""
    loggers = [logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict)
               if name.split(".")[0] == "cache_dit"]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@dataclass(frozen=True)
class CacheDitReport:
    """What a cache-dit cache skipped, counted from outside: model calls (``forwards``), those that skipped at
    least one block (``cached_forwards``), and block calls possible (forwards × depth) and made."""

    method: str
    forwards: int
    cached_forwards: int
    block_calls: int
    blocks_run: int

    @property
    def blocks_skipped(self) -> int:
        return self.block_calls - self.blocks_run

    @property
    def reused(self) -> int:
        return self.blocks_skipped

    def summary(self) -> str:
        return (f"cache-dit {self.method}: {self.forwards} forwards, {self.cached_forwards} of them skipped blocks, "
                f"{self.blocks_skipped} of {self.block_calls} block calls skipped")


class CacheDitPeer(TransformerPeer):
    """Our vanilla DiT ``model`` as diffusers' ``DiTTransformer2DModel`` with cache-dit's ``method`` enabled.

    ``steps``: the model calls of one run per guidance branch (a sampler's ``model_calls``); ``separate_cfg``:
    guidance runs in two passes (see the module docstring). ``options`` are fields of cache-dit's
    ``DBCacheConfig`` (``dbcache``, ``taylorseer``) or ``DBPruneConfig`` (``dbprune``), with cache-dit's defaults
    for the rest; ``taylorseer`` also takes the fields of ``TaylorSeerCalibratorConfig`` (``taylorseer_order``).
    The step count and the guidance layout belong to the peer.
    """

    library = "cache-dit"

    def __init__(self, model: nn.Module, method: str, *, steps: int, separate_cfg: bool = False, **options: Any):
        family = model.config.family
        if family != "DiT" or method not in METHODS:
            raise UserError(f"no cache-dit peer {method!r} for {family}; cache-dit peers run on DiT: "
                            f"{', '.join(METHODS)}")
        if model.has_long_skips:
            raise UserError("diffusers' transformers have no long skips: a cache-dit peer wraps a vanilla model")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise UserError(f"steps must be an integer >= 1, got {steps!r}")
        lib = _cache_dit()
        super().__init__(model, build_dit(model))
        self.method = method
        self._calls_per_run = steps * (2 if separate_cfg else 1)
        self._depth = len(self.transformer.transformer_blocks)
        cache_config, calibrator = self._configs(lib, steps, separate_cfg, dict(options))
        first, last = cache_config.Fn_compute_blocks, cache_config.Bn_compute_blocks
        if first < 1 or last < 0:
            raise UserError(f"cache-dit needs Fn_compute_blocks >= 1 and Bn_compute_blocks >= 0, got F{first}B{last}")
        if first + last >= self._depth:
            raise UserError(f"F{first}B{last} computes all {self._depth} blocks of this model: "
                            "nothing is left to cache")
        self._timestep: int | None = None  # of the last call
        self._calls = 0  # calls of the current run
        self._counts: Counter[str] = Counter()
        for block in self.transformer.transformer_blocks:
            block.register_forward_pre_hook(self._count_block)
        with _quiet():
            lib.enable_cache(self.transformer, cache_config=cache_config, calibrator_config=calibrator)
        self._probe()

    def _configs(self, lib, steps: int, separate_cfg: bool, options: dict[str, Any]):
        owned = dict(num_inference_steps=steps, enable_separate_cfg=separate_cfg, cfg_compute_first=False)
        if self.method == "dbprune":
            return config_from(lib.DBPruneConfig, options, cache_type=lib.CacheType.DBPrune, **owned), None
        calibrator = None
        if self.method == "taylorseer":
            fields = {f.name for f in dataclasses.fields(lib.TaylorSeerCalibratorConfig)}
            calibrator = lib.TaylorSeerCalibratorConfig(**{k: options.pop(k) for k in list(options) if k in fields})
        return config_from(lib.DBCacheConfig, options, cache_type=lib.CacheType.DBCache, **owned), calibrator

    def _probe(self) -> None:
        """One call on a zero sample, so that a method cache-dit cannot run on this transformer fails here, at
        setup, with the reason (cache-dit 1.5.3's DBPrune raises a TypeError on DiT's block pattern); then a
        fresh context and no counts."""
        param = next(self.transformer.parameters())
        x = torch.zeros(1, *self.sample_shape(), device=param.device, dtype=param.dtype)
        t = torch.full((1,), 999, device=param.device)
        y = torch.zeros(1, dtype=torch.long, device=param.device)  # class 0
        try:
            with torch.no_grad():
                self._call_dit(x, t, y)
        except Exception as err:
            reason = str(err).splitlines()[0] if str(err) else ""
            raise UserError(f"cache-dit's {self.method} fails on diffusers' DiT: {type(err).__name__}: {reason}") \
                from err
        self.reset()

    def _count_block(self, _module, _args) -> None:
        self._counts["blocks_run"] += 1

    # -- runs -----------------------------------------------------------------------------------------
    def reset(self) -> None:
        """A fresh cache-dit context and no counts; the next call starts a run."""
        self._refresh()
        self._timestep, self._calls = None, 0
        self._counts.clear()

    def _refresh(self) -> None:
        with _quiet():
            _cache_dit().refresh_context(self.transformer)

    def _track(self, t: torch.Tensor) -> None:
        now = int(t.reshape(-1)[0])
        if self._timestep is None or now > self._timestep:  # a new run
            if self._calls:
                self._refresh()
            self._calls = 0
        self._calls += 1
        if self._calls > self._calls_per_run:
            raise UserError(f"cache-dit was set up for {self._calls_per_run} model calls per run; this run has more")
        self._timestep = now

    # -- forward --------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cache=None) -> torch.Tensor:
        """``forward(x, t, y)`` as our DiT; ``t`` on the 0..999 scale."""
        if cache is not None:
            raise UserError("a cache-dit peer brings its own cache: call generate(..., cache=None)")
        self._track(t)
        before = self._counts["blocks_run"]
        out = self._call_dit(x, t, y)
        self._counts["forwards"] += 1
        self._counts["block_calls"] += self._depth
        self._counts["cached_forwards"] += int(self._counts["blocks_run"] - before < self._depth)
        return out

    # -- what it did ----------------------------------------------------------------------------------
    def report(self) -> CacheDitReport:
        """Counts since the last :meth:`reset` (or construction), over all runs."""
        c = self._counts
        return CacheDitReport(self.method, c["forwards"], c["cached_forwards"], c["block_calls"], c["blocks_run"])

    @property
    def engaged(self) -> bool:
        """Whether the cache skipped any block since the last reset."""
        return self.report().reused > 0


def setting_name(options: dict[str, Any]) -> str:
    """A setting of the bench's table in cache-dit's own short names (``F1B0_R0.08``; ``_W2``: a warm-up of 2
    calls instead of 8; ``_T1O2``: TaylorSeer of order 2), then any other option as ``name=value``."""
    rest = dict(options)
    tag = f"F{rest.pop('Fn_compute_blocks')}B{rest.pop('Bn_compute_blocks')}"
    if "max_warmup_steps" in rest:
        tag += f"_W{rest.pop('max_warmup_steps')}"
    tag += f"_R{rest.pop('residual_diff_threshold')}"
    if "taylorseer_order" in rest:
        tag += f"_T1O{rest.pop('taylorseer_order')}"
    return ",".join([tag, *(f"{k}={v}" for k, v in rest.items())])
