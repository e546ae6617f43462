"""Samplers: plain functions over ``model_fn(x, t) -> output``, and every sampler by name.

``t`` passed to ``model_fn`` is on the original timestep scale (as ADM's respaced diffusion does).
``noise(x)`` draws fresh noise shaped like ``x``; pass a :class:`SeededNoise` so that sample *i*
depends only on seed *i*. ``cache_state`` (if any) is told when each denoising step begins, so a
step is one cache step whether guidance makes one model call or two (or Heun two per branch).

The samplers (:func:`make_sampler` builds any of them on its step list, as a :class:`Sampler`):

* ``ddpm``, ``ddim``: ADM's ancestral sampler and DDIM on the respaced chain (here);
* ``dpm++2m``, ``unipc``: DPM-Solver++(2M) and UniPC-bh2 (:mod:`.multistep`);
* ``euler``, ``heun``: EDM's σ-space Euler and Heun (:mod:`.karras`);
* ``diffusers:<Scheduler>``, or a diffusers scheduler object: any scheduler of diffusers' ``DiTPipeline``,
  driven by this loop (:mod:`.diffusers_scheduler`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UserError
from ..registry import Registry
from . import diffusers_scheduler
from .gaussian import GaussianDiffusion
from .karras import euler_sample, heun_sample
from .loop import ModelFn, StepCallback
from .multistep import dpmpp_2m_sample, unipc_sample
from .schedule import KARRAS, SPACINGS, make_betas, ode_steps, solver_steps


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
    """Dispatch to a chain sampler by name (``ddpm`` or ``ddim``) over a :class:`GaussianDiffusion`; every
    sampler, on its own step list: :func:`make_sampler`."""
    if name == "ddpm":
        if kwargs.pop("eta", 0.0):
            raise UserError("eta applies to the ddim sampler only")
        return ddpm_sample(*args, **kwargs)
    if name == "ddim":
        return ddim_sample(*args, **kwargs)
    raise UserError(f"unknown chain sampler {name!r}; valid: ddpm, ddim (make_sampler builds every sampler)")


# -- every sampler by name --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerKind:
    """A built-in sampler: its default step count and the step lists it takes, its default first (none:
    ddpm and ddim sample on ADM's respaced chain instead, see :func:`~.schedule.space_timesteps`)."""

    name: str
    default_steps: int
    spacings: tuple[str, ...] = ()


SAMPLER_KINDS: Registry[SamplerKind] = Registry("sampler")
for _kind in (
    SamplerKind("ddpm", 250),  # DiT's and Skip-DiT's official sampler, ADM DDPM-250
    SamplerKind("ddim", 50),  # Latte's official sampler
    # the defaults of the matching diffusers scheduler: timestep_spacing="linspace", use_karras_sigmas=False
    SamplerKind("dpm++2m", 20, (*SPACINGS, KARRAS)),
    SamplerKind("unipc", 20, (*SPACINGS, KARRAS)),
    SamplerKind("euler", 20, (*SPACINGS, KARRAS)),
    SamplerKind("heun", 20, (*SPACINGS, KARRAS)),
):
    SAMPLER_KINDS.register(_kind.name, _kind)

SAMPLERS = tuple(SAMPLER_KINDS)  # the built-in names
DIFFUSERS_SAMPLER = diffusers_scheduler.PREFIX + "<Scheduler>"  # how the names list shows the diffusers form
DIFFUSERS_DEFAULT_STEPS = 20
SPACING_CHOICES = (*SPACINGS, KARRAS)
CHAIN_SAMPLERS = tuple(n for n in SAMPLERS if not SAMPLER_KINDS.get(n).spacings)  # ADM's chain: ddpm, ddim


class SamplerChoices:
    """The names ``--sampler`` takes, for argparse's ``choices``: the built-in samplers and any
    ``diffusers:<Scheduler>`` (its class is checked when the settings are made, which imports diffusers)."""

    def __contains__(self, name: object) -> bool:
        prefix = diffusers_scheduler.PREFIX
        return isinstance(name, str) and (name in SAMPLER_KINDS or (name.startswith(prefix) and name != prefix))

    def __iter__(self) -> Iterator[str]:
        return iter((*SAMPLERS, DIFFUSERS_SAMPLER))


SAMPLER_CHOICES = SamplerChoices()


def sampler_name(sampler) -> str:
    """The name of a sampler: itself, or ``diffusers:<Class>`` for a scheduler object."""
    return sampler if isinstance(sampler, str) else diffusers_scheduler.PREFIX + type(sampler).__name__


def default_steps(sampler) -> int:
    """The step count of ``sampler`` when none is given."""
    if isinstance(sampler, str) and sampler in SAMPLER_KINDS:
        return SAMPLER_KINDS.get(sampler).default_steps
    return DIFFUSERS_DEFAULT_STEPS


def default_spacing(sampler) -> str | None:
    """The step list of ``sampler`` when none is given (None: ADM's respacing, or the scheduler's config)."""
    if isinstance(sampler, str) and sampler in SAMPLER_KINDS:
        spacings = SAMPLER_KINDS.get(sampler).spacings
        return spacings[0] if spacings else None
    return None


def check_sampler(sampler, *, spacing: str | None = None, respacing: str | None = None) -> None:
    """Refuse an unknown sampler, or a step list it does not take, naming the valid ones. A ``diffusers:``
    name or a scheduler object imports diffusers and checks the scheduler (:mod:`.diffusers_scheduler`)."""
    name = sampler_name(sampler)
    is_diffusers = not isinstance(sampler, str) or sampler.startswith(diffusers_scheduler.PREFIX)
    if not is_diffusers and sampler not in SAMPLER_KINDS:
        raise UserError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLER_CHOICES)} "
                        "(e.g. diffusers:DPMSolverMultistepScheduler)")
    if respacing is not None and name not in CHAIN_SAMPLERS:
        raise UserError(f"respacing applies to {' and '.join(CHAIN_SAMPLERS)}; {name} takes a spacing "
                        f"({', '.join(SPACING_CHOICES)})")
    if spacing is not None:
        if name in CHAIN_SAMPLERS:
            raise UserError(f"{name} samples on ADM's respaced chain: give it a respacing (e.g. ddim50), not a "
                            "spacing")
        if not isinstance(sampler, str):
            raise UserError(f"a scheduler object brings its own spacing (its config); configure {name} instead")
        valid = SAMPLER_KINDS.get(sampler).spacings if sampler in SAMPLER_KINDS else SPACING_CHOICES
        if spacing not in valid:
            raise UserError(f"unknown spacing {spacing!r} for {name}; valid: {', '.join(valid)}")
    if not isinstance(sampler, str):
        diffusers_scheduler.check_scheduler(sampler)
    elif is_diffusers:
        diffusers_scheduler.make_scheduler(sampler, spacing)


@dataclass(frozen=True)
class Sampler:
    """A sampler on its step list, ready to run: ``sampler(model_fn, x_T, noise=..., callback=...,
    cache_state=..., progress=...)`` from unit Gaussian ``x_T``.

    ``timesteps`` are those of each step's first model call (original scale; fractional for Euler and Heun),
    ``calls_per_step`` the model calls (per guidance branch) of each step: 1, or for Heun 2 but 1 on the step
    into σ = 0."""

    name: str
    timesteps: tuple[float, ...]
    calls_per_step: tuple[int, ...]
    run: Callable[..., torch.Tensor] = field(repr=False, compare=False)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def model_calls(self) -> int:
        """Model calls per guidance branch of a run (Heun: 2n - 1)."""
        return sum(self.calls_per_step)

    def cache_timesteps(self) -> list[int]:
        """The timesteps a cache plans on, one per step: the fractional ones rounded to the nearest integer
        (halves up), since the cache windows (``start``, ``stop``) are written in the chain's integer
        timesteps and a step at t = 699.6 is, for them, the step at 700."""
        return [int(math.floor(t + 0.5)) for t in self.timesteps]

    def __call__(self, model_fn: ModelFn, x: torch.Tensor, *, noise: Callable = torch.randn_like,
                 callback: StepCallback | None = None, cache_state=None, progress: bool = False) -> torch.Tensor:
        return self.run(model_fn, x, noise=noise, callback=callback, cache_state=cache_state, progress=progress)


def make_sampler(
    sampler="ddpm", *, steps: int | None = None, spacing: str | None = None, respacing: str | None = None,
    eta: float = 0.0, learn_sigma: bool = True,
) -> Sampler:
    """``sampler`` (a name of :data:`SAMPLER_CHOICES`, or a diffusers scheduler object) at ``steps`` (default
    :func:`default_steps`) on its step list: ``respacing`` for ddpm and ddim (default: ``steps`` strided steps),
    ``spacing`` for the others (default :func:`default_spacing`). ``eta`` is DDIM's; ``learn_sigma`` says
    whether the network outputs DDPM's learned variance (the other samplers drop it)."""
    check_sampler(sampler, spacing=spacing, respacing=respacing)
    if eta and sampler != "ddim":
        raise UserError(f"eta applies to the ddim sampler only, not {sampler_name(sampler)}")
    name, n = sampler_name(sampler), default_steps(sampler) if steps is None else steps
    if name in CHAIN_SAMPLERS:
        diffusion = GaussianDiffusion.create(respacing or str(n), learn_sigma=learn_sigma)
        run = partial(ddpm_sample, diffusion=diffusion) if name == "ddpm" else \
            partial(ddim_sample, diffusion=diffusion, eta=eta)
        return Sampler(name, tuple(float(t) for t in diffusion.sampling_timesteps()), (1,) * diffusion.num_steps,
                       run)
    if name in SAMPLER_KINDS:
        spacing = spacing or default_spacing(name)
        acp = np.cumprod(1.0 - make_betas("linear"))  # DiT's chain, the one every skipdit model is trained on
        if name in ("dpm++2m", "unipc"):
            on = solver_steps(n, spacing, acp)
            return Sampler(name, on.timesteps, (1,) * n,
                           partial(dpmpp_2m_sample if name == "dpm++2m" else unipc_sample, steps=on))
        on = ode_steps(n, spacing, acp)
        if name == "euler":
            return Sampler(name, on.timesteps, (1,) * n, partial(euler_sample, steps=on))
        # Heun corrects every step but the one into σ = 0
        return Sampler(name, on.timesteps, (2,) * (n - 1) + (1,), partial(heun_sample, steps=on))
    scheduler = diffusers_scheduler.make_scheduler(sampler, spacing) if isinstance(sampler, str) else sampler
    timesteps, calls = diffusers_scheduler.step_timesteps(scheduler, n)
    return Sampler(name, timesteps, calls, partial(diffusers_scheduler.diffusers_sample, scheduler=scheduler,
                                                   num_steps=n))
