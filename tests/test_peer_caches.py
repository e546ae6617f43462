"""The peer caches (FORA, ToCa, Δ-DiT, DeepCache-style, PAB, T-GATE, TeaCache, First-Block-Cache) and the
adaptive Skip-Cache: each engages, each has a setting that equals the uncached run, and each keeps its rule."""

import pytest
import torch

from skipdit import Condition, Sampling, generate
from skipdit.cache import parse_cache
from skipdit.cache.base import LaggedScalar
from skipdit.tuning import calibrate_teacache
from tests.conftest import tiny_model
from tests.test_latte import _FakeEncoder, t2v

STEPS = 8
SAMPLING = Sampling(sampler="ddim", steps=STEPS, guidance_scale=2.0)


def run(model, spec=None):
    if model.conditioning == "text":
        prompts = Condition(prompts=["a", "b"], text_encoder=_FakeEncoder())
        return generate(model, [0, 1], prompts, sampling=SAMPLING, cache=spec)
    return generate(model, [0, 1], [3, 5], sampling=SAMPLING, cache=spec)


MODELS = {"dit": lambda: tiny_model(long_skip=False), "skip-dit": lambda: tiny_model(long_skip=True),
          "t2v": lambda: t2v(long_skip=True)}
# family -> (a setting that never reuses, a setting that does, models it applies to)
PEERS = {
    "fora": ("fora:N=1", "fora:N=2", ("dit", "skip-dit", "t2v")),
    "toca": ("toca:N=3,ratio=1", "toca:N=2,ratio=0.3", ("dit", "skip-dit", "t2v")),
    "delta": ("delta:N=1", "delta:N=2,boundary=500,cached=2", ("dit",)),
    "deepcache": ("deepcache:N=1", "deepcache:N=2,b=1", ("dit",)),
    "pab": ("pab:spatial=1,temporal=1,cross=1", "pab:lo=0,hi=1000", ("dit", "skip-dit", "t2v")),
    "tgate": ("tgate:gate=100", "tgate:gate=3", ("t2v",)),
    "teacache": ("teacache:threshold=0", "teacache:threshold=1", ("dit", "skip-dit", "t2v")),
    "fbc": ("fbc:threshold=0", "fbc:threshold=10", ("dit", "skip-dit", "t2v")),
    "adaptive": ("adaptive:threshold=0,max=1", "adaptive:threshold=10,max=3", ("skip-dit", "t2v")),
}
CASES = [(family, name) for family, (_, _, names) in PEERS.items() for name in names]


@pytest.mark.parametrize(("family", "name"), CASES)
def test_refresh_every_step_equals_uncached(family, name):
    model = MODELS[name]()
    base, same = run(model), run(model, PEERS[family][0])
    torch.testing.assert_close(same.samples, base.samples, rtol=0, atol=1e-6)
    assert same.stats.cached_steps == 0


@pytest.mark.parametrize(("family", "name"), CASES)
def test_each_peer_engages_and_reports_what_it_reused(family, name):
    model = MODELS[name]()
    base, cached = run(model), run(model, PEERS[family][1])
    assert not torch.allclose(cached.samples, base.samples)
    assert 0 < cached.stats.cached_steps < STEPS
    assert cached.stats.steps == STEPS
    reused, units = cached.stats.reused, cached.stats.cached_units
    L = model.num_units
    expected = {
        "fora": lambda: set(reused) >= {"attn", "mlp"},
        "toca": lambda: set(reused) == set(model.sublayers),
        "pab": lambda: "attn" in reused and ("cross_attn" in reused) == (name == "t2v"),
        "tgate": lambda: reused == ("cross_attn",),
        "deepcache": lambda: units == (L - 1,),
        "delta": lambda: units == (0, 1, 2, 3) and cached.stats.unit_evals < STEPS * L,
        "teacache": lambda: units == () and cached.stats.ideal_speedup > 1,
        "fbc": lambda: units == (0,),
        "adaptive": lambda: units == (0, L - 1),
    }[family]
    assert expected(), cached.stats


def test_delta_dit_cached_steps_add_the_kept_residuals():
    """By hand: a full step keeps front = h(m) - h(0) and back = h(L) - h(L-m); a cached step early
    (t > boundary) runs units 0..L-m-1 and adds back, late (t <= boundary) runs m..L-1 from h + front."""
    model = tiny_model(long_skip=False)
    policy = parse_cache("delta:N=2,boundary=500,cached=3")
    state = policy.start(model, [900, 800, 400, 300])
    x, y = torch.randn(1, 3, 8, 8), torch.tensor([2])
    outs = []
    for k, t in enumerate([900, 800, 400, 300]):
        state.begin_step(k)
        outs.append(model(x, torch.tensor([t]), y, cache=state.branch("cond")))
    h0, c0 = model.embed(x, torch.tensor([900]), y)
    front = model.run_units(h0, c0, 0, 3) - h0
    back = model.run_units(h0, c0, 0, 4) - model.run_units(h0, c0, 0, 1)
    h1, c1 = model.embed(x, torch.tensor([800]), y)
    torch.testing.assert_close(outs[1], model.head(model.run_units(h1, c1, 0, 1) + back, c1))
    h3, c3 = model.embed(x, torch.tensor([300]), y)
    h2, c2 = model.embed(x, torch.tensor([400]), y)
    front = model.run_units(h2, c2, 0, 3) - h2  # step 2 is full again (N=2): its residuals are kept
    torch.testing.assert_close(outs[3], model.head(model.run_units(h3 + front, c3, 3, 4), c3))


def test_policies_refuse_models_they_cannot_act_on():
    with pytest.raises(ValueError, match="long skips"):
        run(tiny_model(long_skip=True), "delta:N=2")
    with pytest.raises(ValueError, match="Skip-Cache"):
        run(tiny_model(long_skip=True), "deepcache:N=2")
    with pytest.raises(ValueError, match="text"):
        run(tiny_model(long_skip=False), "tgate:gate=3")
    with pytest.raises(ValueError, match="long skips"):
        run(tiny_model(long_skip=False), "adaptive")


@pytest.mark.parametrize("spec", ["fora:N=3,start=900,stop=20", "toca:N=3,ratio=0.2,attn=0,score=drift",
                                  "delta:N=2,boundary=600,cached=none",
                                  "deepcache:N=3,b=2,start=none,stop=none", "pab:spatial=4,cross=8,lo=50,hi=900",
                                  "tgate:gate=12", "teacache:threshold=0.2,coef=2.5/-0.1/0.01", "fbc:threshold=0.08",
                                  "adaptive:threshold=0.03,b=2,max=5"])
def test_specs_round_trip(spec):
    policy = parse_cache(spec)
    assert parse_cache(policy.spec()) == policy


@pytest.mark.parametrize("spec", ["fora:N=0", "fora:M=2", "pab:lo=900,hi=100", "teacache:threshold=abc",
                                  "tgate:gate<3", "delta:cached=8"])
def test_bad_specs_are_one_line_errors(spec):
    with pytest.raises(ValueError, match="cache spec|cached"):
        policy = parse_cache(spec)
        policy.check_units(8)


def test_teacache_calibration_fits_the_output_change():
    model = tiny_model(long_skip=False)
    coefficients, fit = calibrate_teacache(model, [0, 1], [1, 2], sampling=SAMPLING, degree=2)
    assert len(coefficients) == 3 and fit["pairs"] == STEPS - 1
    assert fit["r2"] <= 1
    spec = "teacache:threshold=0.5,coef=" + "/".join(f"{c:g}" for c in coefficients)
    assert parse_cache(spec).coefficients == pytest.approx(coefficients, rel=1e-5)


def test_lagged_scalar_reads_the_previous_value():
    lagged = LaggedScalar()
    assert lagged.pop() is None
    lagged.push(torch.tensor(0.25))
    assert lagged.pop() == 0.25 and lagged.pop() is None


def test_adaptive_skip_cache_refreshes_when_the_shallow_features_move():
    """A threshold of 0 refreshes on every step it may (the step after a full step is always cached);
    an unreachable one caches up to max - 1 steps in a row."""
    model = tiny_model(long_skip=True)
    eager = run(model, "adaptive:threshold=0,max=10").stats
    lazy = run(model, "adaptive:threshold=100,max=3").stats
    assert eager.full_steps == STEPS // 2 and eager.cached_steps == STEPS // 2
    assert lazy.full_steps == 3 and lazy.cached_steps == 5  # F C C F C C F C
