"""Forecasting Skip-Cache (skipdit.cache.taylor): order 0 is Skip-Cache, the forecast is exact on polynomials,
the hybrid correction and the three-level mask."""

from __future__ import annotations

import pytest
import torch

import skipdit
from skipdit import Sampling, generate
from skipdit.cache import CacheStats, TaylorSkipCache, enable, parse_cache
from skipdit.cache.families import plan_offline
from skipdit.cache.taylor import forecast
from skipdit.models import build_model
from skipdit.models.random import randomize_

TIMESTEPS = [900, 780, 700, 610, 500, 420, 300, 250, 130, 60, 10]  # uneven spacing on purpose


class ToyStack:
    """A long-skip stack of 4 units (the cache's view of a model): unit 0 maps the timestep to ``shallow(t)``,
    unit 1 and 2 pass it on, the fusions add the skip, unit 3 is nonlinear. So the deep state (entering unit 3
    with b=1) is ``2 * shallow(t)`` and the output ``tanh(3 * shallow(t))``."""

    num_units, has_long_skips, sublayers = 4, True, ()

    def __init__(self, shallow):
        self.shallow = shallow

    def run_units(self, h, t, start, stop, skips):
        for i in range(start, stop):
            if i >= 2:
                h = h + skips.pop()
            h = self.shallow(t) if i == 0 else torch.tanh(h) if i == 3 else h
            if i < 2:
                skips.append(h)
        return h


def run(policy, model, timesteps=TIMESTEPS) -> list[torch.Tensor]:
    state = policy.start(model, timesteps)
    outs = []
    for k, t in enumerate(timesteps):
        state.begin_step(k)
        outs.append(state.branch("cond").run_units(model, torch.zeros(3), float(t)))
    return outs


def uncached(model, timesteps=TIMESTEPS) -> list[torch.Tensor]:
    return [model.run_units(torch.zeros(3), float(t), 0, 4, []) for t in timesteps]


def polynomial(degree: int):
    g = torch.Generator().manual_seed(degree)
    coefficients = torch.randn(degree + 1, 3, generator=g, dtype=torch.float64) / 4
    return lambda t: sum(c * (t / 1000) ** j for j, c in enumerate(coefficients)).float()


# -- the rule -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_forecast_is_exact_on_polynomials_of_its_degree(degree):
    p = polynomial(degree)
    points = [(t, p(t)) for t in (950.0, 700.0, 640.0, 300.0)[: degree + 1]]
    for t in (600.0, 123.0, 0.0):
        torch.testing.assert_close(forecast(points, t), p(t), atol=1e-5, rtol=1e-5)
    if degree:  # one point fewer is not enough: the test can fail
        assert not torch.allclose(forecast(points[1:], 123.0), p(123.0), atol=1e-3)


def test_forecast_of_one_point_is_the_point_itself():
    y = torch.randn(2, 3)
    assert forecast([(500.0, y)], 100.0) is y


# -- on a stack ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 2, 3])
def test_a_polynomial_deep_feature_is_forecast_exactly(order):
    """Once order + 1 full steps have been seen, cached steps give the uncached output; Skip-Cache (order 0) and
    a lower order do not."""
    model = ToyStack(polynomial(order))
    base = uncached(model)
    policy = TaylorSkipCache(interval=2, order=order)
    plan = policy.plan(TIMESTEPS, 4)
    warm = [k for k, step in enumerate(plan) if step.full][order]  # the (order+1)-th full step
    exact = run(policy, model)
    assert not all(step.full for step in plan[warm:])
    for out, ref in zip(exact[warm:], base[warm:]):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for lower in range(order):
        outs = run(TaylorSkipCache(interval=2, order=lower), model)
        assert max((o - r).abs().max().item() for o, r in zip(outs[warm:], base[warm:])) > 1e-3, lower


def test_the_hybrid_correction_is_exact_when_the_deep_state_moves_with_the_shallow_one():
    """Here deep = 2 * shallow for any shallow(t): a forecast error of the shallow feature, times 2, is the deep
    forecast's error, so correct=2 is exact where the pure forecast is not."""
    model = ToyStack(lambda t: torch.sin(torch.tensor([t, 2 * t, 3 * t]) / 150))
    base = uncached(model)
    err = lambda outs: max((o - r).abs().max().item() for o, r in zip(outs, base))  # noqa: E731
    assert err(run(TaylorSkipCache(interval=3, order=1), model)) > 1e-2
    assert err(run(TaylorSkipCache(interval=3, order=1, correct=2.0), model)) < 1e-5


def test_order_0_is_skip_cache_bit_for_bit():
    model = skipdit.load("digits/Skip-DiT")
    for sampling in (Sampling(sampler="ddim", steps=10), Sampling(sampler="dpm++2m", steps=8),
                     Sampling(sampler="heun", steps=6)):  # Heun: two calls per step
        ref = generate(model, [0, 1], [3, 7], sampling=sampling, cache="skip:N=3")
        out = generate(model, [0, 1], [3, 7], sampling=sampling, cache="taylor:N=3,order=0")
        assert torch.equal(out.samples, ref.samples) and out.stats == ref.stats


def test_two_calls_per_step_keep_the_first_calls_state(monkeypatch):
    """Heun calls the model twice per step; the forecast keeps one state per full step, the first call's (at the
    step's timestep), so its points have distinct timesteps."""
    kept = []
    original = TaylorSkipCache.run

    def spy(self, model, h, c, step, state):
        out = original(self, model, h, c, step, state)
        kept.append([t for t, *_ in state.history])
        return out

    monkeypatch.setattr(TaylorSkipCache, "run", spy)
    generate(skipdit.load("digits/Skip-DiT"), [0], [3], sampling=Sampling(sampler="heun", steps=6),
             cache="taylor:N=2,order=2")
    assert all(len(set(ts)) == len(ts) for ts in kept) and max(map(len, kept)) == 3


def test_forecasting_beats_reuse_on_the_built_in_model():
    """The point of the policy, on digits/Skip-DiT: the same steps and units, closer to the uncached samples."""
    model = skipdit.load("digits/Skip-DiT")
    sampling = Sampling(sampler="ddim", steps=20)
    seeds = list(range(8))
    base = generate(model, seeds, [s % 10 for s in seeds], sampling=sampling).samples
    error, stats = {}, {}
    for spec in ("skip:N=3", "taylor:N=3,order=1"):
        out = generate(model, seeds, [s % 10 for s in seeds], sampling=sampling, cache=spec)
        error[spec], stats[spec] = (out.samples - base).pow(2).mean().item(), out.stats
    assert stats["skip:N=3"] == stats["taylor:N=3,order=1"]  # the same work
    assert error["taylor:N=3,order=1"] < error["skip:N=3"] / 2


# -- the three-level mask -----------------------------------------------------------------------------------------
def test_mask_plans_full_cached_and_reuse_steps():
    plan = plan_offline("taylor:order=1,mask=FCRFCCRFCRF,b=1", units=4, sampler="ddim", steps=11).steps
    assert [("F" if p.full else "C" if p.units else "R") for p in plan] == list("FCRFCCRFCRF")
    assert [p.units for p in plan[:3]] == [((0, 4),), ((0, 1), (3, 4)), ()]
    stats = CacheStats.from_plan(plan, 4)
    assert stats.unit_evals == 4 * 4 + 4 * 2  # 4 full, 4 cached, 3 reuse steps
    windowed = plan_offline("taylor:mask=FCCCC,start=700", units=4, sampler="ddim", steps=5).steps
    assert [p.full for p in windowed] == [t >= 700 for t in (p.t for p in windowed)]  # the window forces full


def test_a_reuse_step_adds_the_last_residual():
    model = ToyStack(polynomial(1))
    policy = TaylorSkipCache(order=1, mask="FFRC")
    state = policy.start(model, [900, 800, 700, 600])
    outs = []
    for k, (t, h) in enumerate(zip([900, 800, 700, 600], torch.arange(4.0))):
        state.begin_step(k)
        outs.append(state.branch("cond").run_units(model, torch.full((3,), h), float(t)))
    assert torch.equal(outs[2], torch.full((3,), 2.0) + (outs[1] - 1.0))  # step 1's residual on step 2's input
    assert state.stats.unit_evals == 4 + 4 + 0 + 2


def test_bad_specs_and_models():
    for spec, message in [("taylor:order=5", "order must be 0..4"), ("taylor:order=x", "order must be an integer"),
                          ("taylor:mask=CF", "must start with F"), ("taylor:mask=FXC", "letters F .*C .*R"),
                          ("taylor:correct=nan", "correct")]:
        with pytest.raises(ValueError, match=message):
            parse_cache(spec)
    with pytest.raises(ValueError, match="mask has 3 letters for 5 steps"):
        plan_offline("taylor:mask=FCC", units=4, sampler="ddim", steps=5)
    vanilla = randomize_(build_model("DiT-S/2", input_size=8, depth=4, hidden_size=32, num_heads=2, num_classes=3))
    with pytest.raises(ValueError, match="needs a model with long skips"):
        generate(vanilla, [0], [1], sampling=Sampling(sampler="ddim", steps=4), cache="taylor:N=2")


def test_block_hook_adapters_refuse_the_forecast():
    pytest.importorskip("diffusers")
    from .test_hunyuan_adapter import tiny_transformer

    with pytest.raises(ValueError, match="taylor runs on skipdit's own models"):
        enable(tiny_transformer(), "taylor:N=2", timesteps=[900, 500, 100])
