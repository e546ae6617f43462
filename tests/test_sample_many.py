"""skipdit sample-many: byte-identical across process counts, resumable, ADM .npz, video too."""

import json
import os
import re
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


# -- provenance: one folder, one set of settings ----------------------------------------------------------------
def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_rerun_with_other_settings_is_refused_naming_them(tmp_path, capsys):
    out = tmp_path / "run"
    run(out)
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["sample-many", *ARGS, "--out", str(out), "--steps", "4", "--cache", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds samples made with other settings" in err
    assert "steps 5 -> 4" in err and re.search(r"cache skip:N=2\S* -> none", err) and "--overwrite" in err
    assert _snapshot(out) == before  # nothing written, nothing removed


def test_overwrite_starts_over(tmp_path):
    out = tmp_path / "run"
    cached = run(out)
    (out / "samples" / "note.txt").write_text("mine")  # not sample-many's: it stays
    fresh = run(out, "--cache", "none", "--overwrite")
    assert not np.array_equal(cached["arr_0"], fresh["arr_0"])  # every sample was made again, uncached
    assert np.array_equal(fresh["arr_0"], run(tmp_path / "clean", "--cache", "none")["arr_0"])
    records = [json.loads(line) for line in (out / "log-rank0.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["cache"] is None for r in records)  # the old log went too
    assert (out / "samples" / "note.txt").read_text() == "mine"
    settings = json.loads((out / "settings.json").read_text())
    assert settings["cache"] is None and settings["steps"] == 5


def test_more_seeds_extend_the_record_but_a_changed_label_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    run(out)
    assert main(["sample-many", *ARGS, "--seeds", "0-11", "--out", str(out)]) == 0
    assert json.loads((out / "settings.json").read_text())["labels"]["11"] == 1
    capsys.readouterr()
    assert main(["sample-many", *ARGS, "--class-labels", "3", "--out", str(out)]) == 2
    assert "label of seed 0 0 -> 3 (and 8 more seeds)" in capsys.readouterr().err


def test_samples_without_a_settings_record_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    run(out)
    (out / "settings.json").unlink()  # as an older skipdit left the folder
    assert main(["sample-many", *ARGS, "--out", str(out)]) == 2
    assert "holds samples but no settings.json" in capsys.readouterr().err


def test_summary_carries_settings_and_provenance(tmp_path):
    out = tmp_path / "run"
    run(out)
    summary = json.loads((out / "summary.json").read_text())
    settings = json.loads((out / "settings.json").read_text())
    assert summary["settings"]["model"] == "digits/Skip-DiT" and summary["settings"]["sampler"] == "ddim"
    assert summary["settings"] == {k: v for k, v in settings.items() if k != "labels"}
    assert summary["provenance"]["device"] == "cpu" and summary["provenance"]["versions"]["torch"] == torch.__version__
    assert summary["batch_dependent"] is False and summary["note"] is None  # skip:N=2 is a static schedule


def test_a_stale_temporary_file_is_never_a_sample(tmp_path, capsys):
    """A run killed between writing a temporary PNG and renaming it: eval counts exactly the seeds' samples,
    and the resumed run removes the leftover."""
    out = tmp_path / "run"
    run(out)
    png = (out / "samples" / "000003-3.png").read_bytes()
    stale = [out / "samples" / ".000003-3.tmp-4242-0badf00d.png",  # this skipdit's temporary name
             out / "samples" / ".000003-3.4242-0badf00d.tmp.png"]  # the name older versions used
    for path in stale:
        path.write_bytes(png)
    capsys.readouterr()
    assert main(["eval", "is", str(out / "samples"), "--features", "digits", "--splits", "1", "--json",
                 "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 10
    run(out)
    assert not stale[0].exists()  # sample-many's own leftover is gone; the hidden foreign file is left alone


def test_provenance_fingerprint_and_differences(tmp_path):
    from skipdit.provenance import differences, file_digest, fingerprint, identity, provenance

    (tmp_path / "w.bin").write_bytes(b"weights")
    assert file_digest(tmp_path / "w.bin") == "sha256:" + __import__("hashlib").sha256(b"weights").hexdigest()
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.bin").write_bytes(b"weights")
    digest = identity(tmp_path / "folder")
    (tmp_path / "folder" / ".hidden").write_bytes(b"ignored")
    assert identity(tmp_path / "folder") == digest != identity(tmp_path / "w.bin")
    (tmp_path / "folder" / "a.bin").write_bytes(b"weightz")
    assert identity(tmp_path / "folder") != digest  # content, not names
    assert identity("digits/Skip-DiT") == "digits/Skip-DiT" and identity(None) is None
    old = fingerprint({"steps": 50, "cache": None, "eta": 0.0, "shape": (1, 16, 16)})
    new = fingerprint({"steps": 20, "cache": "skip:N=2", "eta": 0.0, "shape": [1, 16, 16]})
    assert differences(old, new) == ["cache none -> skip:N=2", "steps 50 -> 20"]  # tuples equal lists
    assert differences(old, json.loads(json.dumps(old))) == []
    record = provenance("cpu")
    assert record["device"] == "cpu" and record["versions"]["torch"] == torch.__version__
    assert record["versions"]["skipdit"] and record["versions"]["python"]


def test_atomic_write_temporary_names_never_look_like_samples(tmp_path):
    from skipdit.io import atomic_write, is_listed

    seen = []
    atomic_write(tmp_path / "000001-1.png", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"x")))
    assert seen[0].suffix == ".png" and seen[0].name.startswith(".") and not is_listed(seen[0])
    assert not seen[0].exists() and is_listed(tmp_path / "000001-1.png")
