"""Euler and Heun in σ-space (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models", arXiv 2206.00364, EDM) on the discrete VP chain of DiT.

The VP sample x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε is x = x_t / sqrt(ᾱ_t) = x_0 + σ ε in EDM's variables, with
σ_t = sqrt((1 - ᾱ_t) / ᾱ_t) (EDM Table 1, "VP"). Sampling integrates the probability-flow ODE
dx/dσ = (x - D(x; σ)) / σ = ε̂ (EDM eq. 3 with σ(t) = t, s(t) = 1) from σ_max to 0, where the ε-network sees
its own input scale, c_in = 1 / sqrt(σ² + 1) (EDM Table 1), at the (possibly fractional) timestep t(σ) of the
step list (:func:`~skipdit.diffusion.schedule.ode_steps`). No noise is drawn (EDM's S_churn = 0, as diffusers'
default): ``noise`` is accepted so that every sampler has the same signature.

The starting point is x = σ_max · ``x`` for unit Gaussian ``x`` (EDM Algorithm 1, line 1; diffusers' Euler and
Heun do the same for the linspace and trailing spacings, and use sqrt(σ_max² + 1) for leading).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .loop import ModelFn, StepCallback, denoising_steps, noise_prediction, timestep
from .schedule import SigmaSteps


def euler_sample(
    model_fn: ModelFn, x: torch.Tensor, steps: SigmaSteps, *, noise: Callable | None = None,
    callback: StepCallback | None = None, cache_state=None, progress: bool = False,
) -> torch.Tensor:
    """Euler's method on the PF-ODE: x_{k+1} = x_k + (σ_{k+1} - σ_k) ε̂(x_k; σ_k). One model call per step."""
    x = x * steps.sigmas[0]
    for k in denoising_steps(len(steps.timesteps), cache_state, progress):
        s, s_next = steps.sigmas[k], steps.sigmas[k + 1]
        eps = _eps(model_fn, x, s, steps.timesteps[k])
        x0 = x - s * eps  # D(x; σ), for the callback
        x = x + (s_next - s) * eps
        if callback is not None:
            callback(k, x, x0)
    return x


def heun_sample(
    model_fn: ModelFn, x: torch.Tensor, steps: SigmaSteps, *, noise: Callable | None = None,
    callback: StepCallback | None = None, cache_state=None, progress: bool = False,
) -> torch.Tensor:
    """Heun's second-order method (EDM Algorithm 1 with S_churn = 0): an Euler step to σ_{k+1}, then the
    trapezoidal correction x_{k+1} = x_k + (σ_{k+1} - σ_k) (ε̂_k + ε̂'_{k+1}) / 2 with ε̂' at the Euler point,
    except into σ = 0, where the step stays Euler (EDM Algorithm 1, line 9). ``n`` steps cost 2n - 1 model calls.

    **The cache.** Both model calls of step k belong to cache step k: the cache is told once, before the
    first, and plans the step once, at t(σ_k). A full step runs both calls in full, and what a policy keeps
    from it (Skip-Cache's deep features, FORA's sublayer outputs) is that of its last call, the corrector at
    σ_{k+1}, the noise level the next step starts at; a cached step runs both calls from that. Policies that
    decide while sampling (TeaCache, First-Block-Cache, adaptive Skip-Cache) compare consecutive model calls,
    so they see the corrector as one more call; the stats record each step's first decision. The callback
    sees D(x_k; σ_k) of the step's first call.
    """
    n = len(steps.timesteps)
    x = x * steps.sigmas[0]
    for k in denoising_steps(n, cache_state, progress):
        s, s_next = steps.sigmas[k], steps.sigmas[k + 1]
        eps = _eps(model_fn, x, s, steps.timesteps[k])
        x0 = x - s * eps
        x_next = x + (s_next - s) * eps
        if s_next > 0:  # the second call of the same step: no begin_step
            eps_next = _eps(model_fn, x_next, s_next, steps.timesteps[k + 1])
            x_next = x + (s_next - s) * ((eps + eps_next) / 2)
        x = x_next
        if callback is not None:
            callback(k, x, x0)
    return x


def _eps(model_fn: ModelFn, x: torch.Tensor, s: float, t: float) -> torch.Tensor:
    """ε̂(x; σ): the ε-network at its input scale x / sqrt(σ² + 1) and timestep t(σ)."""
    return noise_prediction(model_fn(x / math.sqrt(s * s + 1.0), timestep(t, x)), x)
