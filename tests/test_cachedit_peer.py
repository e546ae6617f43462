"""cache-dit's caches as bench peers: the table, uncached when nothing is reused, engagement counted and checked
against cache-dit's own stats, independent runs, guidance in two passes, and the bench rows."""

import importlib.util
import json
import sys

import pytest
import torch

from skipdit import Sampling, generate, save
from skipdit.bench.cachedit_peers import setting_name
from skipdit.bench.harness import CACHE_DIT, Bench, Method, Preparer, run_bench, select_methods
from skipdit.cli import main
from skipdit.metrics import psnr

from .conftest import tiny_model

STEPS = 8
SAMPLING = Sampling(sampler="ddim", steps=STEPS, guidance_scale=2.0)
SEEDS, LABELS = [0, 1], [1, 2]
DEPTH = 4  # conftest's tiny model
needs_cache_dit = pytest.mark.skipif(
    importlib.util.find_spec("cache_dit") is None or importlib.util.find_spec("diffusers") is None,
    reason="cache-dit peers need cache-dit and diffusers: pip install 'skipdit[cachedit]'")
# threshold >= 1 makes cache-dit take every call after its warm-up as similar, 0 none: exact counts either way
ALWAYS = dict(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=1.0, max_warmup_steps=3)
NEVER = dict(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.0)


def dit():
    return tiny_model(long_skip=False)


def run(model, **changes):
    return generate(model, SEEDS, LABELS, sampling=SAMPLING.replace(**changes))


def peer(model, method="dbcache", separate_cfg=False, **options):
    from skipdit.bench.cachedit_peers import CacheDitPeer

    return CacheDitPeer(model, method, steps=STEPS, separate_cfg=separate_cfg, **options)


def cache_dit_stats(p):
    import cache_dit

    return cache_dit.summary(p.transformer, logging=False)[0]


def test_the_families_in_select_methods():
    methods = select_methods("cd-dbcache,cd-taylorseer,cd-dbprune", steps=50)
    labels = [m.label for m in methods]
    assert labels[:2] == ["cache-dit DBCache (F1B0_R0.05)", "cache-dit DBCache (F1B0_R0.08)"]
    assert "cache-dit DBCache (F8B0_R0.08)" in labels and "cache-dit DBCache+TaylorSeer (F1B0_R0.12_T1O2)" in labels
    assert "cache-dit DBPrune (F1B0_R0.05)" in labels
    assert {"cache-dit DBCache (F1B0_W2_R0.12)", "cache-dit DBCache+TaylorSeer (F1B0_W2_R0.12_T1O1)"} <= set(labels)
    assert setting_name(dict(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.1,
                             max_warmup_steps=2, max_cached_steps=5)) == "F1B0_W2_R0.1,max_cached_steps=5"
    assert all(m.on == "baseline" and m.spec is None and m.batch_dependent for m in methods)
    assert methods[-1].cachedit == ("dbprune", (("Fn_compute_blocks", 1), ("Bn_compute_blocks", 0),
                                                ("residual_diff_threshold", 0.08)))
    assert {m.family for m in select_methods("all", 50)} >= {"cache-dit DBCache", "cache-dit DBCache+TaylorSeer",
                                                             "cache-dit DBPrune"}
    with pytest.raises(ValueError, match="cd-dbcache, cd-taylorseer, cd-dbprune"):
        select_methods(" , ", 50)


def test_without_cache_dit_the_methods_are_listed_as_not_run(monkeypatch):
    monkeypatch.setitem(sys.modules, "cache_dit", None)  # import cache_dit raises ImportError
    models = {"model": tiny_model(long_skip=True), "baseline": dit()}
    bench = Bench(models, {"model": "skip", "baseline": "dit"}, SEEDS, LABELS, SAMPLING, repeats=1, progress=False)
    rows, skipped = run_bench(bench, select_methods("cd-dbcache", STEPS), Preparer(bench, [100]))
    assert [r.family for r in rows] == ["none", "none"] and len(skipped) == len(CACHE_DIT["cd-dbcache"][1]) == 7
    assert all(s["reason"] == "cache-dit peers need cache-dit (tested with 1.5.3): pip install 'skipdit[cachedit]'"
               for s in skipped)


@needs_cache_dit
def test_without_reuse_the_peer_is_our_model():
    model = dit()
    base = run(model)
    for method in ("dbcache", "taylorseer"):
        p = peer(model, method, **NEVER)
        torch.testing.assert_close(run(p).samples, base.samples, atol=1e-4, rtol=0, msg=method)
        report = p.report()
        assert (report.forwards, report.block_calls, report.blocks_run) == (STEPS, STEPS * DEPTH, STEPS * DEPTH)
        assert report.cached_forwards == 0 and not p.engaged
        assert cache_dit_stats(p).cached_steps == []


@needs_cache_dit
@pytest.mark.parametrize("method,bn", [("dbcache", 0), ("dbcache", 1), ("taylorseer", 0)])
def test_engaged_counts_agree_with_cache_dits_own_stats(method, bn):
    model = dit()
    base = run(model)
    p = peer(model, method, **{**ALWAYS, "Bn_compute_blocks": bn})
    out = run(p)
    report = p.report()
    cached = STEPS - ALWAYS["max_warmup_steps"]  # every call after the warm-up
    assert cache_dit_stats(p).cached_steps == list(range(ALWAYS["max_warmup_steps"], STEPS))
    assert report.cached_forwards == cached and p.engaged
    assert report.blocks_skipped == cached * (DEPTH - 1 - bn)  # the first block and the last bn always run
    assert not torch.allclose(out.samples, base.samples, atol=1e-3)
    assert "skipped" in report.summary() and f"{report.blocks_skipped} of {STEPS * DEPTH}" in report.summary()


@needs_cache_dit
def test_taylorseer_forecasts_what_dbcache_reuses():
    """TaylorSeer 1.5.3 forms its first difference at its 4th computed call, the second at the 5th: with fewer
    computed calls it reuses, as DBCache does (with 3 here, order 1 gives DBCache's output exactly)."""
    model = dit()
    options = {**ALWAYS, "max_warmup_steps": 5}
    reused = run(peer(model, "dbcache", **options)).samples
    first = run(peer(model, "taylorseer", **options, taylorseer_order=1)).samples
    second = run(peer(model, "taylorseer", **options, taylorseer_order=2)).samples
    torch.testing.assert_close(run(peer(model, "taylorseer", **ALWAYS)).samples, run(peer(model, **ALWAYS)).samples,
                               atol=0, rtol=0)
    assert not torch.allclose(first, reused, atol=1e-4) and not torch.allclose(second, first, atol=1e-4)


@needs_cache_dit
def test_runs_are_independent_and_reset_starts_afresh():
    model = dit()
    p = peer(model, "taylorseer", **ALWAYS)
    first, report = run(p), p.report()
    again = run(p)  # a new run is seen from the timestep going up: a fresh cache-dit context
    torch.testing.assert_close(again.samples, first.samples, atol=0, rtol=0)
    assert p.report().forwards == 2 * STEPS and p.report().cached_forwards == 2 * report.cached_forwards
    p.reset()
    assert p.report().forwards == 0
    torch.testing.assert_close(run(p).samples, first.samples, atol=0, rtol=0)
    assert p.report() == report
    with pytest.raises(ValueError, match="set up for 8 model calls per run"):
        run(p, steps=STEPS + 2)


@needs_cache_dit
def test_disable_cache_restores_the_uncached_output():
    import cache_dit

    model = dit()
    exact = run(peer(model, **NEVER)).samples
    p = peer(model, **ALWAYS)
    assert not torch.equal(run(p).samples, exact)
    cache_dit.disable_cache(p.transformer)
    p.reset()
    torch.testing.assert_close(run(p).samples, exact, atol=0, rtol=0)
    assert p.report().blocks_run == STEPS * DEPTH and not p.engaged


@needs_cache_dit
def test_guidance_in_two_passes_is_cache_dits_separate_cfg():
    model = dit()
    base = run(model, batched_guidance=False)
    exact = peer(model, separate_cfg=True, **NEVER)
    torch.testing.assert_close(run(exact, batched_guidance=False).samples, base.samples, atol=1e-4, rtol=0)
    assert exact.report().forwards == 2 * STEPS
    p = peer(model, separate_cfg=True, **ALWAYS)
    run(p, batched_guidance=False)
    stats, cached = cache_dit_stats(p), list(range(ALWAYS["max_warmup_steps"], STEPS))
    assert stats.cached_steps == cached and stats.cfg_cached_steps == cached  # each branch decides on its own
    assert p.report().cached_forwards == 2 * len(cached)
    with pytest.raises(ValueError, match="set up for 8 model calls per run"):
        run(peer(model, **ALWAYS), batched_guidance=False)  # two passes, set up for one


@needs_cache_dit
def test_dbprune_runs_or_names_cache_dits_failure():
    """cache-dit 1.5.3's DBPrune raises a TypeError on DiT's block pattern: the peer says so at setup (the bench
    lists it as not run); a cache-dit that runs it must prune blocks."""
    import cache_dit

    model = dit()
    try:
        p = peer(model, "dbprune", **ALWAYS)
    except ValueError as err:
        assert cache_dit.__version__ == "1.5.3"
        assert str(err).startswith("cache-dit's dbprune fails on diffusers' DiT: TypeError")
        return
    run(p)
    assert p.engaged and p.report().blocks_skipped > 0


@needs_cache_dit
def test_bad_requests_fail_clearly():
    from skipdit.bench.cachedit_peers import CacheDitPeer

    with pytest.raises(ValueError, match="no cache-dit peer 'fbcache' for DiT; .*dbcache, taylorseer, dbprune"):
        peer(dit(), "fbcache")
    with pytest.raises(ValueError, match="no long skips"):
        peer(tiny_model(long_skip=True))
    with pytest.raises(ValueError, match=r"unknown DBCacheConfig option\(s\) \['treshold'\]; valid: .*Fn_compute"):
        peer(dit(), treshold=0.1)
    with pytest.raises(ValueError, match="valid: (?!.*num_inference_steps)"):
        peer(dit(), num_inference_steps=3)  # the peer's
    with pytest.raises(ValueError, match="F4B0 computes all 4 blocks of this model: nothing is left to cache"):
        peer(dit(), Fn_compute_blocks=4)
    with pytest.raises(ValueError, match="F8B0 computes all 4"):
        peer(dit())  # cache-dit's default Fn
    with pytest.raises(ValueError, match="Fn_compute_blocks >= 1 and Bn_compute_blocks >= 0, got F0B0"):
        peer(dit(), Fn_compute_blocks=0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        CacheDitPeer(dit(), "dbcache", steps=0)
    with pytest.raises(ValueError, match="brings its own cache"):
        peer(dit(), **NEVER)(torch.randn(1, 3, 8, 8), torch.tensor([10]), torch.tensor([1]), cache=object())


@needs_cache_dit
def test_bench_row_against_the_vanilla_models_uncached_samples():
    model = dit()
    models = {"model": tiny_model(long_skip=True), "baseline": model}
    bench = Bench(models, {"model": "skip", "baseline": "dit"}, SEEDS, LABELS, SAMPLING, repeats=1, progress=False)
    method = Method("cache-dit DBCache", "test", cachedit=("dbcache", tuple(ALWAYS.items())))
    rows, skipped = run_bench(bench, [method], Preparer(bench, [100]))
    assert not skipped
    row = rows[-1]
    assert row.model == "dit" and row.batch_dependent and row.full_steps is None and row.cached_steps is None
    cached = STEPS - ALWAYS["max_warmup_steps"]
    assert row.reused == (f"cache-dit dbcache: {2 * STEPS} forwards, {2 * cached} of them skipped blocks, "
                          f"{2 * cached * (DEPTH - 1)} of {2 * STEPS * DEPTH} block calls skipped")  # counted + timed
    assert 1.2 < row.ideal < STEPS * DEPTH / (STEPS * DEPTH - cached * (DEPTH - 1)) + 1e-6  # the MACs fell
    expected = psnr(run(peer(model, **ALWAYS)).images, run(model).images).double().mean().item()
    assert row.psnr == pytest.approx(expected, rel=1e-6)  # against the vanilla model's own uncached samples
    assert len(row.similarity) == STEPS and min(row.similarity) < 1.0


@needs_cache_dit
def test_bench_command_lists_what_did_not_engage_or_apply(tmp_path, capsys):
    model = save(tiny_model(long_skip=True, in_channels=1), tmp_path / "skip.safetensors")
    baseline = save(tiny_model(long_skip=False, in_channels=1), tmp_path / "dit.safetensors")
    out = tmp_path / "bench"
    code = main(["bench", "--model", str(model), "--baseline-model", str(baseline), "--caches", "skip:N=2,cd-dbcache",
                 "--seeds", "0-1", "--steps", "6", "--repeats", "1", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    text = (out / "bench.md").read_text()
    # 6 steps are within cache-dit's warm-up of 8 calls: nothing is cached; F4 and F8 leave no block on 4
    assert ("cache-dit DBCache (F1B0_R0.08): the cache-dit hook never engaged here (cache-dit dbcache: 12 forwards, "
            "0 of them skipped blocks, 0 of 48 block calls skipped)") in text
    assert "cache-dit DBCache (F4B0_R0.08): F4B0 computes all 4 blocks of this model: nothing is left to cache" in text
    assert [r["family"] for r in json.loads((out / "bench.json").read_text())["rows"]] == ["none", "none", "Skip-Cache"]
    assert "Traceback" not in printed
