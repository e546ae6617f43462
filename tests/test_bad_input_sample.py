"""Bad input to ``sample`` (c2i, c2v, t2v, t2i), ``bench``, ``cache plan / tune / calibrate-teacache`` and
``analyze``: each case exits 2 with one stderr line naming the problem, changes no input and leaves no output
(the contract of :func:`tests.badinput.expect_user_error`). Almost every case fails before a model loads.

"Unwritable" is tested with a path under a regular file (ENOTDIR), which fails for root too, and once with
``os.access`` reporting no write permission (as root, a chmod-ed folder stays writable, so a chmod test
could not fail).
"""

from __future__ import annotations

import pytest
import torch

from skipdit import save
from skipdit.cache import parse_cache
from skipdit.distributed import check_device
from skipdit.errors import UserError
from skipdit.sampling import Condition, Runtime, Sampling, generate

from .badinput import expect_user_error
from .conftest import tiny_model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save(tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny-skip.safetensors")


@pytest.fixture
def paths(tmp_path, ckpt):
    """Placeholders of the cases: {ckpt} (watched input), {file} (a regular file, watched), {out} (an output
    folder that must not appear), {tmp} (the watched folder)."""
    file = tmp_path / "notes.txt"
    file.write_text("not a folder")
    return {"ckpt": str(ckpt), "file": str(file), "out": str(tmp_path / "out"), "tmp": str(tmp_path)}


def _check(capsys, paths, argv, message):
    argv = [a.format(**paths) for a in argv]
    return expect_user_error(capsys, argv, message, inputs=[paths["ckpt"], paths["file"]], outputs=[paths["tmp"]])


SAMPLE = ["sample", "--ckpt", "{ckpt}", "--seeds", "0-1", "--steps", "2", "--out", "{out}", "--no-progress"]

SAMPLE_CASES = {
    "steps-0": (["--steps", "0"], r"--steps must be >= 1, got 0"),
    "steps-negative": (["--steps", "-4"], r"--steps must be >= 1, got -4"),
    "image-size-0": (["--image-size", "0"], r"--image-size must be >= 1, got 0"),
    "image-size-negative": (["--image-size", "-8"], r"--image-size must be >= 1"),
    "batch-size-0": (["--batch-size", "0"], r"--batch-size must be >= 1, got 0"),
    "batch-size-negative": (["--batch-size", "-2"], r"--batch-size must be >= 1, got -2"),
    "cfg-nan": (["--cfg-scale", "nan"], r"--cfg-scale must be a finite number, got nan"),
    "cfg-inf": (["--cfg-scale", "inf"], r"--cfg-scale must be a finite number, got inf"),
    "cfg-below-1": (["--cfg-scale", "0.5"], r"--cfg-scale must be >= 1, got 0.5"),
    "eta-nan": (["--sampler", "ddim", "--eta", "nan"], r"--eta must be a finite number, got nan"),
    "eta-negative": (["--sampler", "ddim", "--eta", "-1"], r"--eta must be >= 0, got -1"),
    "eta-with-ddpm": (["--eta", "0.5"], r"--eta applies to the ddim sampler only"),
    "fps-0": (["--fps", "0"], r"--fps must be >= 1, got 0"),
    "respacing-0": (["--respacing", "0"], r"invalid respacing '0'"),
    "seeds-too-many": (["--seeds", "0-999999999"], r"names 1,000,000,000 seeds; at most 10,000 are allowed.*"
                       "sample-many"),
    "seed-too-large": (["--seeds", "99999999999999999999999"], r"a number must be at most 18446744073709551615"),
    "seeds-empty": (["--seeds", ","], r"no seeds given"),
    "seeds-malformed": (["--seeds", "a-b"], r"invalid seeds 'a-b'"),
    "labels-too-many": (["--class-labels", "0-999999999"], r"names 1,000,000,000 class labels; at most 10,000"),
    "label-out-of-range": (["--class-labels", "10"], r"class label 10 out of range"),
    "device-bogus": (["--device", "bogus"], r"unknown device 'bogus'; use cpu, cuda"),
    "device-meta": (["--device", "meta"], r"device 'meta': skipdit runs on cpu, cuda"),
    "out-is-a-file": (["--out", "{file}"], r"--out .*notes.txt is a file, not a folder"),
    "out-under-a-file": (["--out", "{file}/samples"], r"notes.txt is a file, not a folder"),
    "cache-nan-threshold": (["--cache", "teacache:threshold=nan"], r"threshold must be a finite number, got 'nan'"),
    "cache-inf-threshold": (["--cache", "fbc:threshold=inf"], r"threshold must be a finite number, got 'inf'"),
    "cache-adaptive-nan": (["--cache", "adaptive:threshold=nan"], r"threshold must be a finite number"),
    "cache-negative-threshold": (["--cache", "teacache:threshold=-1"], r"threshold must be a finite number >= 0"),
    "cache-nan-coefficient": (["--cache", "teacache:coef=nan/1"], r"coef must be a finite number"),
    "cache-N-0": (["--cache", "skip:N=0"], r"N must be >= 1, got 0"),
    "cache-fora-N-0": (["--cache", "fora:N=0"], r"FORA interval N must be >= 1, got 0"),
    "cache-b-out-of-range": (["--cache", "skip:N=2,b=9"], r"branch b=9 needs b <= 2 for a model of 4 units"),
    "cache-malformed": (["--cache", "skip:N=two"], r"N must be an integer, got 'two'"),
    "num-frames-on-image-model": (["--num-frames", "2"], r"--num-frames is for video models; this is a c2i model"),
    "num-frames-0": (["--num-frames", "0"], r"--num-frames must be >= 1, got 0"),
    "prompt-on-class-model": (["--prompt", "a cat"], r"--prompt and --negative-prompt are for text models"),
    "format-unknown": (["--format", "avi"], r"--format takes mp4, gif"),
    "ckpt-missing": (["--ckpt", "{tmp}/missing.safetensors"], r"checkpoint not found: .*missing.safetensors"),
    "vae-missing": (["--vae", "{tmp}/no-vae"], r"no VAE at .*no-vae"),
    "task-mismatch": (["--task", "c2v"], r"task c2v was asked for, but the model is a c2i model"),
}


@pytest.mark.parametrize("args, message", SAMPLE_CASES.values(), ids=SAMPLE_CASES.keys())
def test_sample_c2i_bad_input(capsys, paths, args, message):
    _check(capsys, paths, SAMPLE + args, message)


VIDEO = ["sample", "--seeds", "0", "--steps", "2", "--format", "gif", "--out", "{out}", "--no-progress"]

VIDEO_CASES = {
    "c2v-num-frames-0": (["--task", "c2v", "--num-frames", "0"], r"--num-frames must be >= 1, got 0"),
    "c2v-too-many-frames": (["--task", "c2v", "--num-frames", "99"], r"serves at most \d+"),
    "c2v-prompt": (["--task", "c2v", "--prompt", "a 3"], r"--prompt and --negative-prompt are for text models"),
    "c2v-fps-negative": (["--task", "c2v", "--fps", "-1"], r"--fps must be >= 1, got -1"),
    "c2v-cfg-nan": (["--task", "c2v", "--cfg-scale", "nan"], r"--cfg-scale must be a finite number"),
    "t2v-num-frames-0": (["--task", "t2v", "--num-frames", "0"], r"--num-frames must be >= 1, got 0"),
    "t2v-class-labels": (["--task", "t2v", "--class-labels", "3"], r"--class-labels is for class-conditional "
                         "models; this is a t2v model"),
    "t2v-text-encoder-missing": (["--task", "t2v", "--text-encoder", "{tmp}/no-encoder"],
                                 r"no text encoder at .*no-encoder"),
    "t2v-batch-size-0": (["--task", "t2v", "--batch-size", "0"], r"--batch-size must be >= 1, got 0"),
    "t2v-steps-0": (["--task", "t2v", "--steps", "0"], r"--steps must be >= 1, got 0"),
    "t2v-out-is-a-file": (["--task", "t2v", "--out", "{file}"], r"is a file, not a folder"),
    "t2i-num-frames": (["--task", "t2i", "--num-frames", "2"], r"--num-frames is for video models; this is a t2i"),
    "t2i-class-labels": (["--task", "t2i", "--class-labels", "3"], r"--class-labels is for class-conditional"),
    "t2i-image-size-0": (["--task", "t2i", "--image-size", "0"], r"--image-size must be >= 1, got 0"),
    "t2i-model-dir-missing": (["--model-dir", "{tmp}/no-pipeline"], r"no diffusers pipeline at .*no-pipeline"),
    "t2i-model-dir-steps-0": (["--model-dir", "{tmp}/no-pipeline", "--steps", "0"], r"--steps must be >= 1, got 0"),
    "t2i-model-dir-out-file": (["--model-dir", "{tmp}/no-pipeline", "--out", "{file}"], r"is a file, not a folder"),
}


@pytest.mark.parametrize("args, message", VIDEO_CASES.values(), ids=VIDEO_CASES.keys())
def test_sample_video_and_text_bad_input(capsys, paths, args, message):
    _check(capsys, paths, VIDEO + args, message)


# -- devices: made deterministic whatever the machine has --------------------------------------------------
def test_sample_device_cuda_without_cuda(capsys, paths, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _check(capsys, paths, SAMPLE + ["--device", "cuda"], r"device 'cuda' requested but cuda is not available")


def test_sample_device_index_that_does_not_exist(capsys, paths, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _check(capsys, paths, SAMPLE + ["--device", "cuda:7"], r"device 'cuda:7' does not exist: this machine has 1 "
           r"cuda device\(s\) \(cuda:0\.\.cuda:0\)")


def test_bench_device_cuda_without_cuda(capsys, paths, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _check(capsys, paths, BENCH + ["--device", "cuda:0"], r"device 'cuda:0' requested but cuda is not available")


def test_sample_out_in_a_folder_that_cannot_be_written(capsys, paths, monkeypatch):
    monkeypatch.setattr("skipdit.cli.common.os.access", lambda path, mode: False)  # see the module docstring
    _check(capsys, paths, SAMPLE, r"--out .*out: the folder .* is not writable")


# -- cache plan / tune / calibrate-teacache --------------------------------------------------------------
PLAN_CASES = {
    "decided-at-run-time": (["teacache:threshold=0.1"], r"teacache:threshold=0.1,coef=1/0 decides each step while "
                            "sampling, .* no plan before a run"),
    "steps-0": (["c2i:N=2", "--steps", "0"], r"argument --steps: must be a positive integer, got '0'"),
    "steps-text": (["c2i:N=2", "--steps", "many"], r"argument --steps: must be an integer, got 'many'"),
    "units-0": (["c2i:N=2", "--units", "0"], r"--units must be >= 2, got 0"),
    "units-1": (["skip:N=2", "--units", "1"], r"--units must be >= 2, got 1"),
    "nan-threshold": (["teacache:threshold=nan"], r"threshold must be a finite number"),
    "N-0": (["skip:N=0"], r"N must be >= 1, got 0"),
    "b-too-deep": (["skip:N=2,b=20", "--units", "28"], r"b=20 needs b <= 14 for a model of 28 units"),
    "respacing-ddim0": (["c2i:N=2", "--respacing", "ddim0"], r"invalid respacing 'ddim0'"),
    "no-cache": (["none"], r"no cache: nothing to plan"),
    "unknown-family": (["warp:N=2"], r"unknown cache 'warp'"),
}


@pytest.mark.parametrize("args, message", PLAN_CASES.values(), ids=PLAN_CASES.keys())
def test_cache_plan_bad_input(capsys, paths, args, message):
    _check(capsys, paths, ["cache", "plan", *args], message)


TUNE = ["cache", "tune", "--ckpt", "{ckpt}", "--seeds", "0", "--steps", "4", "--sampler", "ddim", "--no-progress"]

TUNE_CASES = {
    "target-nan": (["--target-speedup", "nan"], r"argument --target-speedup: must be a finite number, got 'nan'"),
    "target-below-1": (["--target-speedup", "0.5"], r"target speed-up must be >= 1, got 0.5"),
    "tolerance-nan": (["--target-speedup", "1.5", "--tolerance", "nan"], r"--tolerance: must be a finite number"),
    "tolerance-1": (["--target-speedup", "1.5", "--tolerance", "1"], r"tolerance must be in \[0, 1\), got 1"),
    "max-candidates-0": (["--target-speedup", "1.5", "--max-candidates", "0"], r"--max-candidates: must be a "
                         "positive integer"),
    "top-0": (["--target-speedup", "1.5", "--top", "0"], r"--top: must be a positive integer, got '0'"),
    "json-is-a-folder": (["--target-speedup", "1.5", "--json", "{tmp}"], r"--json .* is a folder, not a file"),
    "json-under-a-file": (["--target-speedup", "1.5", "--json", "{file}/tune.json"], r"notes.txt is a file, not a "
                          "folder"),
    "intervals-too-many": (["--target-speedup", "1.5", "--intervals", "2-99999999"],
                           r"names 99,999,998 intervals; at most 1,000 are allowed"),
    "steps-0": (["--target-speedup", "1.5", "--steps", "0"], r"--steps must be >= 1, got 0"),
    "batch-size-0": (["--target-speedup", "1.5", "--batch-size", "0"], r"--batch-size must be >= 1, got 0"),
    "device-bogus": (["--target-speedup", "1.5", "--device", "bogus"], r"unknown device 'bogus'"),
    "seeds-too-many": (["--target-speedup", "1.5", "--seeds", "0-999999999"],
                       r"names 1,000,000,000 seeds; at most 10,000 are allowed"),
}


@pytest.mark.parametrize("args, message", TUNE_CASES.values(), ids=TUNE_CASES.keys())
def test_cache_tune_bad_input(capsys, paths, args, message):
    _check(capsys, paths, TUNE + args, message)


CALIBRATE = ["cache", "calibrate-teacache", "--ckpt", "{ckpt}", "--steps", "4", "--sampler", "ddim", "--no-progress"]

CALIBRATE_CASES = {
    "threshold-nan": (["--threshold", "nan"], r"argument --threshold: must be a finite number, got 'nan'"),
    "threshold-negative": (["--threshold", "-1"], r"argument --threshold: must be >= 0, got '-1'"),
    "degree-0": (["--degree", "0"], r"argument --degree: must be a positive integer, got '0'"),
    "steps-0": (["--steps", "0"], r"--steps must be >= 1, got 0"),
    "cfg-inf": (["--cfg-scale", "inf"], r"--cfg-scale must be a finite number, got inf"),
    "cache-given": (["--cache", "skip:N=2"], r"--cache is not used by cache calibrate-teacache"),
}


@pytest.mark.parametrize("args, message", CALIBRATE_CASES.values(), ids=CALIBRATE_CASES.keys())
def test_cache_calibrate_bad_input(capsys, paths, args, message):
    _check(capsys, paths, CALIBRATE + args, message)


# -- bench -----------------------------------------------------------------------------------------------
BENCH = ["bench", "--model", "{ckpt}", "--seeds", "0-1", "--steps", "2", "--caches", "skip:N=2", "--out", "{out}",
         "--no-progress"]

BENCH_CASES = {
    "one-seed": (["--seeds", "0"], r"--seeds '0' gives 1 seed; bench needs at least 2"),
    "seeds-too-many": (["--seeds", "0-999999999"], r"names 1,000,000,000 seeds; at most 10,000 are allowed"),
    "calibration-seeds-too-many": (["--calibration-seeds", "5-999999999"],
                                   r"calibration seeds; at most 10,000 are allowed"),
    "calibration-overlap": (["--calibration-seeds", "1-3"], r"--calibration-seeds must not overlap --seeds"),
    "caches-empty": (["--caches", ""], r"--caches '' names no method"),
    "caches-only-commas": (["--caches", ",,"], r"--caches ',,' names no method"),
    "caches-unknown": (["--caches", "bogus"], r"unknown cache 'bogus'"),
    "caches-nan-threshold": (["--caches", "teacache:threshold=nan"], r"threshold must be a finite number"),
    "steps-0": (["--steps", "0"], r"argument --steps: must be a positive integer, got '0'"),
    "cfg-nan": (["--cfg-scale", "nan"], r"argument --cfg-scale: must be a finite number, got 'nan'"),
    "cfg-below-1": (["--cfg-scale", "0"], r"argument --cfg-scale: must be >= 1"),
    "repeats-0": (["--repeats", "0"], r"argument --repeats: must be a positive integer, got '0'"),
    "out-is-a-file": (["--out", "{file}"], r"--out .*notes.txt is a file, not a folder"),
    "out-under-a-file": (["--out", "{file}/bench"], r"notes.txt is a file, not a folder"),
    "device-bogus": (["--device", "bogus"], r"unknown device 'bogus'"),
    "lpips-half": (["--lpips-backbone", "{tmp}/alex.pth"], r"LPIPS needs both --lpips-backbone and --lpips-heads"),
    "lpips-missing": (["--lpips-backbone", "{tmp}/alex.pth", "--lpips-heads", "{tmp}/heads.pth"],
                      r"--lpips-backbone .*alex.pth not found"),
    "lpips-folder": (["--lpips-backbone", "{tmp}", "--lpips-heads", "{file}"], r"--lpips-backbone .* is a folder"),
    "lpips-not-weights": (["--lpips-backbone", "{file}", "--lpips-heads", "{file}"],
                          r"notes.txt is a text file, not a PyTorch checkpoint"),
    "model-missing": (["--model", "{tmp}/missing.safetensors"], r"checkpoint not found: .*missing.safetensors"),
}


@pytest.mark.parametrize("args, message", BENCH_CASES.values(), ids=BENCH_CASES.keys())
def test_bench_bad_input(capsys, paths, args, message):
    _check(capsys, paths, BENCH + args, message)


# -- analyze ---------------------------------------------------------------------------------------------
ANALYZE_CASES = {
    "grid-even": (["landscape", "--grid", "4"], r"grid must be an odd integer in 3..101"),
    "grid-0": (["landscape", "--grid", "0"], r"grid must be an odd integer in 3..101"),
    "grid-huge": (["landscape", "--grid", "100001"], r"grid must be an odd integer in 3..101 .*got 100001"),
    "batch-huge": (["landscape", "--batch", "1000000000"], r"batch must be an integer in 1..1024, got 1000000000"),
    "radius-nan": (["landscape", "--radius", "nan"], r"radius must be a positive number, got nan"),
    "radius-0": (["landscape", "--radius", "0"], r"radius must be a positive number, got 0"),
    "t-1000": (["landscape", "--t", "1000"], r"t must be an integer timestep in 0..999, got 1000"),
    "t-negative": (["spectral", "--t", "-1"], r"t must be an integer timestep in 0..999, got -1"),
    "iters-0": (["spectral", "--iters", "0"], r"iters must be a positive integer, got 0"),
    "batch-0": (["spectral", "--batch", "0"], r"batch must be an integer in 1..1024, got 0"),
    "steps-0": (["landscape", "--inputs", "trajectory", "--steps", "0"], r"steps must be a positive integer, got 0"),
    "seed-negative": (["landscape", "--seed", "-1"], r"argument --seed: must be an integer >= 0, got '-1'"),
    "out-is-a-file": (["landscape", "--out", "{file}"], r"--out .*notes.txt is a file, not a folder"),
    "out-under-a-file": (["spectral", "--out", "{file}/analysis"], r"notes.txt is a file, not a folder"),
    "device-bogus": (["spectral", "--device", "bogus"], r"unknown device 'bogus'"),
    "model-missing": (["landscape", "--model", "{tmp}/missing.safetensors"], r"checkpoint not found"),
    "same-models": (["landscape", "--model", "digits/DiT"], r"--model and --baseline-model are both digits/DiT"),
}


@pytest.mark.parametrize("args, message", ANALYZE_CASES.values(), ids=ANALYZE_CASES.keys())
def test_analyze_bad_input(capsys, paths, args, message):
    _check(capsys, paths, ["analyze", *args, *([] if "--out" in args else ["--out", "{out}"])], message)


# -- the same checks for a Python user of the library ----------------------------------------------------
@pytest.mark.parametrize("sampling, runtime, message", [
    ({"steps": 0}, {}, r"steps must be an integer >= 1, got 0"),
    ({}, {"batch_size": 0}, r"batch size must be an integer >= 1, got 0"),
    ({}, {"batch_size": -1}, r"batch size must be an integer >= 1"),
    ({"guidance_scale": float("nan")}, {}, r"guidance scale must be a finite number >= 1"),
    ({"sampler": "ddim", "eta": float("inf")}, {}, r"eta must be a finite number >= 0"),
    ({}, {"device": "bogus"}, r"unknown device 'bogus'"),
    ({"num_frames": 0}, {}, r"num_frames must be an integer >= 1, got 0"),
])
def test_generate_rejects_bad_settings_before_sampling(sampling, runtime, message):
    model = tiny_model()
    with pytest.raises(UserError, match=message):  # when the Sampling / Runtime is made, or before anything runs
        generate(model, [0], Condition(labels=[1]), sampling=Sampling(**{"steps": 2, "guidance_scale": 1.5,
                                                                         **sampling}), runtime=Runtime(**runtime))


@pytest.mark.parametrize("spec, message", [
    ("teacache:threshold=nan", "finite"), ("fbc:threshold=inf", "finite"), ("adaptive:threshold=nan", "finite"),
    ("teacache:coef=1/inf", "finite"), ("skip:N=0", "N must be >= 1"),
])
def test_cache_specs_reject_non_finite_and_zero(spec, message):
    with pytest.raises(UserError, match=message):
        parse_cache(spec)


def test_policies_built_in_python_reject_nan_thresholds():
    from skipdit.cache import AdaptiveSkipCache, FirstBlockCache, TeaCache

    for policy in (TeaCache, FirstBlockCache, AdaptiveSkipCache):
        with pytest.raises(UserError, match="finite"):
            policy(threshold=float("nan"))


def test_check_device_accepts_the_cpu():
    assert check_device("cpu") == torch.device("cpu")


def test_bench_library_refuses_what_would_fail_after_the_run(skip_model):
    from skipdit.bench.harness import Bench, select_methods

    with pytest.raises(UserError, match="names no method"):
        select_methods(" , ", steps=10)
    with pytest.raises(UserError, match="repeats must be an integer >= 1, got 0"):
        Bench({"model": skip_model}, {"model": "skip"}, [0, 1], Condition(), Sampling(), repeats=0)
    with pytest.raises(UserError, match="Fréchet distance needs at least 2"):
        Bench({"model": skip_model}, {"model": "skip"}, [0], Condition(), Sampling(), evaluator=object())
