"""Caches for models that skipdit does not own: a declared block layout plus block hooks.

A transformer is described by its units and a :class:`LongSkipLayout`. A unit is the blocks its forward calls in
turn at one depth: one block (DiT, Hunyuan-DiT) or a spatial and a temporal block (Latte). Of the ``L``
units, the first ``P`` push their outputs, the last ``P`` pop them (LIFO, so unit ``j`` meets unit ``L-1-j``),
and the ``L - 2P`` units between are unpaired (Hunyuan-DiT: 2, U-ViT: 1, Skip-DiT: 0). A vanilla transformer
has ``P = 0``. That is all Skip-Cache and its vanilla counterpart need to know (reference §B.1).

:class:`BlockCache` leaves the model's own forward (embeddings, its block loop with the skip stack,
the head) untouched and replaces each block's ``forward`` on the instance. On a full step every block
computes and the hidden state entering unit ``L-b`` is kept, by reference. On a cached step the units
the step's plan runs compute and the blocks of the others return their input unchanged, at no cost, so the
model's loop still pushes and pops a balanced stack (and undoes its own reshapes between a unit's blocks);
unit ``L-b`` gets the kept state instead of its input:

* Skip-Cache (long skips): units ``0 .. b-1`` compute, so the deep units ``L-b .. L-1`` pop exactly
  their fresh outputs;
* DeepCache-style (:class:`~skipdit.cache.DeepCacheDiT`, vanilla): only units ``L-b .. L-1`` compute.
  What the loop adds between skipped units (Latte's temporal table after unit 0) is discarded with the
  input that unit ``L-b`` replaces.

The parameters and buffers are never touched, so the state dict stays the same, and
:meth:`BlockCache.detach` restores the original forward exactly.

The schedule comes from the policy up front: the pipeline's ``scheduler.set_timesteps`` starts a run
(one read of the timesteps, then no host sync per step) and each ``scheduler.step`` ends a step, so
every pipeline call starts fresh. The run's tensors and counters are the :class:`~skipdit.cache.CacheState`
that skipdit's own models use, keyed by guidance branch. A foreign pipeline does not say which branch a
call is, so the adapter is told how many calls a step makes: one (guidance batched, branch ``both``: the
diffusers pipelines adapted here) or two (``cond`` then ``uncond``, a bare transformer driven by hand).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from ...errors import UserError
from ..base import CachePolicy, CacheState, CacheStats, StepPlan
from ..deepcache import DeepCacheDiT
from ..skip_cache import SkipCache, SkipCacheState

# the branches of the calls of one step, by the number of calls per step
CALL_BRANCHES = {1: ("both",), 2: ("cond", "uncond")}


@dataclass(frozen=True)
class LongSkipLayout:
    """``num_units`` units; units ``0 .. num_pairs-1`` push, units ``num_units-num_pairs ..`` pop.
    ``num_pairs=0``: a vanilla transformer."""

    num_units: int
    num_pairs: int

    def __post_init__(self):
        if self.num_units < 1 or not 0 <= self.num_pairs <= self.num_units // 2:
            raise UserError(f"{self.num_pairs} long-skip pairs do not fit in {self.num_units} units")

    @property
    def middle(self) -> range:
        """The unpaired units."""
        return range(self.num_pairs, self.num_units - self.num_pairs)

    def check_branch(self, branch: int) -> None:
        if branch > self.num_pairs:
            unpaired = f"; units {self.middle.start}..{self.middle.stop - 1} are unpaired" if self.middle else ""
            raise UserError(f"Skip-Cache branch b={branch} needs b <= {self.num_pairs} for this model "
                             f"({self.num_pairs} long-skip pairs{unpaired})")

    def check_policy(self, policy: CachePolicy, kind: str) -> None:
        """Raise unless block hooks can run ``policy`` on this layout: Skip-Cache on a model with long skips,
        the DeepCache-style form on a vanilla one."""
        if isinstance(policy, SkipCache):
            if type(policy) is not SkipCache:  # a forecasting form: its arithmetic needs the model's own seam
                raise UserError(f"the {kind} adapter reuses the deep state (skip / c2i / c2v / t2v / t2i specs); "
                                f"{policy.family} runs on skipdit's own models and their diffusers wrappers")
            if not self.num_pairs:
                raise UserError(f"{kind} has no long skips: Skip-Cache needs them; use deepcache:N=2,b=1 "
                                "(the shallow-recompute form for vanilla transformers)")
            self.check_branch(policy.branch)
        elif isinstance(policy, DeepCacheDiT):
            if self.num_pairs:
                raise UserError(f"{kind} has long skips: its DeepCache is Skip-Cache (skip:N=...,b=...)")
            policy.check_units(self.num_units)
        else:
            raise UserError(f"the {kind} adapter runs Skip-Cache (skip / c2i / c2v / t2v / t2i specs) on "
                            f"transformers with long skips and deepcache on vanilla ones, not {policy.family}")


class StepDriven:
    """The run bookkeeping of an adapter: a :class:`CacheState` per run, made by :meth:`start` from the run's
    timesteps; each step makes ``calls_per_step`` calls (1: guidance batched; 2: cond, then uncond) and ends
    at :meth:`end_step` (a hooked scheduler's ``step``) or, driven by hand, when the next step's first call
    comes. Subclasses make the state (:meth:`new_state`) and call :meth:`begin_call` at each call."""

    def __init__(self, calls_per_step: int, num_units: int):
        if calls_per_step not in CALL_BRANCHES:
            raise UserError(f"calls_per_step must be 1 (guidance batched) or 2 (cond, then uncond), "
                             f"got {calls_per_step!r}")
        self.branches = CALL_BRANCHES[calls_per_step]
        self.num_units = num_units
        self.state: CacheState | None = None
        self.ends_steps = True  # bare-model use: a step ends after its calls; a hooked scheduler ends them instead
        self._calls = 0  # calls of the current step so far

    def new_state(self, timesteps: list[int]) -> CacheState:
        raise NotImplementedError

    def start(self, timesteps: Sequence[int]) -> None:
        """A new sampling run over ``timesteps`` (original 0..999 scale, in sampling order)."""
        self.state = self.new_state([int(t) for t in timesteps])
        self.state.begin_step(0)
        self._calls = 0

    def end_step(self) -> None:
        """The scheduler finished a step: the next call begins the next one."""
        if self.state is not None:
            self.state.step += 1
        self._calls = 0

    @property
    def stats(self) -> CacheStats:
        """What the steps run so far did (a step under way counts)."""
        if self.state is None:
            return CacheStats.from_plan([], self.num_units)
        return self.state.stats

    def begin_call(self) -> str:
        """The guidance branch of the call that begins now; the step it belongs to is ``state.step``."""
        state = self.state
        if state is None:
            raise RuntimeError("the cache has no schedule yet: run the pipeline, or pass timesteps to enable()")
        if self._calls == len(self.branches):
            if not self.ends_steps:
                raise RuntimeError(f"the pipeline called the transformer {self._calls + 1} times in one step; "
                                   "enable(pipe.transformer, spec, timesteps=..., calls_per_step=2) drives it by hand")
            state.step += 1
            self._calls = 0
        if state.step >= len(state.plan):
            raise RuntimeError(f"the cache planned {len(state.plan)} steps and they are done; start a new run "
                               "(the pipeline does it) or disable the cache")
        self._calls += 1
        return self.branches[self._calls - 1]


class BlockCache(StepDriven):
    """``policy`` (Skip-Cache or the DeepCache-style form, see the module docstring) on ``units`` (one tuple of
    blocks per unit, in the order the model calls them) laid out as ``layout``; each step makes
    ``calls_per_step`` calls."""

    def __init__(self, units: Sequence[tuple], layout: LongSkipLayout, policy: SkipCache | DeepCacheDiT,
                 calls_per_step: int = 1, kind: str = "this model"):
        if len(units) != layout.num_units:
            raise UserError(f"the layout declares {layout.num_units} units, the model has {len(units)}")
        layout.check_policy(policy, kind)
        super().__init__(calls_per_step, layout.num_units)
        self.blocks = [block for unit in units for block in unit]
        self.layout, self.policy = layout, policy
        self._branch: SkipCacheState | None = None  # the state of the call under way
        self._step: StepPlan | None = None  # the plan of the call under way
        for index, unit in enumerate(units):
            for part, block in enumerate(unit):
                block.forward = functools.partial(self._forward, index, part, block.forward)

    def new_state(self, timesteps: list[int]) -> CacheState:
        return CacheState(self.policy, self.policy.plan(timesteps, self.num_units), self.num_units)

    def detach(self) -> None:
        """Restore every block's own forward."""
        for block in self.blocks:
            if "forward" in vars(block):
                del block.forward

    # -- one block ------------------------------------------------------------------------------------
    def _forward(self, index: int, part: int, original, hidden_states, *args, **kwargs):
        """Block ``part`` of unit ``index``."""
        first = part == 0
        if first and index == 0:
            branch = self.begin_call()
            self._branch, self._step = self.state.state_of(branch), self.state.plan[self.state.step]
            self.state.record(self._step)
        entry = first and index == self.num_units - self.policy.branch  # where the kept deep state enters
        if self._step.full:
            if entry:
                self._branch.deep = hidden_states  # by reference: no copy
            return original(hidden_states, *args, **kwargs)
        if not any(start <= index < stop for start, stop in self._step.units):
            return hidden_states  # skipped: the model's loop still pushes / pops, balanced
        if entry:
            hidden_states = self._branch.deep  # the deep state of the last full step, before its fusion
        return original(hidden_states, *args, **kwargs)


class SeamCache(StepDriven):
    """Any skipdit cache policy on a diffusers model that wraps a skipdit model (``model``, e.g.
    ``SkipDiTTransformer2DModel.dit``) and whose ``forward`` takes that model's ``cache=`` seam: the run's
    :class:`CacheState` is made by ``policy.start(model, ...)`` exactly as :func:`skipdit.generate` makes it, and
    each call of the wrapper gets its guidance branch of it. Only the wrapper's ``forward`` is replaced, on the
    instance; :meth:`detach` deletes the replacement."""

    def __init__(self, transformer, model, policy: CachePolicy, calls_per_step: int = 1):
        policy.check_model(model)
        super().__init__(calls_per_step, model.num_units)
        self.transformer, self.model, self.policy = transformer, model, policy
        transformer.forward = functools.wraps(transformer.forward)(functools.partial(self._forward,
                                                                                      transformer.forward))

    def new_state(self, timesteps: list[int]) -> CacheState:
        return self.policy.start(self.model, timesteps)

    def detach(self) -> None:
        if "forward" in vars(self.transformer):
            del self.transformer.forward

    def _forward(self, original, *args, **kwargs):
        branch = self.begin_call()
        return original(*args, cache=self.state.branch(branch), **kwargs)
