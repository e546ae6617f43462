"""Samplers: plain functions over ``model_fn(x, t) -> output``.

``t`` passed to ``model_fn`` is on the original timestep scale (as ADM's respaced diffusion does).
``noise(x)`` draws fresh noise shaped like ``x``; pass a :class:`SeededNoise` so that sample *i*
depends only on seed *i*. ``cache_state`` (if any) is told when each denoising step begins, so a
step is one cache step whether guidance makes one model call or two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import UserError
from .gaussian import GaussianDiffusion

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]  # (step, x_{t-1}, predicted x0)

SAMPLERS = ("ddpm", "ddim")


class SeededNoise:
    """Per-sample Gaussian noise: sample ``k`` draws from its own CPU generator seeded with
    ``seeds[k]``, so a sample never depends on the batch it is in or on the device."""

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        if like.shape[0] != len(self.generators):
            raise UserError(f"batch of {like.shape[0]} but {len(self.generators)} seeds")
        draws = [torch.randn(like.shape[1:], generator=g) for g in self.generators]
        return torch.stack(draws).to(device=like.device, dtype=like.dtype)


def ddpm_sample(
    model_fn: ModelFn, x: torch.Tensor, diffusion: GaussianDiffusion, *, noise: Callable = torch.randn_like,
    clip_denoised: bool = False, callback: StepCallback | None = None, cache_state=None, progress: bool = False,
) -> torch.Tensor:
    """Ancestral sampling x_T -> x_0 through every step of the (respaced) chain."""

    def step(x, i, out):
        mean, log_var, x0 = diffusion.p_mean_variance(out, x, i, clip_denoised)
        nonzero = (i != 0).float().reshape(-1, *([1] * (x.ndim - 1)))  # no noise at the last step
        return mean + nonzero * torch.exp(0.5 * log_var) * noise(x), x0

    return _loop(model_fn, x, diffusion, step, callback, cache_state, progress)


def ddim_sample(
    model_fn: ModelFn, x: torch.Tensor, diffusion: GaussianDiffusion, *, eta: float = 0.0,
    noise: Callable = torch.randn_like, clip_denoised: bool = False, callback: StepCallback | None = None,
    cache_state=None, progress: bool = False,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12); ``eta=0`` is deterministic, ``eta=1`` matches DDPM's variance."""
    if not math.isfinite(eta) or eta < 0:  # NaN would pass `eta < 0` and fill the samples with NaN
        raise UserError(f"eta must be a finite number >= 0, got {eta}")

    def step(x, i, out):
        _, _, x0 = diffusion.p_mean_variance(out, x, i, clip_denoised)
        mean, sigma = diffusion.ddim_step(x, i, x0, eta)
        if eta == 0:
            return mean, x0
        nonzero = (i != 0).float().reshape(-1, *([1] * (x.ndim - 1)))
        return mean + nonzero * sigma * noise(x), x0

    return _loop(model_fn, x, diffusion, step, callback, cache_state, progress)


def _loop(model_fn, x, diffusion, step, callback, cache_state, progress):
    indices = range(diffusion.num_steps - 1, -1, -1)
    bar = tqdm(indices, desc="sampling", leave=False, disable=not progress)
    for k, index in enumerate(bar):
        i = torch.full((x.shape[0],), index, device=x.device, dtype=torch.long)
        if cache_state is not None:
            cache_state.begin_step(k)
        out = model_fn(x, diffusion.model_timesteps(i))
        x, x0 = step(x, i, out)
        if callback is not None:
            callback(k, x, x0)
    return x


def sample(name: str, *args, **kwargs) -> torch.Tensor:
    """Dispatch to a sampler by name (``ddpm`` or ``ddim``)."""
    if name == "ddpm":
        if kwargs.pop("eta", 0.0):
            raise UserError("eta applies to the ddim sampler only")
        return ddpm_sample(*args, **kwargs)
    if name == "ddim":
        return ddim_sample(*args, **kwargs)
    raise UserError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
