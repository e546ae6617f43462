"""skipdit sample-many: byte-identical across process counts, resumable, ADM .npz, video too."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from skipdit import build_model, save
from skipdit.cli import main
from skipdit.models.random import randomize_

ARGS = ["--seeds", "0-9", "--sampler", "ddim", "--steps", "5", "--batch-size", "4", "--cache", "skip:N=2",
        "--no-progress"]


def run(out, *extra):
    assert main(["sample-many", *ARGS, "--out", str(out), *extra]) == 0
    return np.load(out / "samples.npz")


def test_two_processes_give_the_same_bytes_as_one(tmp_path):
    one = run(tmp_path / "one")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "skipdit",
           "sample-many", *ARGS, "--out", str(tmp_path / "two"), "--device", "cpu"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    two = np.load(tmp_path / "two" / "samples.npz")
    assert one["arr_0"].shape == (10, 16, 16, 1) and one["arr_0"].dtype == np.uint8
    assert np.array_equal(one["arr_0"], two["arr_0"]) and np.array_equal(one["arr_1"], two["arr_1"])
    assert one["arr_1"].tolist() == list(range(10))  # labels cycle over the classes by default
    logs = sorted(p.name for p in (tmp_path / "two").glob("log-rank*.jsonl"))
    assert logs == ["log-rank0.jsonl", "log-rank1.jsonl"]  # batches 0, 2 on rank 0; batch 1 on rank 1
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["samples"] == 10 and summary["processes"] == 2 and summary["stats"]["cached_steps"] == 6


def test_a_resumed_run_redoes_only_missing_batches(tmp_path):
    out = tmp_path / "run"
    first = run(out)
    (out / "samples" / "000005-5.png").unlink()  # batch 1 (seeds 4-7) is incomplete
    (out / "samples.npz").unlink()
    again = run(out)
    assert np.array_equal(first["arr_0"], again["arr_0"])
    records = [json.loads(line) for line in (out / "log-rank0.jsonl").read_text().splitlines()]
    assert [r["seeds"] for r in records] == [[0, 3], [4, 7], [8, 9], [4, 7]]


def test_video_models_pack_frames(tmp_path):
    torch.manual_seed(0)
    model = randomize_(build_model("Latte-S/2-skip", input_size=8, in_channels=1, hidden_size=32, depth=8,
                                   num_heads=2, num_frames=3, num_classes=4))
    ckpt = save(model, tmp_path / "latte.safetensors")
    data = run(tmp_path / "video", "--ckpt", str(ckpt), "--cache", "c2v:N=2", "--class-labels", "2,3")
    assert data["arr_0"].shape == (10, 3, 8, 8, 1) and data["arr_1"].tolist() == [2, 3] * 5
    assert (tmp_path / "video" / "samples" / "000001-3.npy").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--seeds", "1,1"], "seeds must be unique"),
    (["--task", "t2i", "--model-dir", "x"], "for Hunyuan-DiT use sample --task t2i"),
])
def test_bad_input(tmp_path, capsys, extra, message):
    assert main(["sample-many", "--steps", "2", "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_digits_end_to_end_sample_many_then_fid_prdc_and_is(tmp_path, capsys):
    """The worked example of docs/evaluation.md in CI size: the built-in digits/Skip-DiT, cached and uncached,
    through sample-many's .npz into `skipdit eval` with the shipped digits classifier as the feature network."""
    pytest.importorskip("sklearn", reason="the real digits need scikit-learn")
    common = ["--seeds", "0-39", "--sampler", "ddim", "--steps", "10", "--batch-size", "20", "--no-progress"]
    assert main(["sample-many", *common, "--out", str(tmp_path / "none")]) == 0
    assert main(["sample-many", *common, "--cache", "skip:N=2", "--out", str(tmp_path / "n2")]) == 0
    noise = np.random.default_rng(0).integers(0, 256, (40, 16, 16, 1), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", arr_0=noise)
    capsys.readouterr()

    def score(metric, samples, *extra):
        assert main(["eval", metric, str(samples), *extra, "--features", "digits", "--json", "--no-progress"]) == 0
        return json.loads(capsys.readouterr().out)

    stats = tmp_path / "digits-real-stats.npz"
    fid = {name: score("fid", tmp_path / name / "samples.npz", "digits-real", "--save-ref-stats", str(stats))["fid"]
           for name in ("none", "n2")}
    fid["noise"] = score("fid", tmp_path / "noise.npz", str(stats))["fid"]  # the saved real statistics
    assert fid["noise"] > 3 * max(fid["none"], fid["n2"])
    assert abs(fid["n2"] - fid["none"]) < 0.25 * fid["none"]  # the cache barely moves the distribution
    prdc = score("prdc", tmp_path / "n2" / "samples.npz", "digits-real")
    assert prdc["samples"] == 40 and prdc["reference"] == 1797 and prdc["precision"] > 0.3
    assert score("is", tmp_path / "n2" / "samples.npz", "--splits", "2")["is"] > 5  # of at most 10 classes
