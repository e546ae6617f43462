"""``skipdit.tuning.tune`` and the ``skipdit cache tune`` / ``calibrate-teacache`` commands, on tiny random models.

On 10 steps the timesteps are 999, 888, ..., 0, so the arithmetic of the plans is easy to follow: with N=8 and
b=1 on 4 units, 2 full steps and 8 cached steps of 2 units make 24 of 40 unit evaluations (1.67x, the most).
"""

import json

import pytest

from skipdit import Sampling, generate, save
from skipdit.cache import CacheStats, SkipCache, TaylorSkipCache, TeaCache, parse_cache
from skipdit.diffusion import GaussianDiffusion
from skipdit.metrics import psnr
from skipdit.tuning import TuneCandidate, TuneResult, graded_masks, tune

from .conftest import tiny_model
from .test_cli import run_cli

COMMON = dict(condition=[1, 2], sampling=Sampling(sampler="ddim", steps=10, guidance_scale=2.0))
SEEDS = [0, 1]
TIMESTEPS = GaussianDiffusion.create("10").sampling_timesteps()


def plan_key(policy, units=4):
    return tuple((step.full, step.units) for step in policy.plan(TIMESTEPS, units))


@pytest.fixture(scope="module")
def result():
    model = tiny_model(input_size=16)  # 16x16 images: large enough for SSIM's 11x11 window
    return model, tune(model, 1.5, SEEDS, tolerance=0.0, progress=False, **COMMON)


def test_best_candidate_reaches_the_target_and_ranks_by_psnr(result):
    model, res = result
    assert res.candidates and res.best is res.candidates[0]
    assert all(c.ideal_speedup >= 1.5 for c in res.candidates)
    scores = [c.psnr for c in res.candidates]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < c.ssim <= 1 for c in res.candidates)
    assert res.uncached_seconds > 0 and res.measured_speedup > 0
    # the reported numbers are the plan's and the metric's, recomputed independently
    best = parse_cache(res.best.spec)
    assert best == res.best.policy and isinstance(best, SkipCache)
    assert res.best.ideal_speedup == CacheStats.from_plan(best.plan(TIMESTEPS, 4), 4).ideal_speedup
    cached, base = generate(model, SEEDS, cache=best, **COMMON), generate(model, SEEDS, **COMMON)
    assert res.best.psnr == pytest.approx(float(psnr(cached.images, base.images).mean()))


def test_identical_plans_are_sampled_once(result):
    _, res = result
    keys = [plan_key(c.policy) for c in res.candidates]
    assert len(set(keys)) == len(keys) and res.duplicates > 0
    # t=999 is the only step with t >= 900 and t=0 the only one with t <= 50: six specs, one plan
    model = tiny_model()
    few = tune(model, 1.0, SEEDS, intervals=[2], branches=[1], starts=(None, 900), stops=(None, 50, 20),
               progress=False, **COMMON)
    assert (few.considered, few.reachable, few.duplicates) == (6, 1, 5)
    assert [c.spec for c in few.candidates] == ["skip:N=2,b=1,start=none,stop=none"]


def test_max_candidates_keeps_those_closest_to_the_target():
    res = tune(tiny_model(), 1.5, SEEDS, max_candidates=3, progress=False, **COMMON)
    assert len(res.candidates) == 3 < res.reachable
    assert max(abs(c.ideal_speedup - 1.5) for c in res.candidates) < 0.1


def test_the_forecasting_family_tries_every_order_and_masks():
    model = tiny_model()
    res = tune(model, 1.0, SEEDS, family="taylor", intervals=[2, 4], branches=[1], starts=(None,), stops=(None,),
               orders=(0, 1), masks=True, max_candidates=100, progress=False, **COMMON)
    policies = [c.policy for c in res.candidates]
    assert all(isinstance(p, TaylorSkipCache) for p in policies)
    assert {p.order for p in policies} == {0, 1}  # the same plan at two orders is two computations
    masked, graded = {p.mask for p in policies if p.mask is not None}, graded_masks(10, [2, 4])
    # the equal-gap masks plan as N=2 and N=4 and are sampled once, as the interval schedules
    assert masked == set(graded) - {"FCFCFCFCFC", "FCCCFCCCFC"} and any("R" in m for m in masked)
    assert res.considered == 2 * 2 + len(graded) * 2 and len(res.candidates) == res.reachable
    # order 0 without a mask is Skip-Cache itself: its PSNR is Skip-Cache's
    zero = next(c for c in res.candidates if c.policy.order == 0 and c.policy.mask is None and c.policy.interval == 2)
    plain = generate(model, SEEDS, cache="skip:N=2", **COMMON).images
    assert zero.psnr == pytest.approx(float(psnr(plain, generate(model, SEEDS, **COMMON).images).mean()))


def test_graded_masks():
    masks = graded_masks(10, [2, 3])
    assert masks[0] == "FCFCFCFCFC" and "FCCFCCFCCF" in masks  # equal gaps: the interval schedule
    assert "FCFCFCFCCF" in masks and "FCCFCCFCFC" in masks  # gaps 2 -> 3: denser early; 3 -> 2: denser late
    assert "FCRFCRFCRF" in masks  # the three-level form of gap 3
    assert all(m[0] == "F" and len(m) == 10 for m in masks) and len(set(masks)) == len(masks)


def test_pareto_front_and_spread_selection():
    def cand(spec, ideal, value):
        return TuneCandidate(spec, None, ideal, 1, 1, value, None, 1.0, 1.0)

    result = TuneResult(1.0, [cand("a", 1.5, 40.0), cand("b", 2.0, 41.0), cand("c", 2.5, 30.0),
                              cand("d", 2.2, 29.0), cand("e", 1.2, 45.0)], 1.0, 5, 5, 0)
    assert [c.spec for c in result.pareto] == ["c", "b", "e"]  # a is beaten by b, d by c
    res = tune(tiny_model(), 1.0, SEEDS, select="spread", max_candidates=4, progress=False, **COMMON)
    ideals = sorted(c.ideal_speedup for c in res.candidates)
    assert len(ideals) == 4 and ideals[0] < 1.2 and ideals[-1] == pytest.approx(1.67, abs=0.01)  # both ends
    front = res.pareto
    assert all(a.ideal_speedup > b.ideal_speedup and a.psnr < b.psnr for a, b in zip(front, front[1:]))


@pytest.mark.parametrize("long_skip,target,message", [
    (True, 2.0, "highest ideal speed-up available is 1.67x"),
    (False, 1.5, "a model with long skips"),
    (True, 0.5, "target speed-up must be >= 1"),
])
def test_bad_searches_raise(long_skip, target, message):
    with pytest.raises(ValueError, match=message):
        tune(tiny_model(long_skip=long_skip), target, SEEDS, progress=False, **COMMON)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    return (str(save(tiny_model(), folder / "skip.safetensors")),
            str(save(tiny_model(long_skip=False), folder / "dit.safetensors")))


SAMPLER = ["--sampler", "ddim", "--steps", "10", "--seeds", "0-1", "--no-progress"]


def test_cli_tune_prints_a_table_and_the_best_spec_last(tmp_path, capsys, ckpts):
    report = tmp_path / "tune.json"
    code, out, _ = run_cli(capsys, "cache", "tune", "--ckpt", ckpts[0], "--target-speedup", "1.5", *SAMPLER,
                           "--top", "3", "--json", report)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[1].split()[:3] == ["rank", "spec", "ideal"] and lines[-2].startswith("best: ")
    policy = parse_cache(lines[-1])
    assert isinstance(policy, SkipCache) and lines[2].split()[1] == lines[-1]
    data = json.loads(report.read_text())
    assert data["best"] == lines[-1] and len(data["rows"]) > 3
    assert all(row["ideal_speedup"] >= 1.5 * 0.95 for row in data["rows"])


def test_cli_calibrate_teacache_prints_a_ready_spec(capsys, ckpts):
    code, out, _ = run_cli(capsys, "cache", "calibrate-teacache", "--ckpt", ckpts[1], "--degree", "2", *SAMPLER)
    assert code == 0 and "9 step pairs" in out and "R² = " in out
    policy = parse_cache(out.strip().splitlines()[-1])
    assert isinstance(policy, TeaCache) and policy.threshold == 0.1 and len(policy.coefficients) == 3


@pytest.mark.parametrize("argv,message", [
    (["tune", "--ckpt", "{dit}", "--target-speedup", "1.5"], "a model with long skips"),
    (["tune", "--model", "digits/DiT", "--target-speedup", "1.5"], "a model with long skips"),
    (["tune", "--ckpt", "{skip}", "--target-speedup", "3"], "highest ideal speed-up available is 1.67x"),
    (["tune", "--ckpt", "{skip}", "--target-speedup", "1.5", "--branches", "3"], "b in 1..2"),
    (["tune", "--ckpt", "{skip}", "--target-speedup", "1.5", "--cache", "skip:N=2"], "--cache is not used"),
    (["tune", "--ckpt", "{skip}", "--target-speedup", "1.5", "--intervals", "4-2"], "end before start"),
    (["tune", "--ckpt", "{skip}", "--target-speedup", "1.5", "--masks"], "add --family taylor"),
    (["tune", "--ckpt", "{skip}", "--target-speedup", "1.5", "--orders", "1"], "add --family taylor"),
    (["tune", "--ckpt", "{skip}", "--target-speedup", "1.5", "--family", "taylor", "--orders", "7"],
     "order must be 0..4"),
    (["tune", "--ckpt", "{skip}", "--target-speedup", "1.5", "--select", "all"], "invalid choice: 'all'"),
    (["calibrate-teacache", "--ckpt", "{dit}", "--degree", "0"], "--degree: must be a positive integer"),
    (["calibrate-teacache", "--ckpt", "{dit}", "--degree", "9"], "too few to fit"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, ckpts, argv, message):
    argv = [a.replace("{skip}", ckpts[0]).replace("{dit}", ckpts[1]) for a in argv]
    code, _, err = run_cli(capsys, "cache", *argv, *SAMPLER)
    assert code == 2 and err.count("\n") == 1 and message in err
