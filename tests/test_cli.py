import json
import subprocess
import sys

import pytest
import torch

from skipdit import build_model, save
from skipdit.cli import main
from skipdit.io import read_video
from skipdit.models.random import randomize_

from .conftest import tiny_model


@pytest.fixture
def ckpt(tmp_path):
    return str(save(tiny_model(), tmp_path / "tiny-skip.safetensors"))


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_writes_named_pngs_grid_and_report(tmp_path, capsys, ckpt):
    out_dir = tmp_path / "out"
    code, out, _ = run_cli(capsys, "sample", "--ckpt", ckpt, "--seeds", "0-2,7", "--class-labels", "3,5",
                           "--steps", "6", "--cache", "skip:N=2,b=1", "--compare-uncached", "--out", out_dir,
                           "--no-progress")
    assert code == 0
    names = sorted(p.name for p in out_dir.glob("*.png"))
    assert names == ["000000-3.png", "000001-5.png", "000002-3.png", "000007-5.png", "grid.png"]
    assert (out_dir / "uncached" / "000007-5.png").is_file()
    assert "measured speed-up" in out and "PSNR cached vs uncached" in out and "3 full / 3 cached" in out
    report = json.loads((out_dir / "run.json").read_text())
    assert report["labels"] == [3, 5, 3, 5] and len(report["psnr"]) == 4 and report["speedup"] > 0
    # the record says what made the samples and where: the file's digest, every setting, versions and device
    assert report["settings"]["model"].startswith("sha256:") and report["settings"]["steps"] == 6
    assert report["settings"]["cache"] == "skip:N=2,b=1,start=none,stop=none"
    assert report["provenance"]["versions"]["torch"] == torch.__version__ and report["provenance"]["device"] == "cpu"


def test_convert_then_sample(tmp_path, capsys):
    model = tiny_model(long_skip=False)
    torch.save({"model": model.state_dict(), "ema": model.state_dict()}, tmp_path / "dit.pt")
    dst = tmp_path / "skip.safetensors"
    code, out, _ = run_cli(capsys, "convert", tmp_path / "dit.pt", dst, "--model", "DiT-S/2-skip",
                           "--skip-init", "zero")
    assert code == 2  # DiT-S/2-skip has 12 blocks, this checkpoint 4: the preset is another architecture
    code, out, _ = run_cli(capsys, "convert", tmp_path / "dit.pt", dst)
    assert code == 0 and "wrote" in out and dst.is_file()
    code, out, _ = run_cli(capsys, "sample", "--ckpt", dst, "--seeds", "0", "--steps", "3", "--out",
                           tmp_path / "s", "--no-progress")
    assert code == 0 and (tmp_path / "s" / "000000-0.png").is_file()


def test_cache_plan(capsys):
    code, out, _ = run_cli(capsys, "cache", "plan", "c2i:N=2", "--sampler", "ddpm", "--steps", "250")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["0", "999", "full"] and lines[2].split()[:3] == ["1", "995", "cached"]
    assert "full 128 / cached 122" in out and "ideal speed-up 1.54x" in out
    code, out, _ = run_cli(capsys, "cache", "plan", "t2v:N2-700-50", "--summary")
    assert "full 33 / cached 17" in out and "ideal speed-up 1.46x" in out
    code, out, _ = run_cli(capsys, "cache", "plan", "t2i:N=3", "--summary")
    assert "full 56 / cached 44" in out


@pytest.mark.parametrize("argv,message", [
    (["sample", "--model", "DiT-Q/2", "--random-weights"], "unknown model preset 'DiT-Q/2'"),
    (["sample", "--ckpt", "{ckpt}", "--model", "DiT-B/2-skip"], "was saved with hidden_size=384 (model: 768)"),
    (["sample", "--ckpt", "{ckpt}", "--class-labels", "10"], "class label 10 out of range"),
    (["sample", "--model", "DiT-S/4", "--random-weights", "--image-size", "30"], "not divisible by the patch"),
    (["sample", "--ckpt", "{ckpt}", "--cache", "c2i:N=2;b=1"], "malformed cache spec"),
    (["sample", "--ckpt", "{ckpt}", "--cache", "warp:N=2"], "unknown cache 'warp'"),
    (["sample", "--ckpt", "missing.pt"], "checkpoint not found"),
    (["sample", "--ckpt", "{ckpt}", "--seeds", "3-1"], "end before start"),
    (["sample", "--model", "DiT-S/2"], "--model and --skip-init need --ckpt"),
    (["sample", "--ckpt", "digits/GAN"], "checkpoint not found: digits/GAN"),
    (["train", "--config", "missing.yaml"], "config not found: missing.yaml"),
    (["train", "--set", "data.kind=digits", "--set", "warmup=5"], "unknown config key(s) warmup"),
    (["export", "{tmp}/no-run"], "run folder not found"),
    (["sample", "--ckpt", "{ckpt}", "--cache", "none", "--compare-uncached"], "needs --cache"),
    (["cache", "plan", "c2i:N=0"], "N must be >= 1"),
    (["convert", "{ckpt}", "out.bin"], "must end in .safetensors"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, ckpt, argv, message):
    argv = [a.replace("{ckpt}", ckpt).replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "sample":
        argv += ["--out", str(tmp_path / "o"), "--no-progress"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("skipdit: error: ") and message in err
    assert "Traceback" not in err


def test_console_entry_point_and_help():
    result = subprocess.run([sys.executable, "-m", "skipdit", "sample", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "examples:" in result.stdout and "--compare-uncached" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "skipdit", "cache", "plan", "x:y"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "skipdit: error: malformed cache spec 'x:y': unknown " \
        "cache 'x'; valid: skip, c2i, c2v, t2v, t2i, adaptive, taylor, fora, delta, deepcache, pab, tgate, " \
        "teacache, fbc, toca"


# -- video -----------------------------------------------------------------------------------------------
def _tiny_video_ckpt(tmp_path, preset, **kw):
    torch.manual_seed(0)
    shape = dict(input_size=8, in_channels=1, hidden_size=32, depth=4, num_heads=2, num_frames=4)
    model = randomize_(build_model(preset, **{**shape, **kw}))
    return str(save(model, tmp_path / "video.safetensors"))


def test_sample_t2v_writes_videos_that_read_back(tmp_path, capsys):
    ckpt = _tiny_video_ckpt(tmp_path, "Latte-T2V-skip", caption_channels=384)  # the built-in MiniLM's width
    out_dir = tmp_path / "t2v"
    code, out, _ = run_cli(capsys, "sample", "--ckpt", ckpt, "--prompt", "the digit 7 moves up", "--prompt", "a 3",
                           "--seeds", "0-2", "--sampler", "ddim", "--steps", "4", "--cache", "t2v:N=2,start=none",
                           "--compare-uncached", "--format", "mp4,gif", "--fps", "4", "--out", out_dir,
                           "--no-progress")
    assert code == 0, out
    names = sorted(p.name for p in out_dir.glob("*.*"))
    assert "000000-the-digit-7-moves-up.mp4" in names and "000001-a-3.gif" in names
    assert {"grid.mp4", "grid.gif", "run.json"} <= set(names)
    assert read_video(out_dir / "000002-the-digit-7-moves-up.gif").shape[0] == 4  # the model's frames
    report = json.loads((out_dir / "run.json").read_text())
    assert report["task"] == "t2v" and report["prompts"] == ["the digit 7 moves up", "a 3", "the digit 7 moves up"]
    assert "cached steps run units 0, 3 of 4" in out and "PSNR cached vs uncached" in out


def test_sample_c2v_frames_and_labels(tmp_path, capsys):
    ckpt = _tiny_video_ckpt(tmp_path, "Latte-S/2-skip", depth=8, num_classes=10)
    code, out, _ = run_cli(capsys, "sample", "--task", "c2v", "--ckpt", ckpt, "--class-labels", "3", "--seeds", "5",
                           "--num-frames", "2", "--steps", "3", "--format", "gif", "--out", tmp_path / "c2v",
                           "--no-progress")
    assert code == 0, out
    assert read_video(tmp_path / "c2v" / "000005-3.gif").shape[0] == 2


@pytest.mark.parametrize("args, message", [
    (["--task", "t2v"], "task t2v was asked for, but the model is a c2i model"),
    (["--prompt", "a cat"], "--prompt and --negative-prompt are for text models"),
    (["--num-frames", "4"], "--num-frames is for video models"),
    (["--format", "avi"], "--format takes mp4, gif"),
])
def test_sample_video_options_on_the_wrong_model(tmp_path, capsys, ckpt, args, message):
    code, _, err = run_cli(capsys, "sample", "--ckpt", ckpt, "--steps", "2", "--out", tmp_path, *args)
    assert code == 2 and message in err


def test_sample_too_many_frames_is_one_line(tmp_path, capsys):
    ckpt = _tiny_video_ckpt(tmp_path, "Latte-S/2-skip", depth=8, num_classes=10)
    code, _, err = run_cli(capsys, "sample", "--ckpt", ckpt, "--num-frames", "9", "--steps", "2", "--out", tmp_path)
    assert code == 2 and "serves at most 4" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 614400000000 bytes. Error code 12 (Cannot allocate memory)"),
    MemoryError(),
])
def test_out_of_memory_is_one_line(capsys, monkeypatch, error):
    """The allocators' failures are the user's to fix (a smaller request), so one line, not a traceback."""
    from skipdit.cli import sample_cmd

    def run(args):
        raise error

    monkeypatch.setattr(sample_cmd, "run", run)
    code, _, err = run_cli(capsys, "sample", "--no-progress")
    assert code == 2 and err.count("\n") == 1 and err.startswith("skipdit: error: out of memory")
    if isinstance(error, RuntimeError):
        assert "(tried to allocate 572.2 GiB)" in err


def test_other_runtime_errors_keep_their_traceback(capsys, monkeypatch):
    from skipdit.cli import sample_cmd

    def run(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(sample_cmd, "run", run)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["sample"])
