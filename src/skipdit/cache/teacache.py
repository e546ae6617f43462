"""TeaCache (Liu et al. 2025): estimate how much the model output will change from how much the
timestep-modulated input of the first block changed, and skip whole steps while the estimate stays small.

At each step the indicator ``d = mean|m_k - m_{k-1}| / mean|m_{k-1}|`` of the modulated input ``m`` is
rescaled by a per-model polynomial ``f`` and accumulated; while ``sum f(d) < threshold`` the step reuses
the residual ``output - input`` of the unit stack from the last computed step, otherwise it computes
and the sum restarts. The first and last steps always compute. ``f`` maps input change to output change;
:func:`calibrate` fits it for a model (``skipdit cache calibrate-teacache``), and the identity is the default.

    teacache:threshold=0.1
    teacache:threshold=0.2,coef=2.1/-0.35/0.04      # polynomial, highest degree first

The decision reads one scalar per step on the host (``.item()``): TeaCache is data-dependent by design.

Batch dependence: the indicator is one mean over the whole batch, so a sample's output depends on the other
samples of its batch (``decides_at_run_time``; docs/caches.md, "Batch dependence").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import UserError
from .base import CachePolicy, StepPlan, relative_l1

KEYS = {"threshold": "threshold", "coef": "coefficients"}


@dataclass(frozen=True)
class TeaCache(CachePolicy):
    threshold: float = 0.1
    coefficients: tuple[float, ...] = (1.0, 0.0)
    family: str = "teacache"
    keys = KEYS
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

    def run(self, model, h: torch.Tensor, c, step: StepPlan, slot: dict) -> torch.Tensor:
        probe = model.first_block_input(h, c)
        previous, slot["probe"] = slot.get("probe"), probe
        if not step.full and previous is not None and "residual" in slot:
            total = slot["total"] + float(np.polyval(self.coefficients, relative_l1(probe, previous).item()))
            if total < self.threshold:
                slot["total"], slot["ran"] = total, StepPlan(step.t, False, ())
                return h + slot["residual"]
        out = model.run_units(h, c)
        slot["residual"], slot["total"] = out - h, 0.0
        slot["ran"] = StepPlan(step.t, True, step.units)
        return out




@dataclass(frozen=True)
class _Recorder(CachePolicy):
    """Runs every step in full and appends (input change, output change) pairs to ``pairs``."""

    pairs: list = field(default_factory=list)
    family: str = "teacache-calibration"

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        return [StepPlan(int(t), True, ((0, num_units),)) for t in timesteps]

    def run(self, model, h: torch.Tensor, c, step: StepPlan, slot: dict) -> torch.Tensor:
        probe, out = model.first_block_input(h, c), model.run_units(h, c)
        if "probe" in slot:
            self.pairs.append((relative_l1(probe, slot["probe"]).item(), relative_l1(out, slot["out"]).item()))
        slot["probe"], slot["out"] = probe, out
        return out

    def spec(self) -> str:
        return self.family


def calibrate(model, seeds: Sequence[int], degree: int = 4, **generate_kwargs) -> tuple[tuple[float, ...], dict]:
    """Fit TeaCache's polynomial for ``model``: uncached runs on ``seeds`` (``generate`` settings in
    ``generate_kwargs``), least squares from the first block's input change to the unit stack's output
    change over consecutive steps. Returns the coefficients (highest degree first) and fit statistics."""
    from ..sampling import generate

    recorder = _Recorder()
    generate(model, seeds, cache=recorder, **generate_kwargs)
    pairs = np.array(recorder.pairs)
    if len(pairs) <= degree:
        raise UserError(f"{len(pairs)} step pairs are too few to fit a degree-{degree} polynomial; use more steps")
    x, y = pairs[:, 0], pairs[:, 1]
    coefficients = np.polyfit(x, y, degree)
    residual = y - np.polyval(coefficients, x)
    r2 = 1 - (residual**2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-30)
    return tuple(float(c) for c in coefficients), {"pairs": len(pairs), "r2": float(r2)}
