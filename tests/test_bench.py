"""skipdit bench: the harness (counted and timed runs, fidelity, MACs), the report and the command."""

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from skipdit import Condition, Sampling, generate, save
from skipdit.bench.harness import Bench, Preparer, Row, counted_run, run_bench, select_methods, step_similarity
from skipdit.bench.report import family_front, headline, markdown_table
from skipdit.cli import main

from .conftest import tiny_model

CONDITION = Condition(labels=[1, 2, 3])
SAMPLING = Sampling(sampler="ddim", steps=6, guidance_scale=2.0)


def bench(**kw):
    models = {"model": tiny_model(long_skip=True), "baseline": tiny_model(long_skip=False)}
    return Bench(models, {"model": "skip", "baseline": "dit"}, [0, 1, 2], CONDITION, SAMPLING, repeats=1,
                 progress=False, **kw)


def test_rows_measure_fidelity_macs_and_steps_against_the_same_models_uncached_run():
    b = bench()
    methods = select_methods("skip:N=2,fora:N=2,deepcache:N=2,b=1,teacache:threshold=5", steps=6)
    assert [m.on for m in methods] == ["model", "baseline", "baseline", "baseline"]
    rows, skipped = run_bench(b, methods, Preparer(b, [100, 101]))
    assert not skipped
    by = {r.method: r for r in rows}
    assert by["skip uncached"].ideal == 1.0 and by["skip uncached"].psnr is None
    skip = by["Skip-Cache (N=2)"]
    # Skip-Cache N=2 on 4 units: 3 full steps of 4 units + 3 cached steps of 2 units -> MACs ratio just under 24/18
    assert skip.full_steps == 3 and skip.cached_steps == 3
    assert 1.2 < skip.ideal < 24 / 18 + 1e-6
    assert skip.macs_per_sample < by["skip uncached"].macs_per_sample
    fora = by["FORA (N=2)"]
    assert fora.model == "dit" and fora.ideal > 1.3 and "attn" in fora.reused  # FORA's MACs drop, units do not
    for row in (skip, fora, by["DeepCache-style (N=2,b=1)"]):
        assert 0 < row.psnr < 200 and row.ssim is None  # 8x8 images: smaller than SSIM's window
        assert len(row.similarity) == 6 and row.similarity[0] == pytest.approx(1.0, abs=1e-6)  # step 0 is full
        assert min(row.similarity) < 1.0
    assert by["TeaCache (threshold=5)"].cached_steps > 0  # fitted on its calibration seeds, then engaged


def test_counted_macs_agree_with_the_cache_stats():
    """The MACs counted from the model's own operations match what the cache stats say ran: each unit's
    count is (steps it ran) x (its cost per call), and the MACs speed-up is the stats' ideal speed-up less
    only the embeddings and the head, which every step runs."""
    model = tiny_model(long_skip=True)
    settings = dict(condition=[1, 2], sampling=Sampling(sampler="ddim", steps=6, guidance_scale=1.0))

    def count(cache):
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
            out = generate(model, [0, 1], cache=cache, **settings)
        return {k: sum(v.values()) / 2 for k, v in counter.get_flop_counts().items()}, out.stats

    full, _ = count(None)
    cached, stats = count("skip:N=2,b=1")
    assert (stats.full_steps, stats.cached_steps, stats.cached_units) == (3, 3, (0, 3))
    for k in range(model.num_units):
        per_call = full[f"DiT.blocks.{k}"] / 6
        runs = stats.full_steps + (stats.cached_steps if k in stats.cached_units else 0)
        assert cached[f"DiT.blocks.{k}"] == runs * per_call, k
    macs_speedup = full["Global"] / cached["Global"]
    assert 0.98 * stats.ideal_speedup < macs_speedup <= stats.ideal_speedup  # 1.331 vs 24/18
    counted = counted_run(model, lambda: generate(model, [0, 1], cache="skip:N=2,b=1", **settings))
    assert counted.macs == cached["Global"]  # the bench's counter is the same count


def test_methods_that_do_not_apply_are_listed_with_the_reason():
    b = bench()
    rows, skipped = run_bench(b, select_methods("tgate,delta:N=2", steps=6), Preparer(b, [100]))
    reasons = {s["method"]: s["reason"] for s in skipped}
    assert "text" in reasons["T-GATE (gate=1)"] and "text" in reasons["T-GATE (gate=3)"]
    assert [r.method for r in rows][-1] == "Δ-DiT (N=2)"  # Δ-DiT runs on the vanilla baseline


def test_select_methods_families_specs_and_errors():
    all_methods = select_methods("all", steps=50)
    families = {m.family for m in all_methods}
    assert {"Skip-Cache", "FORA", "Δ-DiT", "DeepCache-style", "PAB", "T-GATE", "TeaCache", "First-Block-Cache",
            "Adaptive Skip-Cache", "diffusers PAB", "diffusers FBC", "diffusers MagCache"} <= families
    assert [m.spec for m in select_methods("fora:N=2,start=900,fbc", 50)][:1] == ["fora:N=2,start=900"]
    extended = select_methods("all,taylor:order=2,mask=FCRC,fora:N=5", 50)
    assert extended[:len(all_methods)] == all_methods
    assert [(m.family, m.spec, m.on) for m in extended[len(all_methods):]] == [
        ("Forecasting Skip-Cache", "taylor:order=2,mask=FCRC", "model"), ("FORA", "fora:N=5", "baseline")]
    with pytest.raises(ValueError, match="cache"):
        select_methods("nonsense", 50)


def test_family_front_keeps_the_rows_nothing_beats():
    rows = [Row("m", "FORA", s, "x", measured=m, psnr=p)
            for s, m, p in (("a", 1.5, 40.0), ("b", 2.0, 42.0), ("c", 2.5, 35.0), ("d", 1.8, 38.0), ("e", 2.5, 33.0))]
    assert [r.setting for r in family_front(rows)] == ["b", "c"]  # a, d: b is faster and closer; e: c is closer
    assert [r.setting for r in family_front(rows[:1])] == ["a"]


def test_step_similarity_and_headline():
    a = [torch.ones(2, 3), torch.ones(2, 3)]
    assert step_similarity(a, [torch.ones(2, 3), -torch.ones(2, 3)]) == pytest.approx([1.0, -1.0])
    assert step_similarity(a, a[:1]) == []
    from skipdit.bench.harness import Row

    rows = [Row("Skip-Cache (N=2)", "Skip-Cache", "N=2", "s", measured=1.5, ideal=1.6, psnr=40.0),
            Row("Forecasting Skip-Cache (N=3)", "Forecasting Skip-Cache", "N=3", "s", measured=2.1, ideal=2.0,
                psnr=38.0),
            Row("FORA (N=2)", "FORA", "N=2", "d", measured=1.45, ideal=2.6, psnr=35.0),
            Row("PAB (x)", "PAB", "x", "d", measured=1.2, ideal=1.2, psnr=45.0)]
    text = headline(rows)
    assert "Skip-Cache (N=2) at 1.50×: 40.0 dB vs the best peer at ≥ 1.40×, FORA (N=2)" in text
    assert "a gap of +5.0 dB" in text and "Forecasting Skip-Cache (N=3) at 2.10×: 38.0 dB; no peer reaches" in text
    assert "- 1.5×: ours Skip-Cache (N=2) 1.50×, 40.0 dB; peers none reaches it; gap —" in text
    assert "- 2×: ours Forecasting Skip-Cache (N=3) 2.00×, 38.0 dB; peers FORA (N=2) 2.60×, 35.0 dB; gap +3.0 dB" \
        in text  # by MACs FORA is the fastest
    assert markdown_table(rows).count("\n") == 5


def test_bench_command_writes_table_json_and_both_figures(tmp_path, capsys):
    model = save(tiny_model(long_skip=True, in_channels=1), tmp_path / "skip.safetensors")
    baseline = save(tiny_model(long_skip=False, in_channels=1), tmp_path / "dit.safetensors")
    out = tmp_path / "bench"
    caches = "skip:N=3,fora:N=3,deepcache:N=3,b=1,hf-pab,hf-fbc"
    code = main(["bench", "--model", str(model), "--baseline-model", str(baseline), "--caches", caches,
                 "--seeds", "0-1", "--steps", "6", "--repeats", "1", "--out", str(out), "--no-progress", "--flops"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    written = {p.name for p in out.iterdir()}
    assert written == {"bench.md", "bench.json", "pareto.png", "pareto-macs.png", "similarity.png"}
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [r["family"] for r in rows] == ["none", "none", "Skip-Cache", "FORA", "DeepCache-style", "diffusers PAB",
                                           "diffusers PAB"]
    assert "diffusers FBC (threshold=0.05): the diffusers hook never engaged" in (out / "bench.md").read_text()
    assert "GMACs per sample" in printed and "Skip-Cache (N=3), FORA (N=3), DeepCache-style (N=3,b=1)" in printed


@pytest.mark.parametrize("argv", [["--seeds", "0-3", "--calibration-seeds", "2-5"], ["--repeats", "0"],
                                  ["--lpips-backbone", "x.pth"], ["--caches", "bogus"]])
def test_bench_command_bad_input_is_exit_2(argv, capsys):
    assert main(["bench", *argv]) == 2
    assert "error" in capsys.readouterr().err


def test_lpips_column_scores_each_method_against_its_own_models_uncached_run():
    from skipdit.metrics.lpips import LPIPS

    torch.manual_seed(0)
    model = LPIPS.build("alex").eval()  # random weights; 8x8 samples are upsampled to 32x32
    with torch.no_grad():
        for head in model.heads:
            head.weight.abs_()  # LPIPS heads are non-negative, so distances are
    b = bench(lpips_model=model)
    rows, _ = run_bench(b, select_methods("skip:N=2,fora:N=2", steps=6), Preparer(b, [100]))
    by = {r.method: r for r in rows}
    assert by["skip uncached"].lpips == 0 and by["dit uncached"].lpips == 0
    assert by["Skip-Cache (N=2)"].lpips > 0 and by["FORA (N=2)"].lpips > 0
