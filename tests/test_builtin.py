"""The shipped weights: the digits models, the digits evaluator, and the Fréchet distance behind FDD."""

from pathlib import Path

import numpy as np
import pytest
import torch

from skipdit import Condition, Sampling, generate, load
from skipdit.cli import main
from skipdit.metrics.digits import DigitsEvaluator
from skipdit.metrics.fid import feature_statistics, frechet_distance

# Sampling settings of the accuracy check: DDPM-250 (the CLI default), guidance 4, 50 samples.
SEEDS = list(range(50))
LABELS = [s % 10 for s in SEEDS]


def test_frechet_distance_by_arithmetic():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    # diagonal: sum over dimensions
    assert frechet_distance([0, 0], np.diag([1.0, 4.0]), [1, 1], np.diag([4.0, 16.0])) == pytest.approx(2 + 1 + 4)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    assert frechet_distance(*feature_statistics(a), *feature_statistics(a)) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="mismatched statistics"):
        frechet_distance([0.0], [[1.0]], [0.0, 0.0], np.eye(2))


def test_evaluator_knows_real_digits_from_noise():
    pytest.importorskip("sklearn")
    from skipdit.datasets import load_digits_tensors

    evaluator = DigitsEvaluator.load()
    assert evaluator.info["holdout_accuracy"] > 0.97
    images, labels = load_digits_tensors()
    real = evaluator.evaluate(images[:1000], labels[:1000])
    noise = evaluator.evaluate(torch.rand(1000, 1, 16, 16) * 2 - 1, labels[:1000])
    assert real["accuracy"] > 0.97 and noise["accuracy"] < 0.5
    assert real["fdd"] < 0.1 * noise["fdd"]


@pytest.mark.parametrize("name", ["digits/Skip-DiT", "digits/DiT"])
def test_builtin_models_load_and_draw_their_digits(name):
    model = load(name)
    assert model.config.long_skip == name.endswith("Skip-DiT")
    out = generate(model, SEEDS, LABELS, sampling=Sampling(sampler="ddpm", steps=250, guidance_scale=4.0))
    scores = DigitsEvaluator.load().evaluate(out.images, LABELS)
    assert scores["accuracy"] >= 0.9, scores


def test_builtin_text_to_image_model_draws_the_digit_it_is_asked_for(tmp_path, capsys):
    """digits/T2I-Skip-DiT with MiniLM captions: phrasings it was trained on, and one it was not."""
    from skipdit.datasets import digit_caption
    from skipdit.text import load_text_encoder

    model = load("digits/T2I-Skip-DiT")
    assert model.config.num_frames == 1 and model.config.long_skip and model.conditioning == "text"
    encoder = load_text_encoder("minilm", max_length=8)
    prompts = [digit_caption(s % 10, s // 10 % 2) for s in SEEDS] + [f"number {s % 10}" for s in range(20)]
    out = generate(model, range(len(prompts)), Condition(prompts=prompts, text_encoder=encoder),
                   sampling=Sampling(sampler="ddim", steps=50, guidance_scale=4.0))
    assert out.images.shape == (len(prompts), 16, 16, 1)  # an image model: no frame axis
    predicted = DigitsEvaluator.load().predict(out.images)
    wanted = torch.tensor([s % 10 for s in SEEDS] + [s % 10 for s in range(20)])
    assert (predicted[:50] == wanted[:50]).float().mean() >= 0.9
    assert (predicted[50:] == wanted[50:]).float().mean() >= 0.7  # an unseen phrasing

    code = main(["sample", "--task", "t2i", "--prompt", "a handwritten four", "--seeds", "0-3", "--steps", "20",
                 "--sampler", "ddim", "--cache", "t2v:N=2,start=none", "--compare-uncached", "--out", str(tmp_path),
                 "--no-progress"])
    assert code == 0 and "PSNR" in capsys.readouterr().out
    assert (tmp_path / "000000-a-handwritten-four.png").is_file() and (tmp_path / "grid.png").is_file()


def test_sample_defaults_to_the_builtin_skip_dit(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["sample", "--seeds", "0-3", "--steps", "20", "--cache", "skip:N=2", "--compare-uncached",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "measured speed-up" in printed and "PSNR" in printed
    assert (out / "grid.png").is_file() and (out / "uncached" / "grid.png").is_file()
    assert (out / "000003-3.png").is_file()


def test_builtin_dit_converts_to_skip_dit(tmp_path):
    pytest.importorskip("sklearn")
    from skipdit.train import load_config, train

    config = Path(__file__).parent.parent / "configs/digits/convert-stage1.yaml"
    cfg = load_config(config, [f"run_dir={tmp_path}", "steps=2", "global_batch=16"])
    train(cfg, progress=False)
    state = torch.load(tmp_path / "checkpoints" / "ckpt-0000002.pt", weights_only=True)["model"]
    for key, value in load("digits/DiT").state_dict().items():
        assert torch.equal(state[key], value), key


@pytest.mark.parametrize("task, kind", [("c2v", "Latte"), ("t2v", "LatteT2V")])
def test_builtin_video_models_sample_with_their_presets(tmp_path, capsys, task, kind):
    """The shipped video models load from their names, and `sample --task` runs them with Skip-Cache."""
    from skipdit.assets import TASK_DEFAULTS
    from skipdit.convert.checkpoint import stored_text_encoder
    from skipdit.io import read_video

    model = load(TASK_DEFAULTS[task])
    assert type(model).__name__ == kind and model.has_long_skips and model.config.num_frames == 8
    if task == "t2v":
        assert stored_text_encoder(TASK_DEFAULTS[task]) == {"name": "minilm", "max_length": 16}
    out = tmp_path / task
    assert main(["sample", "--task", task, "--seeds", "0-1", "--sampler", "ddim", "--steps", "10", "--cache",
                 f"{task}:N=2", "--format", "gif", "--out", str(out), "--no-progress"]) == 0
    assert "cached steps run units 0, 3 of 4" in capsys.readouterr().out
    videos = sorted(out.glob("0*.gif"))
    assert len(videos) == 2 and read_video(videos[0]).shape[0] == 8


def test_builtin_text_to_video_model_moves_the_right_digit_the_right_way():
    """moving-digits/Latte-T2V-skip on one prompt per digit x motion ("the digit 7 moves up", ...), scored by
    skipdit.metrics.moving_digits (real moving digits: 96 % digit, 100 % motion)."""
    from skipdit.datasets import MOTIONS, caption
    from skipdit.metrics import moving_digits as md
    from skipdit.text import load_text_encoder

    pairs = [(d, m) for d in range(10) for m in range(len(MOTIONS))]
    condition = Condition(prompts=[caption(d, m) for d, m in pairs],
                          text_encoder=load_text_encoder("minilm", max_length=16))
    out = generate(load("moving-digits/Latte-T2V-skip"), range(100, 140), condition,
                   sampling=Sampling(sampler="ddim", steps=20, guidance_scale=4.0))
    scores = md.score(out.images, [d for d, _ in pairs], [m for _, m in pairs])
    assert scores["digit_accuracy"] >= 0.8 and scores["motion_accuracy"] >= 0.9, scores


def test_builtin_class_to_video_model_draws_its_digit_moving():
    """moving-digits/Latte-skip: the class is the digit and the motion is free; measured 83 % digit accuracy
    and 87 % of videos travelling >= 5 px on these 30 videos."""
    from skipdit.metrics import moving_digits as md

    labels = list(range(10)) * 3
    out = generate(load("moving-digits/Latte-skip"), range(100, 130), labels,
                   sampling=Sampling(sampler="ddim", steps=20, guidance_scale=4.0))
    centres = md.centres_of_mass(out.images)
    travel = (centres[:, -1] - centres[:, 0]).abs().max(dim=1).values  # along the motion axis; real: 7 px
    assert md.score(out.images, labels)["digit_accuracy"] >= 0.7
    assert (travel >= 5).float().mean() >= 0.7
