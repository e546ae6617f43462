"""Skip-DiT as a native diffusers model and pipeline (skipdit.diffusers), `skipdit convert --to diffusers`, and
skipdit.cache.enable on SkipDiTPipeline and on diffusers' own DiTPipeline."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest
import torch

import skipdit
import skipdit.cache as cache
from skipdit import Sampling, build_model
from skipdit.cli import main
from skipdit.diffusion import GaussianDiffusion
from skipdit.metrics.fidelity import psnr
from skipdit.models import DiTConfig
from skipdit.models.random import randomize_

from .badinput import expect_user_error
from .conftest import tiny_model

diffusers = pytest.importorskip("diffusers")
from skipdit.convert.diffusers import build_diffusers_dit, use_dit_frequencies  # noqa: E402
from skipdit.diffusers import (  # noqa: E402
    SkipDiTPipeline,
    SkipDiTTransformer2DModel,
    diffusers_dit_compatible,
    dit_scheduler,
    export_pipeline,
)

STEPS = 10  # divides 1000: diffusers' DDIM "leading" steps are skipdit's respacing "ddim10" (900, 800, ..., 0)
DDIM = Sampling(sampler="ddim", steps=STEPS, respacing=f"ddim{STEPS}")


def generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def imagenet_dit(seed: int = 0):
    """A vanilla 1000-class, 4-channel latent DiT: what diffusers' DiTPipeline runs (its null label is 1000)."""
    torch.manual_seed(seed)
    model = build_model("DiT-S/2", input_size=8, depth=4, num_classes=1000, in_channels=4, hidden_size=32,
                        num_heads=2)
    return randomize_(model, seed=seed).eval()


def tiny_vae():
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(block_out_channels=(8,), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                                   down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def digits():
    return skipdit.load("digits/Skip-DiT")


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae")
    tiny_vae().save_pretrained(folder)
    return folder


# -- the model --------------------------------------------------------------------------------------------------
def test_config_is_the_dit_config_with_its_defaults():
    params = inspect.signature(SkipDiTTransformer2DModel.__init__).parameters
    fields = {f.name: f.default for f in dataclasses.fields(DiTConfig)}
    assert {k: p.default for k, p in params.items() if k != "self"} == fields


@pytest.mark.parametrize("long_skip", [True, False])
def test_save_and_load_pretrained_are_bit_identical(tmp_path, long_skip):
    model = tiny_model(long_skip=long_skip)
    transformer = SkipDiTTransformer2DModel.from_skipdit(model)
    # the official names, under the prefix of the attribute that holds the DiT
    assert set(transformer.state_dict()) == {f"dit.{k}" for k in model.state_dict()}
    assert ("dit.skip_linears.0.linear.weight" in transformer.state_dict()) == long_skip
    transformer.save_pretrained(tmp_path)
    again = SkipDiTTransformer2DModel.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(again.config) == public(transformer.config) == dataclasses.asdict(model.config)
    assert again.dit.config == model.config
    assert same_weights(again.dit, model)
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 10])  # 10: the null label
    for t in (torch.tensor([0, 999]), torch.tensor(500), 250):
        ours = model(x, torch.as_tensor(t).expand(2), y)
        assert torch.equal(again(x, t, y).sample, ours)
        assert torch.equal(again(x, t, y, return_dict=False)[0], ours)
    assert torch.equal(skipdit.load(tmp_path).pos_embed, model.pos_embed)  # skipdit.load reads the folder too


def test_timestep_embedding_is_dits_not_diffusers():
    """diffusers' DiTTransformer2DModel embeds timesteps with downscale_freq_shift=1, DiT (and ours) with 0."""
    model = imagenet_dit()
    ours = SkipDiTTransformer2DModel.from_skipdit(model)
    stock, exact = build_diffusers_dit(model, exact=False), build_diffusers_dit(model)
    x, y, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 1000]), torch.tensor([500, 999])
    out = ours(x, t, y).sample
    assert torch.equal(out, model(x, t, y))
    torch.testing.assert_close(exact(x, timestep=t, class_labels=y).sample, out, atol=1e-5, rtol=1e-5)
    assert (stock(x, timestep=t, class_labels=y).sample - out).abs().max() > 1e-4


def test_gradient_checkpointing_is_the_dits():
    transformer = SkipDiTTransformer2DModel.from_skipdit(tiny_model()).train()
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 2])
    transformer(x, t, y).sample.square().mean().backward()
    plain = {k: p.grad.clone() for k, p in transformer.named_parameters() if p.grad is not None}
    transformer.zero_grad()
    transformer.enable_gradient_checkpointing()
    assert transformer.dit.gradient_checkpointing
    transformer(x, t, y).sample.square().mean().backward()
    for k, p in transformer.named_parameters():
        if k in plain:
            torch.testing.assert_close(p.grad, plain[k], atol=1e-6, rtol=1e-5)


# -- the pipeline -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["all", "dit_legacy"])
def test_pipeline_is_generate_with_ddim(digits, mode):
    """The same model, seeds and DDIM steps: diffusers' DDIMScheduler (leading spacing, offset 0) on the pipeline,
    skipdit's ddim10 in generate. They differ only in float rounding of the two DDIM formulas (ADM's goes through
    x0 and back to eps; measured on these samples of magnitude ~1.3: 2.5e-5 with guidance 4, 2.7e-6 without)."""
    pipe = quiet(SkipDiTPipeline.from_skipdit(digits))
    seeds, labels = [3, 7, 11], [1, 2, 9]
    for scale in (4.0, 1.0):
        ref = skipdit.generate(digits, seeds, labels, sampling=DDIM.replace(guidance_scale=scale, guidance_mode=mode))
        out = pipe(labels, guidance_scale=scale, generator=generators(seeds), num_inference_steps=STEPS,
                   output_type="latent", guidance_mode=mode).images
        torch.testing.assert_close(out, ref.samples, atol=1e-4, rtol=0)
    pipe.scheduler.set_timesteps(STEPS)
    assert pipe.scheduler.timesteps.tolist() == GaussianDiffusion.create(f"ddim{STEPS}").sampling_timesteps()


def test_sample_i_depends_only_on_its_generator(digits):
    pipe = quiet(SkipDiTPipeline.from_skipdit(digits))
    both = pipe([4, 5], generator=generators([0, 1]), num_inference_steps=4, output_type="pt").images
    alone = pipe([5], generator=generators([1]), num_inference_steps=4, output_type="pt").images
    torch.testing.assert_close(alone[0], both[1], atol=1e-6, rtol=0)
    # a stochastic scheduler draws its noise from each sample's generator too
    pipe.scheduler = diffusers.DDPMScheduler.from_config(pipe.scheduler.config, variance_type="learned_range")
    both = pipe([4, 5], generator=generators([0, 1]), num_inference_steps=4, output_type="latent").images
    alone = pipe([5], generator=generators([1]), num_inference_steps=4, output_type="latent").images
    torch.testing.assert_close(alone[0], both[1], atol=1e-6, rtol=0)


def test_any_scheduler_runs(digits):
    pipe = quiet(SkipDiTPipeline.from_skipdit(digits))
    base = dit_scheduler().config
    for scheduler in (diffusers.DPMSolverMultistepScheduler.from_config(base),
                      diffusers.EulerDiscreteScheduler.from_config(base),
                      diffusers.DDPMScheduler.from_config(base, variance_type="learned_range")):
        pipe.scheduler = scheduler
        images = pipe([0, 7], generator=generators([0, 1]), num_inference_steps=6, output_type="np").images
        assert images.shape == (2, 16, 16, 1) and np.isfinite(images).all() and 0 <= images.min() <= images.max() <= 1


def test_output_types_and_the_progress_bar(digits, capsys):
    pipe = SkipDiTPipeline.from_skipdit(digits)
    pipe.set_progress_bar_config(disable=False)
    out = pipe([3], generator=torch.Generator().manual_seed(0), num_inference_steps=2)  # defaults: pil
    assert out.images[0].size == (16, 16) and out.images[0].mode == "L"  # a 1-channel pixel model: grey
    assert "2/2" in capsys.readouterr().err
    quiet(pipe)
    pt, = pipe([3], generator=generators([0]), num_inference_steps=2, output_type="pt", return_dict=False)
    latent = pipe([3], generator=generators([0]), num_inference_steps=2, output_type="latent").images
    assert pt.shape == (1, 1, 16, 16) and torch.equal(pt, (latent / 2 + 0.5).clamp(0, 1))


def test_a_latent_model_needs_a_vae_for_images():
    model = imagenet_dit()
    pipe = quiet(SkipDiTPipeline.from_skipdit(model))
    with pytest.raises(ValueError, match="4-channel latents and the pipeline has no VAE"):
        pipe([1], num_inference_steps=2)
    assert pipe([1], num_inference_steps=2, output_type="latent").images.shape == (1, 4, 8, 8)
    pipe = quiet(SkipDiTPipeline.from_skipdit(model, vae=tiny_vae()))
    assert pipe([1, 999], num_inference_steps=2, output_type="np").images.shape == (2, 8, 8, 3)


def test_bad_pipeline_calls(digits):
    pipe = quiet(SkipDiTPipeline.from_skipdit(digits))
    for kwargs, message in [
        (dict(class_labels=[10]), r"class label 10 out of range: this model has classes 0..9"),
        (dict(class_labels=[1, 2], generator=generators([0])), "1 generators for 2 class labels"),
        (dict(class_labels=[1], output_type="jpg"), "unknown output_type 'jpg'"),
        (dict(class_labels=[1], guidance_mode="three"), "unknown guidance mode 'three'"),
        (dict(class_labels=[1], num_inference_steps=0), "num_inference_steps must be an integer >= 1"),
        (dict(class_labels=[1], guidance_scale=float("nan")), "guidance_scale must be a finite number"),
    ]:
        with pytest.raises(ValueError, match=message):
            pipe(**kwargs)
    no_null = quiet(SkipDiTPipeline.from_skipdit(tiny_model(class_dropout_prob=0.0)))
    with pytest.raises(ValueError, match="no null-label embedding"):
        no_null([1], num_inference_steps=1)
    no_null([1], guidance_scale=1.0, num_inference_steps=1, output_type="latent")


# -- Skip-Cache and the other caches on SkipDiTPipeline -------------------------------------------------------------
def test_cache_on_the_pipeline_is_generates_and_disables_exactly(digits):
    pipe = quiet(SkipDiTPipeline.from_skipdit(digits))
    seeds, labels = [0, 1, 2, 3], [0, 3, 5, 8]
    call = lambda: pipe(labels, generator=generators(seeds), num_inference_steps=STEPS,  # noqa: E731
                        output_type="latent").images
    base = call()
    forward = pipe.transformer.forward
    handle = cache.enable(pipe, "skip:N=2,b=1")
    cached = call()
    stats = cache.stats(pipe)
    assert stats == handle.stats and (stats.full_steps, stats.cached_steps) == (5, 5)
    assert stats.cached_units == (0, 7) and stats.ideal_speedup == pytest.approx(80 / 50)
    ref = skipdit.generate(digits, seeds, labels, cache="skip:N=2,b=1", sampling=DDIM)
    assert ref.stats == stats
    torch.testing.assert_close(cached, ref.samples, atol=1e-4, rtol=0)
    quality = psnr(cached.clamp(-1, 1), base.clamp(-1, 1), data_range=2.0)
    assert quality.min() > 25, quality  # measured: 27.0-33.7 dB on these four digits at 10 DDIM steps
    assert not torch.equal(cached, base)
    torch.testing.assert_close(call(), cached, rtol=0, atol=0)  # a new call is a new run: state reset
    assert cache.stats(pipe) == stats
    # any skipdit policy goes through the model's seam: FORA reuses sublayers, TeaCache decides as it runs
    for spec in ("fora:N=2", "teacache:threshold=0.1"):
        handle = cache.enable(pipe, spec)
        out = call()
        ref = skipdit.generate(digits, seeds, labels, cache=spec, sampling=DDIM)
        assert handle.stats == ref.stats, spec
        torch.testing.assert_close(out, ref.samples, atol=1e-4, rtol=0)
    cache.disable(pipe)
    assert "forward" not in vars(pipe.transformer) and pipe.transformer.forward == forward
    assert "step" not in vars(pipe.scheduler) and "set_timesteps" not in vars(pipe.scheduler)
    torch.testing.assert_close(call(), base, rtol=0, atol=0)


def test_cache_refusals_on_the_pipeline(digits):
    pipe = quiet(SkipDiTPipeline.from_skipdit(digits))
    with pytest.raises(ValueError, match="has long skips: its DeepCache is Skip-Cache"):
        cache.enable(pipe, "deepcache:N=2,b=1")
    with pytest.raises(ValueError, match="needs a cache spec"):
        cache.enable(pipe, None)
    vanilla = quiet(SkipDiTPipeline.from_skipdit(skipdit.load("digits/DiT")))
    with pytest.raises(ValueError, match="Skip-Cache needs a model with long skips"):
        cache.enable(vanilla, "skip:N=2")
    cache.enable(vanilla, "deepcache:N=2,b=1")
    vanilla([1], generator=generators([0]), num_inference_steps=4, output_type="latent")
    assert cache.stats(vanilla).cached_units == (7,)
    cache.disable(vanilla)


# -- the DeepCache-style form on diffusers' own DiTPipeline ---------------------------------------------------------
def test_deepcache_on_diffusers_dit_pipeline(tmp_path, vae_dir):
    model = imagenet_dit()
    skipdit.save(model, tmp_path / "dit.safetensors")
    export = export_pipeline(tmp_path / "dit.safetensors", tmp_path / "pipe", vae=vae_dir)
    assert export.layout == "dit"
    theirs = quiet(diffusers.DiTPipeline.from_pretrained(tmp_path / "pipe"))
    ours = quiet(SkipDiTPipeline.from_pretrained(tmp_path / "pipe"))
    use_dit_frequencies(theirs.transformer)  # DiT's timestep frequencies: the two pipelines compute the same
    call = lambda pipe: pipe([1, 207], generator=generators([0, 1]), num_inference_steps=STEPS,  # noqa: E731
                             output_type="pt").images
    base = call(theirs)
    torch.testing.assert_close(base, call(ours), atol=1e-5, rtol=0)

    blocks = theirs.transformer.transformer_blocks
    counts = [0] * len(blocks)
    for i, block in enumerate(blocks):
        block.attn1.register_forward_hook(lambda m, a, o, i=i: counts.__setitem__(i, counts[i] + 1))
    handle = cache.enable(theirs, "deepcache:N=2,b=1")
    cached = call(theirs)
    assert counts == [5, 5, 5, 10]  # cached steps run the last block only, from the kept state entering it
    stats = handle.stats
    assert (stats.full_steps, stats.cached_steps, stats.cached_units, stats.unit_evals) == (5, 5, (3,), 25)
    assert not torch.equal(cached, base)
    cache.enable(ours, "deepcache:N=2,b=1")  # the policy through our model's seam: the same computation
    torch.testing.assert_close(cached, call(ours), atol=1e-5, rtol=0)
    torch.testing.assert_close(call(theirs), cached, rtol=0, atol=0)  # state reset per call
    with pytest.raises(ValueError, match="has no long skips: Skip-Cache needs them"):
        cache.enable(theirs, "skip:N=2")
    with pytest.raises(ValueError, match="runs Skip-Cache .* and deepcache on vanilla ones, not fora"):
        cache.enable(theirs, "fora:N=2")
    cache.disable(theirs)
    assert all("forward" not in vars(b) for b in blocks)
    torch.testing.assert_close(call(theirs), base, rtol=0, atol=0)


def test_deepcache_fidelity_on_a_trained_vanilla_dit():
    model = skipdit.load("digits/DiT")
    pipe = quiet(SkipDiTPipeline.from_skipdit(model))
    call = lambda: pipe([0, 3, 5, 8], generator=generators([0, 1, 2, 3]), num_inference_steps=STEPS,  # noqa: E731
                        output_type="latent").images
    base = call()
    cache.enable(pipe, "deepcache:N=2,b=1")
    quality = psnr(call().clamp(-1, 1), base.clamp(-1, 1), data_range=2.0)
    assert quality.min() > 22, quality  # measured: 27.7-34.9 dB (Skip-Cache on digits/Skip-DiT: 27.0-33.7)


# -- skipdit convert --to diffusers -----------------------------------------------------------------------------------
def test_convert_to_diffusers_and_back(tmp_path, capsys):
    source = tmp_path / "skip.safetensors"
    model = tiny_model()
    skipdit.save(model, source)
    out = tmp_path / "pipe"
    assert main(["convert", str(source), str(out), "--to", "diffusers"]) == 0
    printed = capsys.readouterr().out
    assert "SkipDiTPipeline folder with transformer, scheduler" in printed
    index = json.loads((out / "model_index.json").read_text())
    assert index["transformer"] == ["skipdit.diffusers", "SkipDiTTransformer2DModel"] and index["vae"] == [None, None]
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["_class_name"], scheduler["num_train_timesteps"], scheduler["beta_schedule"],
            scheduler["beta_start"], scheduler["beta_end"]) == ("DDIMScheduler", 1000, "linear", 1e-4, 0.02)
    pipe = SkipDiTPipeline.from_pretrained(out)
    assert same_weights(pipe.transformer.dit, model) and pipe.transformer.dit.config == model.config
    assert same_weights(skipdit.load(out), model)
    back = tmp_path / "back.safetensors"
    assert main(["convert", str(out), str(back)]) == 0
    assert "read diffusers-skipdit checkpoint" in capsys.readouterr().out
    again = skipdit.load(back)
    assert same_weights(again, model) and again.config == model.config
    # writing again replaces the earlier pipeline folder
    assert main(["convert", "digits/DiT", str(out), "--to", "diffusers"]) == 0
    assert skipdit.load(out).config == skipdit.load("digits/DiT").config


def test_a_1000_class_dit_is_written_for_diffusers_dit_pipeline(tmp_path, capsys, vae_dir):
    model = imagenet_dit()
    assert diffusers_dit_compatible(model) and not diffusers_dit_compatible(tiny_model())
    assert not diffusers_dit_compatible(tiny_model(long_skip=False))  # 10 classes: DiTPipeline's null label is 1000
    source, out = tmp_path / "dit.safetensors", tmp_path / "pipe"
    skipdit.save(model, source)
    assert main(["convert", str(source), str(out), "--to", "diffusers", "--vae", str(vae_dir)]) == 0
    printed = capsys.readouterr().out
    assert "DiTPipeline folder" in printed and "with transformer, scheduler, vae" in printed
    assert "downscale_freq_shift" in printed
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "DiTPipeline" and index["transformer"] == ["diffusers", "DiTTransformer2DModel"]
    theirs = quiet(diffusers.DiTPipeline.from_pretrained(out))
    ours = quiet(SkipDiTPipeline.from_pretrained(out))
    assert isinstance(ours.transformer, SkipDiTTransformer2DModel) and same_weights(ours.transformer.dit, model)
    assert same_weights(skipdit.load(out), model) and skipdit.load(out).config == model.config
    back = tmp_path / "back.safetensors"
    assert main(["convert", str(out), str(back)]) == 0
    assert same_weights(skipdit.load(back), model)
    # diffusers' own pipeline, stock: only the timestep frequencies differ from ours
    call = lambda pipe: pipe([1, 207], generator=generators([0, 1]), num_inference_steps=STEPS,  # noqa: E731
                             output_type="pt").images
    stock = call(theirs)
    use_dit_frequencies(theirs.transformer)
    exact, reference = call(theirs), call(ours)
    torch.testing.assert_close(exact, reference, atol=1e-6, rtol=0)  # float rounding (split QKV): ~1e-7
    assert (stock - reference).abs().max() > 1e-5  # the shift: 7.8e-5 on these images


def test_diffusers_dit_folders_load(tmp_path):
    """A DiTTransformer2DModel folder as diffusers writes it (stock: shift 1, norm_eps 1e-5), alone or in a pipeline,
    also under the legacy class name Transformer2DModel: the same weights, computed with DiT's numerics."""
    model = imagenet_dit()
    stock = build_diffusers_dit(model, exact=False)
    stock.save_pretrained(tmp_path / "alone")
    loaded, report = skipdit.load(tmp_path / "alone", return_report=True)
    assert report.source_format == "diffusers-dit" and same_weights(loaded, model) and loaded.config == model.config
    x, y, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 1000]), torch.tensor([500, 999])
    theirs = diffusers.DiTTransformer2DModel.from_pretrained(tmp_path / "alone")(x, timestep=t, class_labels=y).sample
    assert (theirs - loaded(x, t, y)).abs().max() > 1e-4  # the timestep shift (and eps 1e-5): stated, measured
    config = json.loads((tmp_path / "alone" / "config.json").read_text())
    (tmp_path / "legacy" / "transformer").mkdir(parents=True)
    (tmp_path / "legacy" / "transformer" / "config.json").write_text(json.dumps(
        {**config, "_class_name": "Transformer2DModel"}))
    (tmp_path / "legacy" / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(
        (tmp_path / "alone" / "diffusion_pytorch_model.safetensors").read_bytes())
    assert same_weights(skipdit.load(tmp_path / "legacy"), model)


# -- bad input ----------------------------------------------------------------------------------------------------
@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in" / "skip.safetensors"
    path.parent.mkdir()
    skipdit.save(tiny_model(), path)
    return path


def test_bad_convert_to_diffusers(tmp_path, capsys, source, vae_dir):
    outs = tmp_path / "outs"
    outs.mkdir()
    run = lambda argv, message: expect_user_error(capsys, ["convert", *argv], message,  # noqa: E731
                                                  inputs=[source], outputs=[outs])
    run([tmp_path / "nothing.pt", outs / "pipe", "--to", "diffusers"], "checkpoint not found")
    (outs / "file").write_text("x")
    run([source, outs / "file", "--to", "diffusers"], r"output .*file is a file; --to diffusers writes a pipeline")
    (outs / "full").mkdir()
    (outs / "full" / "notes.txt").write_text("mine")
    run([source, outs / "full", "--to", "diffusers"], "is not empty and holds no pipeline")
    run([source, outs / "pipe", "--to", "diffusers", "--vae", source], r"--vae .*skip\.safetensors is not a folder")
    run([source, outs / "pipe", "--to", "diffusers", "--vae", tmp_path / "in"], "no VAE at")
    run([source, outs / "pipe", "--to", "onnx"], r"argument --to: invalid choice: 'onnx'")
    run([source, outs / "x.safetensors", "--vae", vae_dir], "--vae goes with --to diffusers")
    run(["moving-digits/Latte-skip", outs / "pipe", "--to", "diffusers"], "holds a latte model .*no class-to-video")
    run([source, outs / "pipe", "--to", "diffusers", "--vae", vae_dir], "VAE in .* has 4 latent channels, the "
        "model takes 3")
    run([source.parent, source.parent / "pipe", "--to", "diffusers"], "overlaps the source")


def test_unsupported_diffusers_folder(tmp_path, capsys):
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    out = tmp_path / "out"
    out.mkdir()
    expect_user_error(capsys, ["convert", folder, out / "x.safetensors"],
                      r"unet holds a UNet2DModel; supported diffusers models: LatteTransformer3DModel, "
                      "DiTTransformer2DModel, SkipDiTTransformer2DModel", outputs=[out])
