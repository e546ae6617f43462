"""ToCa (token-wise caching): a setting that never reuses is the uncached run bit for bit; cached steps recompute
exactly ceil(ratio * T) tokens per sublayer; a sublayer on a subset of tokens is the full sublayer at those
tokens; the selection is per sample; the MAC count sees the reduced work."""

import math

import pytest
import torch

from skipdit import Condition, Sampling, generate
from skipdit.bench.harness import FAMILIES, counted_run, select_methods
from skipdit.cache import TokenCaching, parse_cache
from skipdit.cache.toca import _spread
from skipdit.models.latte_t2v import SplitQKVAttention
from skipdit.models.layers import Attention, Mlp, take_rows
from tests.conftest import tiny_model
from tests.test_latte import _FakeEncoder, t2v

STEPS = 7


def run(model, spec=None, *, batched=True, seeds=(0, 1), labels=(3, 5)):
    sampling = Sampling(sampler="ddim", steps=STEPS, guidance_scale=2.0, batched_guidance=batched)
    if model.conditioning == "text":
        condition = Condition(prompts=["a"], text_encoder=_FakeEncoder())
        return generate(model, list(seeds), condition, sampling=sampling, cache=spec)
    return generate(model, list(seeds), list(labels), sampling=sampling, cache=spec)


@pytest.mark.parametrize("spec", ["toca:N=1,ratio=0.3", "toca:N=3,ratio=1", "toca:N=3,ratio=1,score=drift"])
@pytest.mark.parametrize("make", [lambda: tiny_model(long_skip=False), lambda: t2v(long_skip=True)],
                         ids=["dit", "t2v"])
@pytest.mark.parametrize("batched", [True, False])
def test_a_setting_that_recomputes_every_token_is_the_uncached_run(spec, make, batched):
    model = make()
    base, same = run(model, batched=batched), run(model, spec, batched=batched)
    torch.testing.assert_close(same.samples, base.samples, rtol=0, atol=0)


@pytest.mark.parametrize("make", [lambda: tiny_model(long_skip=False), lambda: tiny_model(long_skip=True),
                                  lambda: t2v(long_skip=True)], ids=["dit", "skip-dit", "t2v"])
def test_toca_engages(make):
    model = make()
    base, cached = run(model), run(model, "toca:N=3,ratio=0.3")
    assert not torch.allclose(cached.samples, base.samples)
    assert cached.stats.full_steps == 3 and cached.stats.cached_steps == 4
    assert set(cached.stats.reused) == set(model.sublayers)


def _count_tokens(model):
    """Tokens each attention / MLP module computes per call: ``rows`` when given, else every token."""
    counts: list[tuple[str, int]] = []

    def hook(name):
        def record(module, args, kwargs):
            rows = kwargs.get("rows")
            counts.append((name, args[0].shape[1] if rows is None else rows.shape[1]))
        return record

    for name, module in model.named_modules():
        if isinstance(module, (Attention, Mlp, SplitQKVAttention)) or type(module).__name__ == "FeedForward":
            module.register_forward_pre_hook(hook(name), with_kwargs=True)
    return counts


@pytest.mark.parametrize(("spec", "attn_tokens", "mlp_tokens"), [
    ("toca:N=3,ratio=0.3", math.ceil(0.3 * 16), math.ceil(0.3 * 16)),
    ("toca:N=3,ratio=0.25,attn=0.5,score=drift", 8, 4),
    ("toca:N=3,ratio=0.2,attn=0,score=age", None, math.ceil(0.2 * 16)),  # attention reused whole: never called
])
def test_cached_steps_recompute_ceil_ratio_tokens_per_sublayer(spec, attn_tokens, mlp_tokens):
    model = tiny_model(long_skip=False)  # 4 blocks of 16 tokens
    policy = parse_cache(spec)
    timesteps = [900, 700, 500, 300, 100]
    state = policy.start(model, timesteps)
    counts = _count_tokens(model)
    x, y = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 2])
    per_step = []
    with torch.no_grad():
        for k, t in enumerate(timesteps):
            state.begin_step(k)
            counts.clear()
            model(x, torch.full((2,), t), y, cache=state.branch("cond"))
            per_step.append(list(counts))
    for k, calls in enumerate(per_step):
        if k % 3 == 0:  # full steps: every token of every sublayer
            assert calls == [(name, 16) for name, _ in per_step[0]] and len(calls) == 8
            continue
        attn = [n for name, n in calls if name.endswith(".attn")]
        mlp = [n for name, n in calls if name.endswith(".mlp")]
        assert attn == ([] if attn_tokens is None else [attn_tokens] * 4)
        assert mlp == [mlp_tokens] * 4


def test_recomputed_is_the_ceiling_of_the_fraction():
    policy = TokenCaching(ratio=0.1)
    assert policy.recomputed("mlp", 30) == 3 and policy.recomputed("mlp", 31) == 4  # 0.1 * 30 is 3.0000000000000004
    assert TokenCaching(ratio=0.3, attn_ratio=0).recomputed("temporal_attn", 16) == 0
    assert TokenCaching(ratio=0.0).recomputed("cross_attn", 16) == 0


def test_a_sublayer_on_a_subset_of_tokens_is_the_full_sublayer_at_those_tokens():
    torch.manual_seed(0)
    x, context = torch.randn(2, 16, 32), torch.randn(2, 5, 32)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    rows = torch.tensor([[0, 3, 7, 15], [2, 3, 9, 10]])
    mlp, attn, split, cross = Mlp(32, 64), Attention(32, 4), SplitQKVAttention(32, 4), SplitQKVAttention(32, 4, 32)
    with torch.no_grad():
        torch.testing.assert_close(mlp(take_rows(x, rows)), take_rows(mlp(x), rows))  # token-wise: exact
        # attention: the chosen queries over the keys and values of every token (or of the context)
        torch.testing.assert_close(attn(x, rows=rows), take_rows(attn(x), rows), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(split(x, rows=rows), take_rows(split(x), rows), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(cross(x, context, mask, rows=rows), take_rows(cross(x, context, mask), rows),
                                   rtol=1e-5, atol=1e-6)
        # the written-out softmax gives SDPA's output, and each query hands out a total weight of 1
        out, received = attn(x, received=True)
        torch.testing.assert_close(out, attn(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(received.sum(dim=-1), torch.full((2,), 16.0))
        _, masked = cross(x, context, mask, received=True)
        assert masked[1, 3:].abs().max() == 0  # masked context tokens receive nothing


def test_the_spatial_bonus_lifts_the_best_token_of_each_2x2_cell():
    score = torch.arange(16.0).reshape(1, 16)  # a 4x4 grid, row-major
    lifted = _spread(score, 4, 0.5)
    best = [5, 7, 13, 15]  # the bottom-right token of each cell
    assert torch.equal(lifted[0, best], score[0, best] * 1.5)
    others = [i for i in range(16) if i not in best]
    assert torch.equal(lifted[0, others], score[0, others])


@pytest.mark.parametrize("spec", ["toca:N=3,ratio=0.3", "toca:N=3,ratio=0.3,score=drift"])
@pytest.mark.parametrize("batched", [True, False])
def test_sample_i_depends_only_on_seed_i(spec, batched):
    """The tokens are chosen per sample: a permuted batch gives the permuted samples."""
    model = tiny_model(long_skip=False)
    seeds, labels = [0, 1, 2, 3], [3, 5, 7, 1]
    order = [2, 0, 3, 1]
    out = run(model, spec, batched=batched, seeds=seeds, labels=labels)
    permuted = run(model, spec, batched=batched, seeds=[seeds[i] for i in order], labels=[labels[i] for i in order])
    torch.testing.assert_close(permuted.samples, out.samples[order], rtol=0, atol=1e-5)
    assert not parse_cache(spec).decides_at_run_time


def test_the_mac_count_sees_the_tokens_not_computed():
    model = tiny_model(long_skip=False)
    macs = {spec: counted_run(model, lambda spec=spec: run(model, spec)).macs
            for spec in (None, "toca:N=3,ratio=1", "toca:N=3,ratio=0.3", "toca:N=3,ratio=0", "fora:N=3")}
    assert macs["toca:N=3,ratio=1"] == macs[None]
    assert macs["fora:N=3"] == macs["toca:N=3,ratio=0"] < macs["toca:N=3,ratio=0.3"] < macs[None]


@pytest.mark.parametrize("spec", ["toca:N=4,ratio=0.2,attn=0,score=age,age=0.5,bonus=0", "toca:ratio=0.25,attn=none"])
def test_specs_round_trip(spec):
    policy = parse_cache(spec)
    assert parse_cache(policy.spec()) == policy


@pytest.mark.parametrize("spec", ["toca:N=0", "toca:ratio=1.5", "toca:attn=-0.1", "toca:score=entropy",
                                  "toca:age=-1", "toca:ratio=abc", "toca:fresh=0.3"])
def test_bad_specs_are_one_line_errors(spec):
    with pytest.raises(ValueError, match="cache spec"):
        parse_cache(spec)


def test_the_bench_sweeps_toca_on_the_baseline():
    methods = select_methods("toca", 50)
    assert FAMILIES["toca"][1] == "baseline"
    assert [m.spec for m in methods] == list(FAMILIES["toca"][2]) and len(methods) == 3
    assert not any(m.batch_dependent for m in methods)
