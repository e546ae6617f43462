"""Noise schedules and timestep respacing: pure functions over numbers.

Respacing follows ADM (guided-diffusion ``space_timesteps``), which DiT and the official Skip-DiT
use: ``"250"`` takes 250 evenly strided steps (t = 0, 4, 8, ..., 995, 999), ``"ddim50"`` takes
``range(0, T, stride)`` with exactly 50 elements (t = 0, 20, ..., 980), and ``"10,20,30"`` splits T
into sections. ``"leading100+1"`` is diffusers' "leading" spacing with ``steps_offset=1``
(t = 1, 11, ..., 991), the schedule of the Hunyuan-DiT pipeline (reference §C).
"""

from __future__ import annotations

import math
import re

import numpy as np

from ..errors import UserError

BETA_SCHEDULES = ("linear", "cosine")


def make_betas(schedule: str = "linear", num_timesteps: int = 1000) -> np.ndarray:
    """Betas in float64. ``linear``: 1e-4 -> 0.02 scaled to T (ADM); ``cosine``: Nichol & Dhariwal."""
    if schedule == "linear":
        scale = 1000 / num_timesteps
        return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    if schedule == "cosine":
        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [
            min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), 0.999)
            for i in range(num_timesteps)
        ]
        return np.array(betas, dtype=np.float64)
    raise UserError(f"unknown beta schedule {schedule!r}; valid: {', '.join(BETA_SCHEDULES)}")


def space_timesteps(num_timesteps: int, spec: str | int) -> list[int]:
    """The sorted original timesteps kept by a respacing spec (see module docstring)."""
    spec = str(spec).strip()
    if spec.startswith("ddim"):
        count = _positive_int(spec[4:], spec)
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == count:
                return list(range(0, num_timesteps, stride))
        raise UserError(f"cannot take exactly {count} strided steps from {num_timesteps} ({spec!r})")
    match = re.fullmatch(r"leading(\d+)(?:\+(\d+))?", spec)
    if match:
        count, offset = int(match[1]), int(match[2] or 0)
        if not 0 < count <= num_timesteps:
            raise UserError(f"respacing {spec!r}: step count must be in 1..{num_timesteps}")
        steps = [i * (num_timesteps // count) + offset for i in range(count)]
        if steps[-1] >= num_timesteps:
            raise UserError(f"respacing {spec!r}: offset pushes timesteps past {num_timesteps - 1}")
        return steps
    sections = [_positive_int(part, spec) for part in spec.split(",")]
    size_per, extra = divmod(num_timesteps, len(sections))
    start, steps = 0, []
    for i, count in enumerate(sections):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise UserError(f"respacing {spec!r}: cannot take {count} steps from a section of {size}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        steps += [start + round(stride * k) for k in range(count)]
        start += size
    return sorted(set(steps))


def respace_betas(betas: np.ndarray, keep: list[int]) -> np.ndarray:
    """Betas of the shortened chain that visits only ``keep``, with the same alphas_cumprod there."""
    alphas_cumprod = np.cumprod(1.0 - betas)
    last, new = 1.0, []
    for t in keep:
        new.append(1.0 - alphas_cumprod[t] / last)
        last = alphas_cumprod[t]
    return np.array(new, dtype=np.float64)


def _positive_int(text: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(
            f"invalid respacing {spec!r}; use a step count like '250', 'ddim50', 'leading100+1' or sections '10,20'"
        )
    return value
