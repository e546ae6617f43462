"""Noise schedules, timestep respacing and the step lists of the solvers: pure functions over numbers.

Respacing follows ADM (guided-diffusion ``space_timesteps``), which DiT and the official Skip-DiT
use: ``"250"`` takes 250 evenly strided steps (t = 0, 4, 8, ..., 995, 999), ``"ddim50"`` takes
``range(0, T, stride)`` with exactly 50 elements (t = 0, 20, ..., 980), and ``"10,20,30"`` splits T
into sections. ``"leading100+1"`` is diffusers' "leading" spacing with ``steps_offset=1``
(t = 1, 11, ..., 991), the schedule of the Hunyuan-DiT pipeline (reference §C).

The solvers (DPM-Solver++, UniPC, Euler, Heun) sample on the whole discrete chain instead, at a list of
timesteps and noise levels (:class:`SigmaSteps`) chosen as diffusers chooses them, so a figure made here
compares with a diffusers run: ``"linspace"``, ``"leading"`` and ``"trailing"`` are diffusers'
``timestep_spacing`` (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
Table 2), and ``"karras"`` is its ``use_karras_sigmas=True``: the σ of Karras et al. 2022 (EDM, eq. 5,
ρ = 7) between the chain's smallest and largest σ. σ here is EDM's noise level of a VP chain,
σ_t = sqrt((1 - ᾱ_t) / ᾱ_t) (EDM Table 1), so x_t / sqrt(ᾱ_t) = x_0 + σ_t ε.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass

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


# -- the step lists of the solvers ----------------------------------------------------------------------------
SPACINGS = ("linspace", "leading", "trailing")  # diffusers' timestep_spacing
KARRAS = "karras"  # diffusers' use_karras_sigmas=True (with its default linspace spacing)
KARRAS_RHO = 7.0  # EDM §5, eq. 5: "we set rho = 7 for the remainder of this paper"


@dataclass(frozen=True)
class SigmaSteps:
    """A sampler's steps on the discrete chain: step ``k`` evaluates the model at timestep ``timesteps[k]``
    (original 0..T-1 scale; fractional for Euler and Heun) and noise level ``sigmas[k]``, and goes to
    ``sigmas[k + 1]``. The last σ is 0: the final step lands on the data (diffusers' ``final_sigmas_type="zero"``)."""

    timesteps: tuple[float, ...]
    sigmas: tuple[float, ...]  # one more than timesteps, decreasing, ending in 0.0

    def __post_init__(self):
        assert len(self.sigmas) == len(self.timesteps) + 1 and self.sigmas[-1] == 0.0


def chain_sigmas(alphas_cumprod: np.ndarray) -> np.ndarray:
    """σ_t = sqrt((1 - ᾱ_t) / ᾱ_t) of every timestep of the chain, increasing with t (EDM Table 1, VP)."""
    return np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = KARRAS_RHO) -> np.ndarray:
    """``n`` noise levels from ``sigma_max`` down to ``sigma_min``, evenly spaced in σ^(1/ρ) (EDM eq. 5)."""
    ramp = np.linspace(0.0, 1.0, n)
    hi, lo = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def sigma_to_timestep(sigmas: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The (fractional) timesteps of noise levels ``sigmas``: log σ interpolated linearly over the chain's
    table (as diffusers' ``_sigma_to_t``), clamped to 0..T-1."""
    log_table = np.log(table)  # increasing with t
    return np.interp(np.log(np.maximum(sigmas, 1e-10)), log_table, np.arange(len(table), dtype=np.float64))


def solver_timesteps(steps: int, spacing: str, num_timesteps: int = 1000) -> np.ndarray:
    """The integer timesteps of the multistep solvers (diffusers' ``DPMSolverMultistepScheduler`` and
    ``UniPCMultistepScheduler``, ``steps_offset=0``): ``steps + 1`` points of which the last (t = 0) is
    dropped, since the last step goes to σ = 0. E.g. 20 steps, linspace: 999, 949, 899, ..., 50."""
    _check_steps(steps)
    if spacing == "linspace":
        ts = np.linspace(0, num_timesteps - 1, steps + 1).round()[::-1][:-1]
    elif spacing == "leading":
        ts = (np.arange(steps + 1) * (num_timesteps // (steps + 1))).round()[::-1][:-1]
    elif spacing == "trailing":
        ts = np.arange(num_timesteps, 0, -num_timesteps / steps).round() - 1
    else:
        raise UserError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    return _distinct(ts.astype(np.int64), steps, spacing)


def ode_timesteps(steps: int, spacing: str, num_timesteps: int = 1000) -> np.ndarray:
    """The timesteps of the σ-space samplers (diffusers' ``EulerDiscreteScheduler`` and
    ``HeunDiscreteScheduler``): ``steps`` points, t = 0 included (linspace is fractional: 999, 946.42, ...)."""
    _check_steps(steps)
    if spacing == "linspace":
        ts = np.linspace(0, num_timesteps - 1, steps)[::-1]
    elif spacing == "leading":
        ts = (np.arange(steps) * (num_timesteps // steps)).round()[::-1].astype(np.float64)
    elif spacing == "trailing":
        ts = np.arange(num_timesteps, 0, -num_timesteps / steps).round() - 1
    else:
        raise UserError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    return _distinct(ts, steps, spacing)


def solver_steps(steps: int, spacing: str, alphas_cumprod: np.ndarray) -> SigmaSteps:
    """The steps of DPM-Solver++ and UniPC: the chain's σ at :func:`solver_timesteps`; with ``"karras"``,
    Karras σ over the whole chain and the model at their timesteps rounded to integers (as diffusers)."""
    table = chain_sigmas(alphas_cumprod)
    if spacing == KARRAS:
        sigmas = karras_sigmas(table[0], table[-1], _check_steps(steps))
        timesteps = sigma_to_timestep(sigmas, table).round()
    else:
        timesteps = solver_timesteps(steps, spacing, len(table)).astype(np.float64)
        sigmas = table[timesteps.astype(np.int64)]
    return _steps(timesteps, sigmas)


def ode_steps(steps: int, spacing: str, alphas_cumprod: np.ndarray) -> SigmaSteps:
    """The steps of Euler and Heun: σ interpolated linearly over the chain at :func:`ode_timesteps`; with
    ``"karras"``, Karras σ over the whole chain and the model at their fractional timesteps t(σ)."""
    table = chain_sigmas(alphas_cumprod)
    if spacing == KARRAS:
        sigmas = karras_sigmas(table[0], table[-1], _check_steps(steps))
        timesteps = sigma_to_timestep(sigmas, table)
    else:
        timesteps = ode_timesteps(steps, spacing, len(table))
        sigmas = np.interp(timesteps, np.arange(len(table), dtype=np.float64), table)
    return _steps(timesteps, sigmas)


def _steps(timesteps: np.ndarray, sigmas: np.ndarray) -> SigmaSteps:
    return SigmaSteps(tuple(float(t) for t in timesteps), (*(float(s) for s in sigmas), 0.0))


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise UserError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def _distinct(timesteps: np.ndarray, steps: int, spacing: str) -> np.ndarray:
    """``timesteps``, refused if a spacing made two steps of one timestep (too many steps for the chain)."""
    if len(np.unique(timesteps)) != len(timesteps):
        raise UserError(f"{steps} steps with {spacing!r} spacing repeat timesteps of the chain; use fewer "
                        "steps")
    return timesteps
