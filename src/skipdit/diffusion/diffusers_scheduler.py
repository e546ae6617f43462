"""Any diffusers scheduler as a sampler, driven by skipdit's loop (so the cache state, the per-sample noise and the
guidance stay skipdit's).

``diffusers:<Class>`` names one of the schedulers diffusers' ``DiTPipeline`` takes (its
``KarrasDiffusionSchedulers``), built from DiT's chain (:data:`DIT_CHAIN`): 1000 steps, linear betas
1e-4..0.02, ε-prediction. A scheduler *object* may be given instead; it is a template: every run samples
with a fresh copy (``type(s).from_config(s.config)``), so the object is never stepped, runs and batches
never share state, and its configuration (spacing, Karras σ, solver order ...) is used as it is, once checked
to be on DiT's chain with ε-prediction.

The loop is the one of diffusers' pipelines: ``set_timesteps``, x_T = noise · ``init_noise_sigma``, and per
timestep ``scale_model_input``, the network, ``step``. The network's learned-variance channels are dropped
(the scheduler gets ε only; for DiT's learned variance use skipdit's ``ddpm``). A scheduler whose ``step``
draws noise gets ``generator=`` one CPU generator per sample, the sample's own (those of
:class:`~skipdit.diffusion.samplers.SeededNoise`, which drew its x_T), so sample i still depends only on
seed i; one that draws noise it cannot be given per sample is refused.

**Cache steps.** Each call of ``step`` is one cache step, except for the schedulers that alternate a first-
and a second-order call (those with ``state_in_first_order``: Heun, KDPM2, KDPM2-ancestral): there the two
calls of one ODE step are one cache step, as skipdit's ``heun`` does, and the cache plans on the timesteps of
the first calls.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import torch

from ..errors import UserError
from .loop import ModelFn, StepCallback, denoising_steps, noise_prediction, timestep

PREFIX = "diffusers:"
DIT_CHAIN = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                 prediction_type="epsilon")
# Schedulers that draw noise without a generator argument, from one source for the whole batch.
BATCH_NOISE = {"DPMSolverSDEScheduler": "draws its noise from a Brownian tree seeded by its config for the whole "
                                        "batch, not per sample"}
CHAIN_RTOL = 1e-5  # diffusers computes ᾱ in float32: 3.6e-7 from skipdit's float64 chain (diffusers 0.42.1)


def _diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise UserError("diffusers: samplers need diffusers: pip install 'skipdit[diffusers]'") from err
    return diffusers


def scheduler_names() -> tuple[str, ...]:
    """The scheduler classes ``diffusers:<Class>`` may name: those diffusers' ``DiTPipeline`` accepts."""
    _diffusers()
    from diffusers.schedulers import KarrasDiffusionSchedulers

    return tuple(member.name for member in KarrasDiffusionSchedulers)


def make_scheduler(name: str, spacing: str | None = None):
    """The scheduler ``diffusers:<Class>`` names, on DiT's chain; ``spacing`` sets its ``timestep_spacing``
    (``linspace``, ``leading``, ``trailing``) or, as ``karras``, ``use_karras_sigmas=True``."""
    cls_name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    diffusers = _diffusers()
    valid = scheduler_names()
    if cls_name not in valid:
        raise UserError(f"unknown diffusers scheduler {cls_name!r}; valid: {', '.join(valid)}")
    _refuse_batch_noise(cls_name)
    cls = getattr(diffusers, cls_name)
    options = dict(DIT_CHAIN)
    if spacing is not None:
        key, value = ("use_karras_sigmas", True) if spacing == "karras" else ("timestep_spacing", spacing)
        if key not in inspect.signature(cls.__init__).parameters:
            raise UserError(f"{cls_name} has no {key}: it takes no spacing {spacing!r}")
        options[key] = value
    try:
        scheduler = cls.from_config(options)
    except ImportError as err:  # a scheduler with an extra dependency (LMS: scipy); diffusers' first sentence
        raise UserError(f"{cls_name}: {str(err).strip().splitlines()[0]}") from None
    check_scheduler(scheduler)
    return scheduler


def check_scheduler(scheduler) -> None:
    """Refuse a scheduler that is not on DiT's chain with ε-prediction, or that draws batch-wide noise."""
    name = type(scheduler).__name__
    if not all(hasattr(scheduler, attr) for attr in ("set_timesteps", "step", "config")):
        raise UserError(f"a sampler object must be a diffusers scheduler, got {name}")
    _refuse_batch_noise(name)
    acp = getattr(scheduler, "alphas_cumprod", None)
    chain = _dit_alphas_cumprod()
    if acp is None or len(acp) != len(chain) or not np.allclose(np.asarray(acp, dtype=np.float64), chain,
                                                                  rtol=CHAIN_RTOL, atol=0):
        raise UserError(f"{name} is not on DiT's chain: configure it with {DIT_CHAIN} "
                        "(skipdit's models were trained on it)")
    prediction = scheduler.config.get("prediction_type")
    if prediction != "epsilon":
        raise UserError(f"{name} predicts {prediction!r}; skipdit's models predict epsilon "
                        "(configure prediction_type='epsilon')")


def _refuse_batch_noise(name: str) -> None:
    if name in BATCH_NOISE:
        raise UserError(f"{name} {BATCH_NOISE[name]}, so a sample would depend on its batch; use another scheduler")


def _dit_alphas_cumprod() -> np.ndarray:
    from .schedule import make_betas

    return np.cumprod(1.0 - make_betas("linear", DIT_CHAIN["num_train_timesteps"]))


def fresh_copy(scheduler):
    """A new scheduler of the same class and configuration, never stepped."""
    return type(scheduler).from_config(scheduler.config)


def calls_per_step(scheduler) -> int:
    """2 for the schedulers that alternate first- and second-order calls (one ODE step), else 1."""
    return 2 if hasattr(type(scheduler), "state_in_first_order") else 1


def step_timesteps(scheduler, num_steps: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(the timestep of each cache step's first call, the model calls of each step) at ``num_steps``."""
    probe = fresh_copy(scheduler)
    probe.set_timesteps(num_steps)
    calls = [float(t) for t in probe.timesteps]
    per = calls_per_step(probe)
    starts = range(0, len(calls), per)
    return tuple(calls[i] for i in starts), tuple(min(per, len(calls) - i) for i in starts)


def diffusers_sample(
    model_fn: ModelFn, x: torch.Tensor, scheduler, num_steps: int, *, noise: Callable = torch.randn_like,
    callback: StepCallback | None = None, cache_state=None, progress: bool = False,
) -> torch.Tensor:
    """Sample with a fresh copy of ``scheduler`` at ``num_steps`` inference steps from unit Gaussian ``x``."""
    sched = fresh_copy(scheduler)
    sched.set_timesteps(num_steps, device=x.device)
    timesteps = list(sched.timesteps)  # the scheduler's own values, for its step index lookups
    values = sched.timesteps.tolist()  # the same on the host, read once: no sync per step
    per = calls_per_step(sched)
    extra = _generator(sched, noise)
    x = x * sched.init_noise_sigma
    starts = range(0, len(timesteps), per)
    for k in denoising_steps(len(starts), cache_state, progress):
        x0 = None
        for i in range(starts[k], min(starts[k] + per, len(timesteps))):
            if per > 1 and sched.state_in_first_order != (i == starts[k]):
                raise RuntimeError(f"{type(sched).__name__} is out of step with skipdit's loop at call {i}")
            t = timesteps[i]
            x_in = sched.scale_model_input(x, t)
            eps = noise_prediction(model_fn(x_in, timestep(values[i], x)), x)
            out = sched.step(eps, t, x, **extra)
            if x0 is None:
                x0 = _predicted_x0(sched, out, x_in, eps, values[i])
            x = out.prev_sample
        if callback is not None:
            callback(k, x, x0)
    return x


def _generator(scheduler, noise) -> dict:
    """``generator=`` the per-sample generators, for a ``step`` that takes one (see the module docstring)."""
    if "generator" not in inspect.signature(scheduler.step).parameters:
        return {}
    generators = getattr(noise, "generators", None)
    return {} if generators is None else {"generator": list(generators)}


def _predicted_x0(scheduler, out, x_in: torch.Tensor, eps: torch.Tensor, t: float) -> torch.Tensor:
    """The scheduler's ``pred_original_sample``, or for those that report none, the ε-network's x̂_0 at its
    input: (x_in - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t), ᾱ interpolated for a fractional t (for the callback only)."""
    x0 = getattr(out, "pred_original_sample", None)
    if x0 is not None:
        return x0
    acp = np.asarray(scheduler.alphas_cumprod, dtype=np.float64)
    abar = float(np.interp(t, np.arange(len(acp)), acp))
    return (x_in - (1 - abar) ** 0.5 * eps) / abar**0.5
