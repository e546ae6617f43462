"""TeaCache (Liu et al. 2025): estimate how much the model output will change from how much the
timestep-modulated input of the first block changed, and skip whole steps while the estimate stays small.

At each step the indicator ``d = mean|m_k - m_{k-1}| / mean|m_{k-1}|`` of the modulated input ``m`` is
rescaled by a per-model polynomial ``f`` and accumulated; while ``sum f(d) < threshold`` the step reuses
the residual ``output - input`` of the unit stack from the last computed step, otherwise it computes
and the sum restarts. The first and last steps always compute. ``f`` maps input change to output change;
:func:`skipdit.tuning.calibrate_teacache` fits it for a model (``skipdit cache calibrate-teacache``), and the
identity is the default.

    teacache:threshold=0.1
    teacache:threshold=0.2,coef=2.1/-0.35/0.04      # polynomial, highest degree first

The decision reads one scalar per step on the host (``.item()``): TeaCache is data-dependent by design.

Batch dependence: the indicator is one mean over the whole batch, so a sample's output depends on the other
samples of its batch (``decides_at_run_time``; docs/caches.md, "Batch dependence").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from .base import CachePolicy, Key, StepPlan, number, numbers, relative_l1

KEYS = {"threshold": Key("threshold", number), "coef": Key("coefficients", numbers)}


@dataclass
class TeaCacheState:
    probe: torch.Tensor | None = None  # the first block's modulated input at the previous step
    residual: torch.Tensor | None = None  # output - input of the unit stack at the last computed step
    total: float = 0.0  # the rescaled input change accumulated since then


@dataclass(frozen=True)
class TeaCache(CachePolicy):
    threshold: float = 0.1
    coefficients: tuple[float, ...] = (1.0, 0.0)
    family: str = "teacache"
    keys = KEYS
    State = TeaCacheState
    decides_at_run_time = True

    def __post_init__(self):
        if not 0 <= self.threshold < float("inf"):  # NaN too: it would never trigger a reuse
            raise UserError(f"TeaCache threshold must be a finite number >= 0, got {self.threshold}")
        if not self.coefficients:
            raise UserError("TeaCache needs at least one polynomial coefficient")
        if not np.isfinite(self.coefficients).all():
            raise UserError(f"TeaCache coefficients must be finite numbers, got {self.coefficients}")

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        """Tentative: the first and last steps are full; the others are decided as they run."""
        last = len(timesteps) - 1
        return [StepPlan(int(t), k in (0, last), ((0, num_units),)) for k, t in enumerate(timesteps)]

    def run(self, model, h: torch.Tensor, c, step: StepPlan, state: TeaCacheState) -> tuple[torch.Tensor, StepPlan]:
        probe = model.first_block_input(h, c)
        previous, state.probe = state.probe, probe
        if not step.full and previous is not None and state.residual is not None:
            total = state.total + float(np.polyval(self.coefficients, relative_l1(probe, previous).item()))
            if total < self.threshold:
                state.total = total
                return h + state.residual, StepPlan(step.t, False, ())
        out = model.run_units(h, c)
        state.residual, state.total = out - h, 0.0
        return out, StepPlan(step.t, True, step.units)
