"""Skip-Cache for models that skipdit does not own: a declared long-skip layout plus block hooks.

A transformer with long skips is described by :class:`LongSkipLayout`: ``L`` blocks in one
``ModuleList``, the first ``P`` push their outputs, the last ``P`` pop them (LIFO, so block ``j`` meets
block ``L-1-j``), and the ``L - 2P`` blocks between are unpaired (Hunyuan-DiT: 2, U-ViT: 1, Skip-DiT: 0).
That is all Skip-Cache needs to know (reference §B.1).

:class:`BlockCache` leaves the model's own forward (embeddings, its block loop with the skip stack,
the head) untouched and replaces each block's ``forward`` on the instance. On a cached step the blocks
``b .. L-b-1`` return their input unchanged, at no cost, so the model's loop still pushes and pops a
balanced stack; the first ``b`` blocks compute, so the deep blocks ``L-b .. L-1`` pop exactly their fresh
outputs; block ``L-b`` gets the hidden state kept on the last full step instead of its input. The state
parameters and buffers are never touched, so the state dict stays the same, and :meth:`BlockCache.detach`
restores the original forward exactly.

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
from ..base import CacheState, CacheStats
from ..skip_cache import SkipCache, SkipCacheState

# the branches of the calls of one step, by the number of calls per step
CALL_BRANCHES = {1: ("both",), 2: ("cond", "uncond")}


@dataclass(frozen=True)
class LongSkipLayout:
    """``num_units`` blocks; blocks ``0 .. num_pairs-1`` push, blocks ``num_units-num_pairs ..`` pop."""

    num_units: int
    num_pairs: int

    def __post_init__(self):
        if not 0 < self.num_pairs <= self.num_units // 2:
            raise UserError(f"{self.num_pairs} long-skip pairs do not fit in {self.num_units} blocks")

    @property
    def middle(self) -> range:
        """The unpaired blocks."""
        return range(self.num_pairs, self.num_units - self.num_pairs)

    def check_branch(self, branch: int) -> None:
        if branch > self.num_pairs:
            unpaired = f"; blocks {self.middle.start}..{self.middle.stop - 1} are unpaired" if self.middle else ""
            raise UserError(f"Skip-Cache branch b={branch} needs b <= {self.num_pairs} for this model "
                             f"({self.num_pairs} long-skip pairs{unpaired})")


class BlockCache:
    """Skip-Cache on ``blocks`` (a ``ModuleList``) laid out as ``layout``, driven by ``policy``; each step
    makes ``calls_per_step`` calls (1: guidance batched; 2: cond, then uncond)."""

    def __init__(self, blocks, layout: LongSkipLayout, policy: SkipCache, calls_per_step: int = 1):
        if len(blocks) != layout.num_units:
            raise UserError(f"the layout declares {layout.num_units} blocks, the model has {len(blocks)}")
        if calls_per_step not in CALL_BRANCHES:
            raise UserError(f"calls_per_step must be 1 (guidance batched) or 2 (cond, then uncond), "
                             f"got {calls_per_step!r}")
        layout.check_branch(policy.branch)
        self.blocks, self.layout, self.policy = blocks, layout, policy
        self.branches = CALL_BRANCHES[calls_per_step]
        self.state: CacheState | None = None
        self.ends_steps = True  # bare-model use: a step ends after its calls; a hooked scheduler ends them instead
        self._calls = 0  # calls of the current step so far
        self._branch: SkipCacheState | None = None  # the state of the call under way
        for index, block in enumerate(blocks):
            block.forward = functools.partial(self._forward, index, block.forward)

    # -- the run --------------------------------------------------------------------------------------
    def start(self, timesteps: Sequence[int]) -> None:
        """A new sampling run over ``timesteps`` (original 0..999 scale, in sampling order)."""
        plan = self.policy.plan([int(t) for t in timesteps], self.layout.num_units)
        self.state = CacheState(self.policy, plan, self.layout.num_units)
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
            return CacheStats.from_plan([], self.layout.num_units)
        return self.state.stats

    def detach(self) -> None:
        """Restore every block's own forward."""
        for block in self.blocks:
            if "forward" in vars(block):
                del block.forward

    # -- one block ------------------------------------------------------------------------------------
    def _forward(self, index: int, original, hidden_states, *args, **kwargs):
        if index == 0:
            self._begin_call()
        L, b = self.layout.num_units, self.policy.branch
        step = self.state.plan[self.state.step]
        if step.full:
            if index == L - b:
                self._branch.deep = hidden_states  # by reference: no copy
            return original(hidden_states, *args, **kwargs)
        if b <= index < L - b:
            return hidden_states  # skipped: the model's loop still pushes / pops, balanced
        if index == L - b:
            hidden_states = self._branch.deep  # the deep state of the last full step, before its fusion
        return original(hidden_states, *args, **kwargs)

    def _begin_call(self) -> None:
        state = self.state
        if state is None:
            raise RuntimeError("Skip-Cache has no schedule yet: run the pipeline, or pass timesteps to enable()")
        if self._calls == len(self.branches):
            if not self.ends_steps:
                raise RuntimeError(f"the pipeline called the transformer {self._calls + 1} times in one step; "
                                   "enable(pipe.transformer, spec, timesteps=..., calls_per_step=2) drives it by hand")
            state.step += 1
            self._calls = 0
        if state.step >= len(state.plan):
            raise RuntimeError(f"Skip-Cache planned {len(state.plan)} steps and they are done; start a new run "
                               "(the pipeline does it) or disable the cache")
        self._branch = state.state_of(self.branches[self._calls])
        state.record(state.plan[state.step])
        self._calls += 1
