"""The solvers (DPM-Solver++(2M), UniPC, Euler, Heun) and any diffusers scheduler as a sampler.

* against closed-form oracles: data x_0 ~ N(mu, s^2) has an exact ε-network and an exact probability-flow map;
* against diffusers' own schedulers on the same network and noise;
* sample i depends only on seed i, for every sampler;
* Skip-Cache and a peer on every sampler through generate(), one cache step per sampler step (Heun included);
* the settings, the CLI and the cache plan on a solver's timesteps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skipdit import Condition, Runtime, Sampling, generate
from skipdit.cache import parse_cache
from skipdit.cli import main
from skipdit.diffusion import (
    SAMPLER_CHOICES,
    SigmaSteps,
    dpmpp_2m_sample,
    euler_sample,
    heun_sample,
    make_betas,
    make_sampler,
    unipc_sample,
)
from skipdit.diffusion.schedule import (
    chain_sigmas,
    ode_steps,
    ode_timesteps,
    sigma_to_timestep,
    solver_steps,
    solver_timesteps,
)
from skipdit.errors import UserError

from .conftest import tiny_model

diffusers = pytest.importorskip("diffusers")

ACP = np.cumprod(1.0 - make_betas("linear"))  # DiT's chain
TABLE = chain_sigmas(ACP)
SOLVERS = ("dpm++2m", "unipc", "euler", "heun")
SIGMA_SPACE = ("euler", "heun")
SPACINGS = ("linspace", "leading", "trailing", "karras")
DIT_CHAIN = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                 prediction_type="epsilon")
MU, S = 0.3, 0.5  # the oracle's data: x_0 ~ N(MU, S^2), elementwise


# -- the oracle ---------------------------------------------------------------------------------------------------
def sigma_at(t: np.ndarray, interp: str) -> np.ndarray:
    """The oracle network's σ(t) between the chain's integer timesteps. A sampler whose model timesteps are
    fractional defines σ there: Euler/Heun "linspace" interpolate σ linearly in t, "karras" take t(σ) by
    interpolating log σ, so the oracle reads t the same way (at integer t both are the chain's σ exactly)."""
    ts = np.arange(len(TABLE), dtype=np.float64)
    return np.interp(t, ts, TABLE) if interp == "linear" else np.exp(np.interp(t, ts, np.log(TABLE)))


def gaussian_oracle(mu: float, s: float, interp: str = "log"):
    """The exact ε-network of data N(mu, s^2): at noise σ the sample x = x_0 + σ ε (EDM's variables; the network
    sees x / sqrt(σ² + 1)) has E[x_0 | x] = mu + s²/(s² + σ²) (x - mu), so ε̂ = (x - E[x_0 | x]) / σ. It outputs
    zeros as learned-variance channels, which the solvers must ignore. ``s = 0`` is a point mass at ``mu``."""

    def model_fn(x_in, t):
        sigma = torch.as_tensor(sigma_at(t.double().cpu().numpy(), interp), dtype=x_in.dtype)
        sigma = sigma.reshape(-1, *[1] * (x_in.ndim - 1))
        x = x_in * torch.sqrt(sigma**2 + 1)
        eps = (x - (mu + s**2 / (s**2 + sigma**2) * (x - mu))) / sigma
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)

    return model_fn


def interp_of(sampler: str, spacing: str) -> str:
    return "linear" if sampler in SIGMA_SPACE and spacing != "karras" else "log"


def exact_map(noise: torch.Tensor, sigma0: float, sampler: str) -> torch.Tensor:
    """Where the probability-flow ODE takes the starting point to at σ = 0: along it (x - mu) / sqrt(s² + σ²) is
    constant (dx/dσ = σ (x - mu) / (s² + σ²)), so x_0 = mu + (x_σ0 - mu) s / sqrt(s² + σ0²). The σ-space
    samplers start at x = σ0 ε, the VP solvers at x_t = ε, i.e. x = sqrt(σ0² + 1) ε."""
    start = noise * (sigma0 if sampler in SIGMA_SPACE else math.sqrt(sigma0**2 + 1))
    return MU + (start - MU) * S / math.sqrt(S**2 + sigma0**2)


def steps_of(sampler: str, n: int, spacing: str) -> SigmaSteps:
    return (ode_steps if sampler in SIGMA_SPACE else solver_steps)(n, spacing, ACP)


@pytest.fixture(scope="module")
def unit_noise():
    return torch.randn(4096, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


# -- oracle tests -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("sampler", SOLVERS)
def test_point_mass_data_is_reached_exactly(sampler, spacing, unit_noise):
    """For data that is one point, x̂_0 = mu at every step: DPM-Solver++ and UniPC integrate the linear part
    exactly and their corrections vanish (all x̂_0 agree); the σ-space ODE dx/dσ = (x - mu)/σ has straight
    solutions, which Euler and Heun follow exactly. So 3 steps land on mu to float64 rounding."""
    out = make_sampler(sampler, steps=3, spacing=spacing)(gaussian_oracle(MU, 0.0, interp_of(sampler, spacing)),
                                                          unit_noise)
    assert out.dtype == torch.float64
    assert (out - MU).abs().max().item() < 1e-12


def log_sigma_grid(n: int) -> SigmaSteps:
    """n noise levels evenly spaced in log σ = -λ over the whole chain, the model at t(σ) (fractional): a smooth
    grid, on which a method's order shows (the diffusers step lists round timesteps to integers, and linspace
    keeps the last steps' h = Δλ from shrinking, ~log(2)/2 between t = 2a and t = a)."""
    sigmas = np.exp(np.linspace(np.log(TABLE[-1]), np.log(TABLE[0]), n))
    return SigmaSteps(tuple(sigma_to_timestep(sigmas, TABLE)), (*sigmas, 0.0))


def last_step_target(noise: torch.Tensor, steps: SigmaSteps) -> torch.Tensor:
    """What the VP solvers compute with no truncation error: the exact ODE solution at the last σ > 0, then the
    step into σ = 0, which is the exact x̂_0 there (h = inf): E[x_0 | x] = mu + s²/(s² + σ²) (x - mu)."""
    s0, last = steps.sigmas[0], steps.sigmas[-2]
    x_last = MU + (noise * math.sqrt(s0**2 + 1) - MU) * math.sqrt(S**2 + last**2) / math.sqrt(S**2 + s0**2)
    return MU + S**2 / (S**2 + last**2) * (x_last - MU)


# sampler function, its order of accuracy, the least error ratio from 40 to 80 steps we accept (2^order = 2, 4, 8
# in the limit; measured 1.99, 4.61, 4.04, 8.12), and what it is compared with
ORDERS = [(euler_sample, 1, 1.8, "exact"), (heun_sample, 2, 3.5, "exact"), (dpmpp_2m_sample, 2, 3.5, "last"),
          (unipc_sample, 3, 7.0, "last")]


@pytest.mark.parametrize("fn, order, least_ratio, target", ORDERS, ids=[o[0].__name__ for o in ORDERS])
def test_convergence_order_on_gaussian_data(fn, order, least_ratio, target, unit_noise):
    """On Gaussian data the global error falls as h^order: halving h divides it by 2^order (UniPC-2 with its
    corrector is third order, arXiv 2302.04867 §3.3)."""
    errors = []
    for n in (40, 80):
        steps = log_sigma_grid(n)
        out = fn(gaussian_oracle(MU, S), unit_noise, steps)
        want = exact_map(unit_noise, steps.sigmas[0], "euler" if fn in (euler_sample, heun_sample) else "dpm++2m") \
            if target == "exact" else last_step_target(unit_noise, steps)
        errors.append((out - want).abs().max().item())
    assert errors[0] / errors[1] > least_ratio, errors


# the most we accept, at 100 steps on the default (linspace) step list, between a sampler's output and the exact
# map, over 4096 samples: measured 1.2e-3 (dpm++2m), 2.9e-3 (unipc), 5.0e-2 (euler), 9.6e-4 (heun); Euler is
# first order (its error ~ 4/n on the smooth grid above), the others second or third order
DEFAULT_LIST_TOLERANCE = {"dpm++2m": 1e-2, "unipc": 1e-2, "euler": 0.1, "heun": 1e-2}


@pytest.mark.parametrize("sampler", SOLVERS)
def test_default_step_list_lands_on_the_data_distribution(sampler, unit_noise):
    """With the diffusers defaults (linspace) each sampler follows the deterministic map of the ODE, so its
    outputs are N(mu, s^2) distributed: mean and standard deviation within a few standard errors."""
    steps = steps_of(sampler, 100, "linspace")
    out = make_sampler(sampler, steps=100)(gaussian_oracle(MU, S, interp_of(sampler, "linspace")), unit_noise)
    assert (out - exact_map(unit_noise, steps.sigmas[0], sampler)).abs().max().item() < \
        DEFAULT_LIST_TOLERANCE[sampler]
    n = unit_noise.numel()
    assert abs(out.mean().item() - MU) < 4 * S / math.sqrt(n) + DEFAULT_LIST_TOLERANCE[sampler]
    assert abs(out.std().item() - S) < 4 * S / math.sqrt(2 * n) + DEFAULT_LIST_TOLERANCE[sampler]


def test_heun_is_euler_plus_the_trapezoidal_correction():
    """Two Heun steps by hand, for an ε-network sin(x) + σ: an Euler step, the trapezoidal correction with ε at
    the Euler point, then the step into σ = 0, which stays Euler."""
    steps = SigmaSteps((999.0, 500.0), (10.0, 2.0, 0.0))
    sigma_of_t = {999.0: 10.0, 500.0: 2.0}

    def model_fn(x_in, t):
        s = sigma_of_t[t[0].item()]
        return torch.sin(x_in * math.sqrt(s * s + 1)) + s  # x_in is x / sqrt(σ² + 1)

    eps = lambda x, s: math.sin(x) + s  # noqa: E731
    x0 = 0.7 * 10.0  # x_T = σ_max ε
    e0 = eps(x0, 10.0)
    e1 = eps(x0 + (2.0 - 10.0) * e0, 2.0)
    x1 = x0 + (2.0 - 10.0) * (e0 + e1) / 2
    want = x1 + (0.0 - 2.0) * eps(x1, 2.0)
    out = heun_sample(model_fn, torch.tensor([[0.7]], dtype=torch.float64), steps)
    assert out.item() == pytest.approx(want, rel=1e-12)


# -- the step lists, as diffusers makes them ---------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 20, 50])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_step_lists_are_diffusers(n, spacing):
    for cls, mine in ((diffusers.DPMSolverMultistepScheduler, solver_timesteps),
                      (diffusers.UniPCMultistepScheduler, solver_timesteps),
                      (diffusers.EulerDiscreteScheduler, ode_timesteps)):
        scheduler = cls.from_config({**DIT_CHAIN, "timestep_spacing": spacing})
        scheduler.set_timesteps(n)
        np.testing.assert_allclose(mine(n, spacing), scheduler.timesteps.numpy(), rtol=0, atol=1e-4)
    heun = diffusers.HeunDiscreteScheduler.from_config({**DIT_CHAIN, "timestep_spacing": spacing})
    heun.set_timesteps(n)
    np.testing.assert_allclose(ode_timesteps(n, spacing), heun.timesteps.numpy()[::2], rtol=0, atol=1e-4)


def test_too_many_steps_for_a_spacing_are_refused():
    with pytest.raises(UserError, match="repeat timesteps of the chain"):
        make_sampler("dpm++2m", steps=1000, spacing="leading")
    with pytest.raises(UserError, match="steps must be an integer >= 1"):
        make_sampler("euler", steps=0)


# -- agreement with diffusers -------------------------------------------------------------------------------------
# (our sampler, spacing, diffusers class, its config): the scheduler's defaults are diffusers' (dpmsolver++,
# solver_order 2, midpoint; UniPC bh2, order 2), only the spacing changes
AGREEMENT = [
    ("dpm++2m", "linspace", "DPMSolverMultistepScheduler", {}),
    ("dpm++2m", "leading", "DPMSolverMultistepScheduler", {"timestep_spacing": "leading"}),
    ("dpm++2m", "trailing", "DPMSolverMultistepScheduler", {"timestep_spacing": "trailing"}),
    ("dpm++2m", "karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("unipc", "linspace", "UniPCMultistepScheduler", {}),
    ("unipc", "trailing", "UniPCMultistepScheduler", {"timestep_spacing": "trailing"}),
    ("unipc", "karras", "UniPCMultistepScheduler", {"use_karras_sigmas": True}),
    ("euler", "linspace", "EulerDiscreteScheduler", {}),
    ("euler", "trailing", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    ("euler", "karras", "EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    ("heun", "linspace", "HeunDiscreteScheduler", {}),
    ("heun", "trailing", "HeunDiscreteScheduler", {"timestep_spacing": "trailing"}),
    ("heun", "karras", "HeunDiscreteScheduler", {"use_karras_sigmas": True}),
]
# |ours - diffusers| <= AGREE_RTOL * max|diffusers|. Both step in float32; diffusers also computes ᾱ in float32,
# which puts its σ_min = sqrt((1 - ᾱ_0) / ᾱ_0) 8e-5 (relative) off the float64 chain's, and that moves every
# Karras σ. Measured on make_dit_fn (samples |x| <= 3): at most 9.4e-6 with Karras σ (euler, 6 steps), at most
# 3.4e-6 without (heun linspace, 6 steps); UniPC orders 1 and 3: 3.2e-7, 6.9e-7
AGREE_RTOL = 5e-5


@pytest.fixture(scope="module")
def dit_fn():
    return make_dit_fn()


def make_dit_fn():
    """A denoiser with realistic outputs that still exercises a network: the Gaussian oracle's ε plus a tiny
    random DiT's (class 3, unguided) squashed to ±0.1, with the DiT's learned-variance channels (2C outputs).
    A random DiT alone predicts no noise the sampler can remove, so its samples stay at |x| ~ σ_max."""
    model = tiny_model(long_skip=True)
    oracle = gaussian_oracle(MU, S)

    @torch.no_grad()
    def model_fn(x, t):
        out = model(x, t, torch.full((x.shape[0],), 3))
        c = x.shape[1]
        eps = oracle(x, t)[:, :c] + 0.1 * torch.tanh(out[:, :c])
        return torch.cat([eps, out[:, c:]], dim=1)

    return model_fn


def diffusers_loop(scheduler, model_fn, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """diffusers' own pipeline loop (DiTPipeline's), with the learned-variance channels dropped."""
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = model_fn(scheduler.scale_model_input(x, t), t.float().expand(x.shape[0]))[:, : x.shape[1]]
        x = scheduler.step(eps, t, x).prev_sample
    return x


@pytest.mark.parametrize("steps", [6, 20])
@pytest.mark.parametrize("sampler, spacing, cls, config", AGREEMENT, ids=[f"{a[0]}-{a[1]}" for a in AGREEMENT])
def test_agrees_with_diffusers(sampler, spacing, cls, config, steps, dit_fn):
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = make_sampler(sampler, steps=steps, spacing=spacing)(dit_fn, noise)
    theirs = diffusers_loop(getattr(diffusers, cls).from_config({**DIT_CHAIN, **config}), dit_fn, noise, steps)
    assert (ours - theirs).abs().max().item() <= AGREE_RTOL * theirs.abs().max().item()


@pytest.mark.parametrize("order", [1, 3])
def test_unipc_other_orders_agree_with_diffusers(order, dit_fn):
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    ours = unipc_sample(dit_fn, noise, solver_steps(12, "linspace", ACP), order=order)
    scheduler = diffusers.UniPCMultistepScheduler.from_config({**DIT_CHAIN, "solver_order": order})
    theirs = diffusers_loop(scheduler, dit_fn, noise, 12)
    assert (ours - theirs).abs().max().item() <= AGREE_RTOL * theirs.abs().max().item()


# -- any diffusers scheduler ---------------------------------------------------------------------------------------
class StepCounter:
    """A stand-in cache state: counts begin_step calls."""

    def __init__(self):
        self.steps = []

    def begin_step(self, k):
        self.steps.append(k)


@pytest.mark.parametrize("cls, steps", [("DPMSolverMultistepScheduler", 8), ("HeunDiscreteScheduler", 5),
                                        ("KDPM2DiscreteScheduler", 4), ("PNDMScheduler", 6)])
def test_diffusers_sampler_is_diffusers_own_loop(cls, steps, dit_fn):
    """``diffusers:<Class>`` runs exactly diffusers' loop; a two-call scheduler (Heun, KDPM2) makes one cache step
    of each pair of calls."""
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    sampler = make_sampler(f"diffusers:{cls}", steps=steps)
    counter = StepCounter()
    ours = sampler(dit_fn, noise, cache_state=counter)
    theirs = diffusers_loop(getattr(diffusers, cls).from_config(DIT_CHAIN), dit_fn, noise, steps)
    assert torch.equal(ours, theirs)
    assert counter.steps == list(range(sampler.num_steps))
    two_calls = cls in ("HeunDiscreteScheduler", "KDPM2DiscreteScheduler")
    assert sampler.num_steps == (steps if two_calls else sampler.model_calls)
    if two_calls:
        assert sampler.model_calls == 2 * steps - 1


def test_a_scheduler_object_is_a_template(dit_fn):
    """An object is used with its own config (here trailing, Karras-free) and never stepped itself."""
    template = diffusers.UniPCMultistepScheduler.from_config({**DIT_CHAIN, "timestep_spacing": "trailing"})
    before = template.timesteps.clone()
    sampling = Sampling(sampler=template, steps=7)
    assert sampling.sampler_name == "diffusers:UniPCMultistepScheduler" and sampling.spacing_used is None
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    a, b = sampling.make_sampler()(dit_fn, noise), sampling.make_sampler()(dit_fn, noise)
    assert torch.equal(a, b) and torch.equal(template.timesteps, before)
    named = make_sampler("diffusers:UniPCMultistepScheduler", steps=7, spacing="trailing")(dit_fn, noise)
    assert torch.equal(a, named)


@pytest.mark.parametrize("make, message", [
    (lambda: diffusers.DDIMScheduler(beta_schedule="scaled_linear"), "not on DiT's chain"),
    (lambda: diffusers.EulerDiscreteScheduler(prediction_type="v_prediction"), "predicts 'v_prediction'"),
    (lambda: diffusers.FlowMatchEulerDiscreteScheduler(), "not on DiT's chain"),
    (lambda: object(), "must be a diffusers scheduler"),
])
def test_unfit_scheduler_objects_are_refused(make, message):
    with pytest.raises(UserError, match=message):
        Sampling(sampler=make())


@pytest.mark.parametrize("fields, message", [
    (dict(sampler="diffusers:Nope"), "unknown diffusers scheduler 'Nope'; valid: DDIMScheduler"),
    (dict(sampler="diffusers:DPMSolverSDEScheduler"), "Brownian tree"),
    (dict(sampler="diffusers:EDMEulerScheduler"), "not on DiT's chain"),
    (dict(sampler="diffusers:PNDMScheduler", spacing="karras"), "PNDMScheduler has no use_karras_sigmas"),
    (dict(sampler="dpm++2m", spacing="uniform"), "unknown spacing 'uniform' for dpm\\+\\+2m; valid: linspace"),
    (dict(sampler="euler", respacing="ddim50"), "respacing applies to ddpm and ddim; euler takes a spacing"),
    (dict(sampler="ddim", spacing="karras"), "give it a respacing"),
    (dict(sampler="heun", eta=0.5), "eta applies to the ddim sampler only, not heun"),
    (dict(sampler="bogus"), "unknown sampler 'bogus'; valid: ddpm, ddim, dpm\\+\\+2m, unipc, euler, heun, "
                            "diffusers:<Scheduler>"),
    (dict(sampler="unipc", steps=1000, spacing="leading"), "repeat timesteps"),
])
def test_sampling_refuses_bad_sampler_settings(fields, message):
    with pytest.raises(UserError, match=message):
        Sampling(**fields)


def test_defaults_are_diffusers():
    for name in SOLVERS:
        sampling = Sampling(sampler=name)
        assert sampling.num_steps == 20 and sampling.spacing_used == "linspace"
    assert Sampling(sampler="diffusers:EulerDiscreteScheduler").num_steps == 20
    assert list(SAMPLER_CHOICES) == ["ddpm", "ddim", "dpm++2m", "unipc", "euler", "heun", "diffusers:<Scheduler>"]
    assert "diffusers:HeunDiscreteScheduler" in SAMPLER_CHOICES and "diffusers:" not in SAMPLER_CHOICES
    # 20 DPM-Solver++ steps evaluate 999, 949, ..., 50; Euler's 20 steps include t = 0
    assert make_sampler("dpm++2m").cache_timesteps()[:3] == [999, 949, 899]
    assert make_sampler("dpm++2m").cache_timesteps()[-1] == 50
    euler = make_sampler("euler")
    assert euler.timesteps[1] == pytest.approx(999 * 18 / 19) and euler.cache_timesteps()[1] == 946


# -- per-seed noise -----------------------------------------------------------------------------------------------
PER_SEED = [*SOLVERS, "diffusers:DPMSolverMultistepScheduler", "diffusers:DDPMScheduler",
            "diffusers:EulerAncestralDiscreteScheduler"]


@pytest.mark.parametrize("sampler", PER_SEED)
def test_sample_depends_only_on_its_seed(sampler, skip_model):
    """A batch of 3 against each seed alone; DDPM and Euler-ancestral draw noise every step, from the sample's
    own generator. The batch only changes CPU kernel rounding (test_sampling.py)."""
    sampling = Sampling(sampler=sampler, steps=6, guidance_scale=2.0)
    together = generate(skip_model, [3, 4, 5], Condition(labels=[0, 1, 2]), sampling=sampling)
    for k, (seed, label) in enumerate(zip([3, 4, 5], [0, 1, 2])):
        alone = generate(skip_model, [seed], Condition(labels=[label]), sampling=sampling)
        torch.testing.assert_close(together.samples[k], alone.samples[0], atol=1e-3, rtol=0)
    other = generate(skip_model, [6], Condition(labels=[1]), sampling=sampling)
    assert (other.samples[0] - together.samples[1]).abs().max() > 0.1  # the seed matters


# -- caches on every sampler --------------------------------------------------------------------------------------
def count_block_calls(model):
    """Forward calls of each block of ``model``, by a pre-hook."""
    calls = [0] * len(model.blocks)
    handles = [block.register_forward_pre_hook(lambda _m, _a, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, block in enumerate(model.blocks)]
    return calls, handles


CACHED_SAMPLERS = [*SOLVERS, "diffusers:HeunDiscreteScheduler"]


@pytest.mark.parametrize("sampler", CACHED_SAMPLERS)
@pytest.mark.parametrize("spec, long_skip", [("skip:N=2", True), ("fora:N=2", False)])
def test_caches_act_on_every_sampler(sampler, spec, long_skip):
    """Skip-Cache and FORA through generate(): planned on the sampler's timesteps, one cache step per sampler step.
    With Heun both calls of a step follow the step's plan: the blocks run are counted by arithmetic."""
    model = tiny_model(long_skip=long_skip)
    steps, units = 5, model.num_units
    sampling = Sampling(sampler=sampler, steps=steps, guidance_scale=2.0)
    planned = []
    policy = parse_cache(spec)
    original = type(policy).start

    def recording_start(self, model, timesteps):
        planned.append(list(timesteps))
        return original(self, model, timesteps)

    calls, handles = count_block_calls(model)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(type(policy), "start", recording_start)
            out = generate(model, [0, 1], Condition(labels=[1, 2]), sampling=sampling, cache=spec)
    finally:
        for handle in handles:
            handle.remove()
    assert planned == [sampling.cache_timesteps()]
    assert out.stats.steps == steps and out.stats.full_steps == 3 and out.stats.cached_steps == 2
    two_calls = sampler in ("heun", "diffusers:HeunDiscreteScheduler")
    per_step = [2] * (steps - 1) + [1] if two_calls else [1] * steps  # Heun: no correction into σ = 0
    assert sampling.make_sampler(model).calls_per_step == tuple(per_step)
    full = [k % 2 == 0 for k in range(steps)]
    if spec.startswith("skip"):  # a cached step runs the first and the last unit (b = 1)
        want = sum(n * (units if f else 2) for n, f in zip(per_step, full))
        assert sum(calls) == want and calls[0] == calls[-1] == sum(per_step)
    else:  # FORA runs every block, with attention and MLP reused on cached steps
        assert calls == [sum(per_step)] * units
    uncached = generate(model, [0, 1], Condition(labels=[1, 2]), sampling=sampling)
    gap = (out.samples - uncached.samples).abs().max().item()
    assert 0 < gap < 10 * uncached.samples.abs().max().item()


def test_runtime_decided_caches_run_on_heun(skip_model):
    """TeaCache and adaptive Skip-Cache decide per model call; on Heun they still report one step per step."""
    sampling = Sampling(sampler="heun", steps=4, guidance_scale=2.0)
    for spec in ("teacache:threshold=0.5", "adaptive:threshold=0.05"):
        out = generate(skip_model, [0], Condition(labels=[1]), sampling=sampling, cache=spec)
        assert out.stats.steps == 4 and torch.isfinite(out.samples).all()


def test_bench_lists_diffusers_hooks_as_not_applicable_on_two_call_samplers():
    """diffusers' hooks (the bench's hf-* peers) tell steps from guidance passes by the timestep, which Heun's
    second call repeats: the bench lists them as not run, with the reason."""
    from types import SimpleNamespace

    from skipdit.bench.harness import Preparer, select_methods

    method = select_methods("hf-fbc", 4)[0]
    preparer = Preparer(SimpleNamespace(sampling=Sampling(sampler="heun", steps=4)), [1000])
    with pytest.raises(UserError, match="heun calls the model twice per step"):
        preparer(method, tiny_model(long_skip=False))


def test_generate_with_a_scheduler_object_equals_its_name(skip_model):
    template = diffusers.DPMSolverMultistepScheduler.from_config(DIT_CHAIN)
    by_object = generate(skip_model, [0, 1], Condition(labels=[1, 2]), sampling=Sampling(sampler=template, steps=5),
                         cache="skip:N=2")
    by_name = generate(skip_model, [0, 1], Condition(labels=[1, 2]), cache="skip:N=2",
                       sampling=Sampling(sampler="diffusers:DPMSolverMultistepScheduler", steps=5))
    assert torch.equal(by_object.samples, by_name.samples) and by_object.stats == by_name.stats


def test_bf16_autocast_keeps_solver_arithmetic_in_float32(skip_model):
    runs = {p: generate(skip_model, [0, 1], Condition(labels=[1, 2]), cache="skip:N=2",
                        sampling=Sampling(sampler="dpm++2m", steps=6), runtime=Runtime(precision=p))
            for p in ("fp32", "bf16")}
    assert runs["bf16"].samples.dtype == torch.float32
    err = (runs["bf16"].samples - runs["fp32"].samples).abs().max() / runs["fp32"].samples.abs().max()
    assert err < 0.05


# -- the CLI ------------------------------------------------------------------------------------------------------
def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cache_plan_on_dpm_solver_timesteps(capsys):
    code, out, _ = run_cli(capsys, "cache", "plan", "skip:N=2", "--sampler", "dpm++2m", "--steps", "20")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["step", "t", "action", "units"]
    assert lines[1].split() == ["0", "999", "full", "28", "[0-27]"]
    assert lines[2].split() == ["1", "949", "cached", "2", "[0-0", "27-27]"]
    assert lines[11].split()[:3] == ["10", "500", "full"] and lines[20].split()[:3] == ["19", "50", "cached"]
    assert "skip:N=2,b=1,start=none,stop=none  (20 steps, dpm++2m, spacing 'linspace', 28 units)" in out
    assert "full 10 / cached 10; unit evaluations 300 of 560; ideal speed-up 1.87x" in out
    code, out, _ = run_cli(capsys, "cache", "plan", "c2i:N=2", "--sampler", "euler", "--spacing", "karras",
                           "--steps", "10", "--summary")
    assert code == 0 and "(10 steps, euler, spacing 'karras', 28 units)" in out
    assert "full 6 / cached 4" in out  # stop=20: t(σ) rounds to 18 and 0 at the last two steps, both full


@pytest.mark.parametrize("argv, message", [
    (["cache", "plan", "skip:N=2", "--sampler", "euler", "--respacing", "ddim50"], "respacing applies to ddpm"),
    (["cache", "plan", "skip:N=2", "--sampler", "lms"], "invalid choice: 'lms'"),
    (["sample", "--sampler", "heun", "--spacing", "uniform"], "invalid choice: 'uniform'"),
])
def test_cli_refuses_bad_sampler_options(capsys, argv, message):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    _, err = capsys.readouterr()
    assert code == 2 and message in err


def test_cli_sampler_help_lists_the_registry(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    out, _ = capsys.readouterr()
    assert "dpm++2m" in out and "diffusers:<Scheduler>" in out and "--spacing" in out
