"""T-GATE (Zhang et al. 2024): cross-attention converges early in sampling, so after a gate step its
outputs are frozen: from step ``gate`` on, every cross-attention sublayer returns what it computed at
step ``gate - 1``. Text-conditioned models only.

    tgate:gate=10            # each guidance branch freezes its own cross-attention; guidance runs on
    tgate:gate=10,cfg=drop   # the original: frozen = mean of the two branches, then no unconditional branch

``cfg=keep`` (the default) leaves guidance to the sampler: the branches keep their own frozen outputs and the
speed-up is the cross-attention's share of the work. ``cfg=drop`` is the original's guidance-aware form
(the official ``tgate_processor`` and pipelines): the cross-attention output frozen for the remaining steps is
the mean of the conditional and unconditional outputs at step ``gate - 1``, and from step ``gate`` on the
sampler runs the conditional branch alone, with no guidance (:attr:`StepPlan.guided`): its output is the step's.
Since the text reaches the network only through the cross-attention, the two branches would compute the
same thing after the gate anyway, so dropping one halves those steps for free. A pipeline that keeps calling
both branches (diffusers' own, through the model seam) gets the averaged output in both, so the same result
without the halving. The later versions' self-attention caching is not reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from .base import CachePolicy, Key, StepPlan, integer, spec_of, sublayer_memo

CFG = ("keep", "drop")
FROZEN = ("cross_attn",)


def _cfg(value: str, key: str, spec: str) -> str:
    if value not in CFG:
        raise UserError(f"malformed cache spec {spec!r}: {key} must be one of {', '.join(CFG)}, got {value!r}")
    return value


KEYS = {"gate": Key("gate", integer), "cfg": Key("cfg", _cfg)}


@dataclass
class TGateState:
    """One guidance branch's cross-attention outputs, keyed ``(unit, name)``: computed (and kept) on every step
    before the gate, so the last ones are step ``gate - 1``'s. With ``cfg=drop``: the branch's ``name``, the
    run's states by branch (``run``, to average over), and the averaged outputs this branch reuses."""

    kept: dict = field(default_factory=dict)
    name: str = "cond"
    run: dict = field(default_factory=dict)
    averaged: dict | None = None


@dataclass(frozen=True)
class TGate(CachePolicy):
    gate: int = 10
    cfg: str = "keep"
    family: str = "tgate"
    keys = KEYS
    State = TGateState

    def __post_init__(self):
        if self.gate < 1:
            raise UserError(f"T-GATE gate step must be >= 1, got {self.gate}")
        if self.cfg not in CFG:
            raise UserError(f"T-GATE cfg must be one of {', '.join(CFG)}, got {self.cfg!r}")

    def check_model(self, model) -> None:
        if model.conditioning != "text":
            raise UserError("T-GATE freezes cross-attention to the text; this model has none (text models only)")
        self.check_units(model.num_units)

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        every = ((0, num_units),)
        return [StepPlan(int(t), k < self.gate, every, () if k < self.gate else FROZEN,
                         guided=k < self.gate or self.cfg == "keep")
                for k, t in enumerate(timesteps)]

    def spec(self) -> str:
        """``tgate:gate=10`` for the default ``cfg=keep``: the spec of the releases before ``cfg``, which
        sample-many's settings fingerprints record, so their folders still resume."""
        return spec_of(self, KEYS if self.cfg != "keep" else {"gate": KEYS["gate"]})

    def new_state(self, branch: str, states: dict[str, object]) -> TGateState:
        return TGateState(name=branch, run=states)

    def run(self, model, h: torch.Tensor, c, step: StepPlan, state: TGateState) -> tuple[torch.Tensor, StepPlan]:
        if step.full or self.cfg == "keep":
            return model.run_units(h, c, memo=sublayer_memo(state.kept, step.reuse, keep=FROZEN)), step
        if state.averaged is None:
            state.averaged = _averaged(state.run, both=state.name == "both")
        return model.run_units(h, c, memo=sublayer_memo(state.averaged, step.reuse, keep=())), step


def _averaged(states: dict[str, TGateState], both: bool) -> dict:
    """The mean of the cross-attention outputs the branches kept at the gate: over ``cond`` and ``uncond`` (two
    passes), or the two halves of ``both`` (one batch of 2N); for a ``both`` call, that mean for each half."""
    halves = []  # per branch (each half of a ``both`` batch): (unit, name) -> (N, T, D)
    for name, state in states.items():
        if not state.kept:  # a branch first called after the gate (``cond``, once ``both`` stops)
            continue
        if name == "both":
            halves += [{key: v.chunk(2)[i] for key, v in state.kept.items()} for i in (0, 1)]  # [cond; uncond]
        else:
            halves.append(state.kept)
    mean = {key: sum(half[key] for half in halves) / len(halves) for key in halves[0]}
    return {key: torch.cat([v, v]) for key, v in mean.items()} if both else mean
