"""FORA (Selvaraju et al. 2024): every block's attention and MLP outputs are kept on full steps and
reused on the ``N - 1`` steps after; the adaLN modulation, gates and residual adds are recomputed
with the current timestep. The author's DiT baseline (reference §B.7, ``DiT_pab``) is this rule with
N = 2 and always-full steps at t >= 1000 and t < 10.

    fora:N=3                 # a full step every 3 steps
    fora:N=2,start=900,stop=10
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import UserError
from .base import CachePolicy, Key, StepPlan, SublayerState, integer, optional_integer, sublayer_memo
from .schedule import interval_schedule

REUSED = ("attn", "cross_attn", "mlp", "temporal_attn", "temporal_mlp")
KEYS = {"N": Key("interval", integer), "start": Key("start_t", optional_integer),
        "stop": Key("stop_t", optional_integer)}


@dataclass(frozen=True)
class Fora(CachePolicy):
    """``interval`` N: a full step every N steps; ``start_t`` / ``stop_t``: steps with t >= start are full;
    from the first t <= stop on, the counter restarts (as Skip-Cache's window)."""

    interval: int = 2
    start_t: int | None = None
    stop_t: int | None = None
    family: str = "fora"
    keys = KEYS
    State = SublayerState

    def __post_init__(self):
        if self.interval < 1:
            raise UserError(f"FORA interval N must be >= 1, got {self.interval}")

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        flags = interval_schedule(timesteps, self.interval, start_t=self.start_t, stop_t=self.stop_t)
        every = ((0, num_units),)
        return [StepPlan(int(t), full, every, () if full else REUSED) for t, full in zip(timesteps, flags)]

    def run(self, model, h: torch.Tensor, c, step: StepPlan, state: SublayerState) -> tuple[torch.Tensor, StepPlan]:
        return model.run_units(h, c, memo=sublayer_memo(state.kept, step.reuse)), step


