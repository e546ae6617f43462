"""T-GATE (Zhang et al. 2024): cross-attention converges early in sampling, so after a gate step its
outputs are frozen: from step ``gate`` on, every cross-attention sublayer returns what it computed at
step ``gate - 1``. Text-conditioned models only.

    tgate:gate=10

The original also averages the frozen output over the two guidance branches and then drops the
unconditional branch, which halves the later steps; here guidance is left to the sampler, so the
branches keep their own frozen outputs and the speed-up is the cross-attention's share of the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import UserError
from .base import CachePolicy, Key, StepPlan, SublayerState, integer, sublayer_memo

KEYS = {"gate": Key("gate", integer)}
FROZEN = ("cross_attn",)


@dataclass(frozen=True)
class TGate(CachePolicy):
    gate: int = 10
    family: str = "tgate"
    keys = KEYS
    State = SublayerState

    def __post_init__(self):
        if self.gate < 1:
            raise UserError(f"T-GATE gate step must be >= 1, got {self.gate}")

    def check_model(self, model) -> None:
        if model.conditioning != "text":
            raise UserError("T-GATE freezes cross-attention to the text; this model has none (text models only)")
        self.check_units(model.num_units)

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        every = ((0, num_units),)
        return [StepPlan(int(t), k < self.gate, every, () if k < self.gate else FROZEN)
                for k, t in enumerate(timesteps)]

    def run(self, model, h: torch.Tensor, c, step: StepPlan, state: SublayerState) -> tuple[torch.Tensor, StepPlan]:
        return model.run_units(h, c, memo=sublayer_memo(state.kept, step.reuse, keep=FROZEN)), step


