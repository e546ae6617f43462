"""Multistep ODE solvers in data prediction on the discrete VP chain: DPM-Solver++(2M) and UniPC (B(h) = e^h - 1).

Both run on :class:`~skipdit.diffusion.schedule.SigmaSteps` (the step list as diffusers builds it) over the
sample x_t = α_t x_0 + σ_t ε of the VP chain, with α_t = 1 / sqrt(1 + s²), σ_t = s α_t for the EDM noise level s
of the step, and the half log-SNR λ_t = log(α_t / σ_t) = -log s, which is +inf at the final s = 0. The network's
ε becomes the data prediction x̂_0 = (x_t - σ_t ε) / α_t ("++": Lu et al. 2022, arXiv 2211.01095, §4), and the
solvers integrate the exact linear part of the probability-flow ODE, x_t = (σ_t / σ_s) x_s + σ_t ∫ e^λ x̂_0 dλ,
with a polynomial in λ through the last few x̂_0.

Each step calls the model once, so step k is cache step k. Noise is never drawn (``noise`` is accepted so
that every sampler has the same signature). The last step goes to s = 0, where h = +inf: every update there
reduces to x = x̂_0, the first-order step, whatever the step count (diffusers' ``lower_order_final`` with its
``final_sigmas_type="zero"``, which forces the last step to first order below and above 15 steps alike).
Coefficients are computed in float64 from the step list; the update runs in the sample's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..errors import UserError
from .loop import ModelFn, StepCallback, denoising_steps, noise_prediction, timestep
from .schedule import SigmaSteps

UNIPC_ORDERS = (1, 2, 3)


def dpmpp_2m_sample(
    model_fn: ModelFn, x: torch.Tensor, steps: SigmaSteps, *, noise: Callable | None = None,
    callback: StepCallback | None = None, cache_state=None, progress: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2M) (arXiv 2211.01095, Algorithm 2) from x_T = ``x`` (unit Gaussian noise) to x_0.

    Step k: h = λ_{k+1} - λ_k, r = (λ_k - λ_{k-1}) / h, D = (1 + 1/(2r)) x̂_0(k) - 1/(2r) x̂_0(k-1), and
    x_{k+1} = (σ_{k+1} / σ_k) x_k - α_{k+1} (e^{-h} - 1) D. The first step has no history: D = x̂_0(0)
    (DPM-Solver++(1), which is DDIM); the last lands on x̂_0 (see the module docstring).
    """
    previous: tuple[float, torch.Tensor] | None = None  # (λ, x̂_0) of the step before
    for k in denoising_steps(len(steps.timesteps), cache_state, progress):
        s, s_next = steps.sigmas[k], steps.sigmas[k + 1]
        x0 = _data_prediction(model_fn, x, s, steps.timesteps[k])
        if s_next == 0.0:
            x_next = x0
        else:
            h = _log_snr(s_next) - _log_snr(s)
            if previous is None:
                d = x0
            else:
                r = (_log_snr(s) - previous[0]) / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous[1]
            alpha_next, sigma_next = _alpha_sigma(s_next)
            x_next = (sigma_next / _alpha_sigma(s)[1]) * x - alpha_next * math.expm1(-h) * d
        previous = (_log_snr(s), x0)
        x = x_next
        if callback is not None:
            callback(k, x, x0)
    return x


def unipc_sample(
    model_fn: ModelFn, x: torch.Tensor, steps: SigmaSteps, *, order: int = 2, noise: Callable | None = None,
    callback: StepCallback | None = None, cache_state=None, progress: bool = False,
) -> torch.Tensor:
    """UniPC (Zhao et al. 2023, arXiv 2302.04867) with B(h) = e^h - 1 ("bh2"), data prediction, ``order`` 2:
    diffusers' ``UniPCMultistepScheduler`` defaults (``lower_order_final=True``, corrector on every step).

    At step k the new x̂_0(k) first corrects x_k itself (UniC, §3.2: the evaluation the predictor needs anyway,
    so no extra model call), then the predictor UniP-p takes the corrected x_k to x_{k+1} with
    p = min(order, k + 1, steps - k): fewer past points while they are missing (warm-up), and a lower order
    on the last steps (``lower_order_final``). The corrector of step k has the order of step k-1's predictor.
    """
    if order not in UNIPC_ORDERS:
        raise UserError(f"UniPC order must be one of {', '.join(map(str, UNIPC_ORDERS))}, got {order}")
    n = len(steps.timesteps)
    history: list[tuple[float, torch.Tensor]] = []  # (λ, x̂_0) of the last `order` evaluations, oldest first
    before: torch.Tensor | None = None  # x_{k-1} after its correction: what the last predictor started from
    last_order = 0
    for k in denoising_steps(n, cache_state, progress):
        s = steps.sigmas[k]
        x0 = _data_prediction(model_fn, x, s, steps.timesteps[k])
        if k > 0:
            x = _unipc_update(before, steps.sigmas[k - 1], s, history, last_order, corrector=x0)
        history = [*history, (_log_snr(s), x0)][-order:]
        last_order = min(order, k + 1, n - k)
        before = x
        x = _unipc_update(x, s, steps.sigmas[k + 1], history, last_order)
        if callback is not None:
            callback(k, x, x0)
    return x


def _unipc_update(
    x: torch.Tensor, s: float, s_next: float, history: list[tuple[float, torch.Tensor]], order: int,
    corrector: torch.Tensor | None = None,
) -> torch.Tensor:
    """One UniP-p step from ``x`` at noise ``s`` to ``s_next`` through the last ``order`` points of ``history``
    (its newest, x̂_0 at ``s``, is m_0), or with ``corrector`` (x̂_0 at ``s_next``) the UniC-p correction of
    the point that step reached (arXiv 2302.04867, Algorithms 1-2, B(h) = e^h - 1).

    With D_i = (m_i - m_0) / r_i, r_i = (λ_i - λ_s) / h, the update is
    x' = (σ' / σ) x - α' (e^{-h} - 1) m_0 - α' B(h) Σ ρ_i D_i, the ρ solving R ρ = g / B(h) for the Vandermonde
    R_{ij} = r_j^i and g_i = i! (-h) φ_{i+1}(-h) (φ_1(z) = (e^z - 1)/z, φ_{k+1}(z) = (φ_k(z) - 1/k!)/z). The
    predictor drops the last row and column (its D's are the p-1 past points); for p = 2 it uses ρ = 1/2, and
    UniC-1 ρ = 1/2, as the official UniPC code and diffusers do (with ρ = 1/2, UniP-2 is DPM-Solver++(2M)).
    """
    m0 = history[-1][1]
    if s_next == 0.0:  # h = +inf: every coefficient but that of m_0 vanishes (see the module docstring)
        return m0
    lam_s, lam_next = _log_snr(s), _log_snr(s_next)
    h = lam_next - lam_s
    past = history[-order:-1][::-1]  # the p-1 points before m_0, newest first
    ratios = [(lam - lam_s) / h for lam, _ in past]
    diffs = [(m - m0) / r for (_, m), r in zip(past, ratios)]
    b = _unipc_weights(-h, order) / math.expm1(-h)
    vander = np.array([[r**i for r in [*ratios, 1.0]] for i in range(order)])  # R_{ij} = r_j^i
    if corrector is None:
        rho = [] if order == 1 else [0.5] if order == 2 else list(np.linalg.solve(vander[:-1, :-1], b[:-1]))
        terms = [(rho_i, d) for rho_i, d in zip(rho, diffs)]
    else:
        rho = [0.5] if order == 1 else list(np.linalg.solve(vander, b))
        terms = [*zip(rho[:-1], diffs), (rho[-1], corrector - m0)]
    alpha_next, sigma_next = _alpha_sigma(s_next)
    expm1 = math.expm1(-h)
    out = (sigma_next / _alpha_sigma(s)[1]) * x - (alpha_next * expm1) * m0
    for rho_i, d in terms:
        out = out - (alpha_next * expm1 * float(rho_i)) * d  # B(h) = e^{-h} - 1 in data prediction
    return out


def _unipc_weights(z: float, order: int) -> np.ndarray:
    """g_i = i! z φ_{i+1}(z), i = 1..order, by the φ recursion (float64: it cancels for small z)."""
    phi = math.expm1(z) / z  # φ_1
    weights = []
    for i in range(1, order + 1):
        phi = (phi - 1 / math.factorial(i)) / z  # φ_{i+1}
        weights.append(math.factorial(i) * z * phi)
    return np.array(weights)


def _data_prediction(model_fn: ModelFn, x: torch.Tensor, s: float, t: float) -> torch.Tensor:
    """x̂_0 = (x - σ_t ε) / α_t of the network's ε at the step's timestep."""
    alpha, sigma = _alpha_sigma(s)
    eps = noise_prediction(model_fn(x, timestep(t, x)), x)
    return (x - sigma * eps) / alpha


def _alpha_sigma(s: float) -> tuple[float, float]:
    """(α_t, σ_t) of the VP chain at EDM noise level s: α = 1 / sqrt(1 + s²), σ = s α."""
    alpha = 1.0 / math.sqrt(1.0 + s * s)
    return alpha, s * alpha


def _log_snr(s: float) -> float:
    """λ = log(α_t / σ_t) = -log s."""
    return -math.log(s)
