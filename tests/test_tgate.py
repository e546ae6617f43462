"""T-GATE's guidance-aware form (``cfg=drop``): before the gate it is the plain T-GATE; from the gate on, the
cross-attention is frozen at the mean of the two branches' outputs at step gate - 1 and the sampler calls the
conditional branch alone, once per model evaluation, with batch N; the stats count the halving."""

import json

import pytest
import torch

from skipdit import Condition, Sampling, generate, load
from skipdit.bench.harness import select_methods
from skipdit.cache import CacheStats, TGate, parse_cache
from skipdit.cache.families import plan_offline
from skipdit.cli import main
from skipdit.diffusion.samplers import make_sampler
from tests.test_latte import _FakeEncoder, caption, t2v

GATE, STEPS = 3, 6


class Calls:
    """The batch size of every call of ``model`` (a forward pre-hook)."""

    def __init__(self, model):
        self.sizes: list[int] = []
        model.register_forward_pre_hook(lambda _m, args: self.sizes.append(args[0].shape[0]))


def run(model, spec, *, sampler="ddim", batched=True, scale=3.0, callback=None):
    sampling = Sampling(sampler=sampler, steps=STEPS, guidance_scale=scale, batched_guidance=batched)
    condition = Condition(prompts=["a", "b"], text_encoder=_FakeEncoder())
    return generate(model, [0, 1], condition, sampling=sampling, cache=spec, callback=callback)


def test_keep_is_the_default_and_specs_round_trip():
    assert parse_cache("tgate:gate=10") == TGate(gate=10) == TGate(gate=10, cfg="keep")
    assert TGate(gate=10).spec() == "tgate:gate=10"  # as before cfg existed: sample-many fingerprints still match
    assert TGate(gate=10, cfg="drop").spec() == "tgate:gate=10,cfg=drop"
    for spec in ("tgate:gate=4,cfg=drop", "tgate:cfg=keep"):
        policy = parse_cache(spec)
        assert parse_cache(policy.spec()) == policy
    with pytest.raises(ValueError, match="cache spec.*cfg must be one of keep, drop"):
        parse_cache("tgate:cfg=off")


@pytest.mark.parametrize("batched", [True, False])
def test_before_the_gate_it_is_the_plain_t_gate(batched):
    model = t2v(long_skip=True)
    steps = {}
    for spec in ("tgate:gate=3", "tgate:gate=3,cfg=drop"):
        seen = []
        run(model, spec, batched=batched, callback=lambda k, x, x0, seen=seen: seen.append(x.clone()))
        steps[spec] = seen
    for k in range(STEPS):
        same = torch.equal(steps["tgate:gate=3"][k], steps["tgate:gate=3,cfg=drop"][k])
        assert same == (k < GATE), k


@pytest.mark.parametrize("sampler", ["ddim", "heun", "dpm++2m"])
@pytest.mark.parametrize("batched", [True, False])
def test_after_the_gate_one_call_of_batch_n_per_model_evaluation(sampler, batched):
    model = t2v(long_skip=True)
    calls = Calls(model)
    out = run(model, "tgate:gate=3,cfg=drop", sampler=sampler, batched=batched)
    per_step = make_sampler(sampler, steps=STEPS).calls_per_step
    guided = [4] if batched else [2, 2]  # batch 2N in one call, or N twice
    expected = [size for k, n in enumerate(per_step) for _ in range(n) for size in (guided if k < GATE else [2])]
    assert calls.sizes == expected
    assert out.stats.unguided_steps == STEPS - GATE and out.stats.cached_steps == STEPS - GATE


@pytest.mark.parametrize("batched", [True, False])
def test_after_the_gate_the_output_is_the_conditional_branch_with_the_averaged_cross_attention(batched):
    """By hand: the cross-attention outputs of both branches at step gate - 1 (uncached), averaged, frozen into
    the conditional branch at a later step."""
    model = t2v(long_skip=True)
    policy = parse_cache("tgate:gate=2,cfg=drop")
    timesteps = [900, 700, 500]
    state = policy.start(model, timesteps)
    x = torch.randn(2, 4, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    cond, mask = caption()
    uncond = torch.zeros_like(cond)
    outs = []
    with torch.no_grad():
        for k, t in enumerate(timesteps):
            state.begin_step(k)
            tt = torch.full((2,), t)
            if not state.guided:
                outs.append(model(x, tt, cond, mask, cache=state.branch("cond")))
            elif batched:
                outs.append(model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cond, uncond]),
                                  torch.cat([mask, mask]), cache=state.branch("both"))[:2])
            else:
                outs.append(model(x, tt, cond, mask, cache=state.branch("cond")))
                model(x, tt, uncond, mask, cache=state.branch("uncond"))
        assert [state.plan[k].guided for k in range(3)] == [True, True, False]
        kept = {}
        for text in (cond, uncond):
            model(x, torch.full((2,), 700), text, mask, cache=Recording(kept))
        averaged = {key: (c + u) / 2 for key, (c, u) in kept.items()}
        reference = model(x, torch.full((2,), 500), cond, mask, cache=Frozen(averaged))
    torch.testing.assert_close(outs[2], reference, rtol=1e-5, atol=1e-5)
    assert len(averaged) == model.num_units  # one cross-attention per unit


class Recording:
    """A ``cache=`` that runs every unit and records each cross-attention output, per key, in call order."""

    def __init__(self, kept):
        self.kept = kept

    def run_units(self, model, h, ctx):
        def memo(key, fn, *args):
            out = fn(*args)
            if key[1] == "cross_attn":
                self.kept.setdefault(key, []).append(out)
            return out

        return model.run_units(h, ctx, memo=memo)


class Frozen:
    """A ``cache=`` whose cross-attention sublayers return the given outputs."""

    def __init__(self, outputs):
        self.outputs = outputs

    def run_units(self, model, h, ctx):
        return model.run_units(h, ctx, memo=lambda key, fn, *args: self.outputs.get(key) if key in self.outputs
                               else fn(*args))


def test_the_stats_count_the_dropped_unconditional_passes():
    model = t2v(long_skip=True)
    stats = run(model, "tgate:gate=3,cfg=drop").stats
    units = model.num_units
    assert stats.unguided_steps == 3 and stats.unguided_unit_evals == 3 * units
    assert stats.ideal_speedup == pytest.approx(2 * STEPS / (2 * STEPS - 3))  # 3 of 12 branch passes saved
    assert "3 steps ran the conditional branch alone" in stats.summary()
    unguided_run = run(model, "tgate:gate=3,cfg=drop", scale=1.0).stats  # no guidance: nothing to halve
    assert unguided_run.unguided_steps == 0 and unguided_run.ideal_speedup == 1.0
    keep = run(model, "tgate:gate=3").stats
    assert keep.unguided_steps == 0 and keep.ideal_speedup == 1.0
    assert (stats + stats).unguided_steps == 6
    assert CacheStats.uncached(6, 4).unguided_steps == 0
    planned = plan_offline("tgate:gate=10,cfg=drop", units=4, sampler="ddim", steps=50).stats
    assert planned.unguided_steps == 40


def test_the_bench_sweeps_both_forms():
    specs = [m.spec for m in select_methods("tgate", 20)]
    assert specs == ["tgate:gate=5", "tgate:gate=10", "tgate:gate=5,cfg=drop", "tgate:gate=10,cfg=drop"]
    assert [m.spec for m in select_methods("tgate:gate=4,cfg=drop", 20)] == ["tgate:gate=4,cfg=drop"]


def test_the_builtin_text_to_image_model_runs_it_end_to_end(tmp_path, capsys):
    from skipdit.text import load_text_encoder

    model = load("digits/T2I-Skip-DiT")
    condition = Condition(prompts=["a handwritten four", "the digit seven"], text_encoder=load_text_encoder("minilm"))
    calls = Calls(model)
    sampling = Sampling(sampler="ddim", steps=8, guidance_scale=4.0)
    out = generate(model, [0, 1], condition, sampling=sampling, cache="tgate:gate=4,cfg=drop")
    assert calls.sizes == [4] * 4 + [2] * 4 and out.images.shape == (2, 16, 16, 1)
    assert out.cache == "tgate:gate=4,cfg=drop" and out.stats.unguided_steps == 4

    code = main(["bench", "--model", "digits/T2I-Skip-DiT", "--caches", "tgate", "--seeds", "0-1", "--steps", "8",
                 "--sampler", "ddim", "--repeats", "1", "--out", str(tmp_path), "--no-progress", "--flops"])
    assert code == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "bench.json").read_text())["rows"]}
    drop, keep = rows["T-GATE (gate=4,cfg=drop)"], rows["T-GATE (gate=4)"]
    # by MACs: the 4 steps after the gate run one branch of two (16 passes -> 12), and reuse the cross-attention
    assert drop["ideal"] > 16 / 12 and 1 < keep["ideal"] < drop["ideal"]
    assert capsys.readouterr().out.count("T-GATE (gate=") >= 4
