"""``skipdit serve``: the page's functions called directly (no server, no browser), and the command's errors."""

from __future__ import annotations

import json
import re
import socket
import sys
import zipfile
from html import unescape

import pytest
from PIL import Image

from skipdit import serve
from skipdit.assets import BUILTIN_MODELS
from skipdit.cli import main
from skipdit.errors import UserError
from skipdit.sampling import Sampling
from skipdit.serve import MAX_WORK, Models, Request, plan_strip, run_request

STEP = re.compile(r'class="skipdit-step (full|cached|reuse)" title="step (\d+), t=(\d+): \w+, units ([^"]*)"')


@pytest.fixture(scope="module")
def models():
    return Models()


def cells(html: str) -> list[tuple[str, int, int, str]]:
    return [(kind, int(k), int(t), units) for kind, k, t, units in STEP.findall(html)]


def test_models_lists_every_builtin_and_loads_each_once(monkeypatch):
    loads = []
    real = serve.load_for_sampling
    monkeypatch.setattr(serve, "load_for_sampling", lambda request, device: loads.append(request.model) or
                        real(request, device))
    models = Models()
    assert models.names == list(BUILTIN_MODELS)
    first = models.get("digits/Skip-DiT")
    models.get("digits/DiT")
    assert models.get("digits/Skip-DiT") is first  # switching back does not reload
    assert loads == ["digits/Skip-DiT", "digits/DiT"]
    with pytest.raises(UserError, match="unknown model 'nope'; valid: digits/Skip-DiT"):
        models.get("nope")


def test_plan_strip_has_one_cell_per_step_full_then_cached(models):
    html = plan_strip(models, "digits/Skip-DiT", "skip:N=2", "ddim", 10)
    steps = cells(html)
    assert [k for _, k, _, _ in steps] == list(range(10))
    assert [kind for kind, *_ in steps] == ["full", "cached"] * 5  # N=2: every other step is full
    timesteps = [t for _, _, t, _ in steps]  # sampling order, those generate() plans the cache on
    assert timesteps[0] == 999 and timesteps == Sampling(sampler="ddim", steps=10).cache_timesteps()
    # b=1 on the 8 blocks: a cached step runs the first and the last block only
    assert {units for kind, _, _, units in steps if kind == "cached"} == {"0, 7"}
    assert {units for kind, _, _, units in steps if kind == "full"} == {"0-7"}
    assert "5 full / 5 cached steps" in html and "ideal speed-up 1.60x" in html


def test_plan_strip_of_other_specs(models):
    three = [kind for kind, *_ in cells(plan_strip(models, "digits/Skip-DiT", "skip:N=3", "ddpm", 9))]
    assert three == ["full", "cached", "cached"] * 3
    fora = plan_strip(models, "digits/DiT", "fora:N=3", "ddim", 6)
    assert [kind for kind, *_ in cells(fora)] == ["full", "cached", "cached"] * 2 and "reusing attn" in fora
    assert "No cache: all 10 steps" in plan_strip(models, "digits/Skip-DiT", "", "ddim", 10)
    assert "decides each step while sampling" in plan_strip(models, "digits/DiT", "teacache:threshold=0.1", "ddim", 10)
    assert "saves nothing" in plan_strip(models, "digits/Skip-DiT", "skip:N=1", "ddim", 4)
    levels = plan_strip(models, "digits/Skip-DiT", "taylor:order=1,mask=FCRF", "ddim", 4)
    assert [(kind, units) for kind, _, _, units in cells(levels)] == [("full", "0-7"), ("cached", "0, 7"),
                                                                     ("reuse", "none"), ("full", "0-7")]
    assert "reuse step" in levels and "reuse step" not in plan_strip(models, "digits/Skip-DiT", "skip:N=2", "ddim", 4)


@pytest.mark.parametrize("model, cache, sampler, steps, message", [
    ("digits/Skip-DiT", "skip:N=zero", "ddim", 10, "N"),
    ("digits/Skip-DiT", "warp:N=2", "ddim", 10, "unknown cache 'warp'"),
    ("digits/DiT", "skip:N=2", "ddim", 10, "long skip"),
    ("digits/Skip-DiT", "skip:N=2", "ddim", 0, "steps must be an integer >= 1"),
    ("digits/Skip-DiT", "skip:N=2", "leapfrog", 10, "leapfrog"),
])
def test_plan_strip_shows_bad_input_as_its_line(models, model, cache, sampler, steps, message):
    html = plan_strip(models, model, cache, sampler, steps)
    assert html.startswith('<p class="skipdit-error">') and "skipdit-step" not in html
    assert re.search(message, unescape(html), re.I) and "\n" not in html and "Traceback" not in html


def test_one_request_cached_and_uncached(models, tmp_path):
    progress = []
    request = Request("digits/Skip-DiT", "3", "skip:N=2", "0-1", "ddim", 10)
    run = run_request(models, request, tmp_path / "out", lambda fraction, text: progress.append(fraction))
    cached, uncached = Image.open(run.cached_image), Image.open(run.uncached_image)
    assert run.cached_image.name == run.uncached_image.name == "grid.png" and cached.size == uncached.size
    stats = run.stats
    assert (stats["steps"], stats["full_steps"], stats["cached_steps"]) == (10, 5, 5)
    assert stats["ideal_speedup"] == pytest.approx(80 / 50)  # 10 steps x 8 blocks / (5 x 8 + 5 x 2)
    assert stats["measured_speedup"] > 0 and stats["cached_seconds"] > 0 and stats["seeds"] == [0, 1]
    assert 10 < stats["psnr_min"] <= stats["psnr"] < 100 and 0 < stats["ssim"] <= 1  # close, not equal
    # the warm-ups (2 x 2 steps) and 3 timed rounds of each run (6 x 10 steps), one call per step
    assert len(progress) == 64 and progress == sorted(progress) and progress[-1] == 1
    report = json.loads(run.downloads[1].read_text())
    assert report["serve"]["request"]["condition"] == "3" and report["labels"] == [3, 3]
    assert report["serve"]["measured_speedup"] == stats["measured_speedup"] and report["speedup"] > 0
    assert run.downloads[0] == tmp_path / "out" / "outputs.zip"
    names = set(zipfile.ZipFile(run.downloads[0]).namelist())
    assert {"grid.png", "uncached/grid.png", "run.json", "000000-3.png", "uncached/000001-3.png"} <= names
    assert serve.summary(stats).startswith(f"**Measured speed-up {stats['measured_speedup']:.2f}x** (ideal 1.60x")


def test_no_cache_runs_once(models, tmp_path):
    run = run_request(models, Request("digits/DiT", "", "", "4", "ddim", 3), tmp_path / "out")
    assert run.cached_image is None and Image.open(run.uncached_image).size[0] > 0
    assert (run.stats["full_steps"], run.stats["cached_steps"], run.stats["cache"]) == (3, 0, None)
    assert "measured_speedup" not in run.stats and serve.summary(run.stats).startswith("No cache: 3 full")


def test_a_text_to_video_request_makes_gifs(models, tmp_path):
    request = Request("moving-digits/Latte-T2V-skip", "the digit 2 moves left", "t2v:N=2", "0", "ddim", 4)
    run = run_request(models, request, tmp_path / "out")
    gif = Image.open(run.cached_image)
    assert run.cached_image.name == "grid.gif" and gif.n_frames == 8  # the model's 8 frames
    assert json.loads(run.downloads[1].read_text())["prompts"] == ["the digit 2 moves left"]
    assert (run.stats["full_steps"], run.stats["cached_steps"]) == (2, 2)


@pytest.mark.parametrize("changes, message", [
    (dict(seeds="zero"), "invalid seeds 'zero': use numbers and ranges like 0-7,10"),
    (dict(seeds=""), "no seeds given"),
    (dict(condition="a cat"), "this is a c2i model: the condition is class labels such as 3 or 1,2"),
    (dict(model="digits/Nope"), "unknown model 'digits/Nope'"),
    (dict(cache="skip:N=0"), "N"),
    (dict(model="digits/DiT"), "long skip"),
    (dict(sampler="leapfrog"), "leapfrog"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(steps=2.5), "steps must be an integer >= 1, got 2.5"),
    (dict(guidance=0.5), "guidance scale must be a finite number >= 1"),
])
def test_bad_input_is_one_line_before_sampling(models, tmp_path, monkeypatch, changes, message):
    monkeypatch.setattr(serve, "sample_to_folder", None)  # sampling is never reached: calling None would fail
    fields = dict(model="digits/Skip-DiT", condition="3", cache="skip:N=2", seeds="0-1", sampler="ddim", steps=10)
    with pytest.raises(UserError) as err:
        run_request(models, Request(**{**fields, **changes}), tmp_path / "out")
    assert re.search(message, str(err.value), re.I) and "\n" not in str(err.value)
    assert not (tmp_path / "out" / "outputs").exists()


def test_out_of_range_label_stops_before_any_file(models, tmp_path):
    """A label's range is the model's, checked by generate before the first step."""
    with pytest.raises(UserError, match="class label 12 out of range: this model has classes 0..9"):
        run_request(models, Request("digits/Skip-DiT", "1,12", "skip:N=2", "0-1", "ddim", 10), tmp_path / "out")
    assert not (tmp_path / "out" / "outputs").exists()


def test_the_cap_on_seeds_steps_and_frames(models, tmp_path, monkeypatch):
    class Reached(Exception):
        pass

    def reached(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(serve, "sample_to_folder", reached)
    assert MAX_WORK == 64 * 250
    with pytest.raises(Reached):  # exactly at the cap: accepted
        run_request(models, Request("digits/Skip-DiT", "", "skip:N=2", "0-63", "ddpm", 250), tmp_path / "a")
    with pytest.raises(UserError, match=r"65 seeds x 250 steps x 1 frames = 16,250 denoising steps; the demo takes "
                       r"at most 16,000 per request \(64 seeds x 250 steps"):
        run_request(models, Request("digits/Skip-DiT", "", "skip:N=2", "0-64", "ddpm", 250), tmp_path / "b")
    with pytest.raises(UserError, match=r"8 seeds x 251 steps x 8 frames = 16,064"):  # frames of a video model count
        run_request(models, Request("moving-digits/Latte-skip", "", "c2v:N=2", "0-7", "ddpm", 251), tmp_path / "c")
    with pytest.raises(UserError, match="at most 16,000 are allowed"):  # a huge list is refused before it is built
        run_request(models, Request("digits/Skip-DiT", "", "", "0-999999999", "ddim", 1), tmp_path / "d")


def test_serve_without_gradio_is_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert main(["serve", "--port", "7860"]) == 2
    assert capsys.readouterr().err == "skipdit: error: skipdit serve needs gradio: pip install 'skipdit[demo]'\n"


@pytest.mark.parametrize("argv, message", [
    (["--port", "70000"], "--port must be at most 65535, got 70000"),
    (["--port", "0"], "must be a positive integer"),
    (["--vae", "vae/"], "--model, --vae and --text-encoder describe a --ckpt or --model-dir"),
    (["--ckpt", "a.safetensors", "--model-dir", "pipe/"], "give --ckpt or --model-dir, not both"),
    (["--model-dir", "nowhere/"], "no diffusers model at nowhere"),
    (["--ckpt", "missing.safetensors"], "missing.safetensors"),
    (["--device", "tpu"], "tpu"),
])
def test_serve_bad_arguments(capsys, argv, message):
    pytest.importorskip("gradio")
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skipdit: error: ") and message in err and err.count("\n") == 1


def test_a_pipeline_folder_is_offered_with_its_vae(tmp_path, capsys):
    pytest.importorskip("diffusers")
    import argparse

    from skipdit.cli.serve_cmd import pipeline_request

    assert main(["convert", "digits/Skip-DiT", str(tmp_path / "pipe"), "--to", "diffusers"]) == 0
    args = argparse.Namespace(model_dir=str(tmp_path / "pipe"), vae=None, model=None, text_encoder=None)
    request = pipeline_request(args)
    assert request.ckpt == str(tmp_path / "pipe") and request.vae is None  # no vae/ in this folder
    models = Models({"pipe": request})
    assert models.get("pipe").model.config == models.get("digits/Skip-DiT").model.config
    assert [kind for kind, *_ in cells(plan_strip(models, "pipe", "skip:N=2", "ddim", 4))] == ["full", "cached"] * 2
    hunyuan = tmp_path / "hunyuan" / "transformer"
    hunyuan.mkdir(parents=True)
    (hunyuan / "config.json").write_text('{"_class_name": "HunyuanDiT2DModel"}')
    assert main(["serve", "--model-dir", str(tmp_path / "hunyuan")]) == 2
    assert "is a Hunyuan-DiT pipeline: the demo runs skipdit's own models" in capsys.readouterr().err


def test_serve_on_a_busy_port(capsys):
    pytest.importorskip("gradio")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    assert capsys.readouterr().err.startswith(f"skipdit: error: cannot listen on 127.0.0.1:{port}: ")
