"""Diffusion math, samplers and guidance; independent of any network."""

from .gaussian import GaussianDiffusion
from .guidance import classifier_free_guidance
from .samplers import SAMPLERS, SeededNoise, ddim_sample, ddpm_sample, sample
from .schedule import make_betas, space_timesteps

__all__ = [
    "SAMPLERS", "GaussianDiffusion", "SeededNoise", "classifier_free_guidance", "ddim_sample", "ddpm_sample",
    "make_betas", "sample", "space_timesteps",
]
