"""Diffusion math, samplers and guidance; independent of any network."""

from .gaussian import GaussianDiffusion
from .guidance import classifier_free_guidance
from .karras import euler_sample, heun_sample
from .multistep import dpmpp_2m_sample, unipc_sample
from .samplers import (
    SAMPLER_CHOICES,
    SAMPLERS,
    SPACING_CHOICES,
    Sampler,
    SeededNoise,
    ddim_sample,
    ddpm_sample,
    default_steps,
    make_sampler,
    sample,
)
from .schedule import SigmaSteps, make_betas, ode_steps, solver_steps, space_timesteps

__all__ = [
    "SAMPLERS", "SAMPLER_CHOICES", "SPACING_CHOICES", "GaussianDiffusion", "Sampler", "SeededNoise", "SigmaSteps",
    "classifier_free_guidance", "ddim_sample", "ddpm_sample", "default_steps", "dpmpp_2m_sample", "euler_sample",
    "heun_sample", "make_betas", "make_sampler", "ode_steps", "sample", "solver_steps", "space_timesteps",
    "unipc_sample",
]
