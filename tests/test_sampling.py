import pytest
import torch

from skipdit import Runtime, Sampling, generate, load_vae
from skipdit.diffusion import SeededNoise
from skipdit.errors import UserError

from .conftest import tiny_model

SAMPLE = Sampling(steps=8, guidance_scale=2.0)


def test_sample_depends_only_on_its_seed(skip_model):
    together = generate(skip_model, seeds=[3, 4, 5], condition=[0, 1, 2], sampling=SAMPLE,
                        runtime=Runtime(batch_size=2))
    alone = generate(skip_model, seeds=[4], condition=[1], sampling=SAMPLE)
    # Same starting noise exactly; the batch size only changes CPU kernel rounding.
    assert torch.equal(SeededNoise([3, 4])(torch.empty(2, 3))[1], SeededNoise([4])(torch.empty(1, 3))[0])
    torch.testing.assert_close(together.samples[1], alone.samples[0], atol=1e-3, rtol=0)
    assert together.seeds == [3, 4, 5] and together.images.shape == (3, 8, 8, 3)
    assert together.images.dtype == torch.uint8


def test_cache_stats_add_up_over_batches(skip_model):
    out = generate(skip_model, seeds=range(3), condition=0, sampling=SAMPLE, runtime=Runtime(batch_size=2),
                   cache="skip:N=2")
    assert out.stats.steps == 2 * 8 and out.stats.full_steps == 2 * 4


def test_ddim_sampler_is_deterministic(skip_model):
    ddim = Sampling(sampler="ddim", steps=5, guidance_scale=1.0)
    a = generate(skip_model, seeds=[0], condition=[1], sampling=ddim)
    b = generate(skip_model, seeds=[0], condition=[1], sampling=ddim)
    assert torch.equal(a.samples, b.samples)


@pytest.mark.parametrize("kwargs,message", [
    (dict(labels=[10]), "class label 10 out of range"),
    (dict(labels=[-1]), "class label -1 out of range"),
    (dict(labels=[1, 2]), "2 labels for 1 seeds"),
    (dict(labels=[1], precision="fp8"), "unknown precision"),
    (dict(labels=[1], sampler="lms"), "unknown sampler"),
    (dict(labels=[1], cache="c2i:N=2"), "b <= 2"),
])
def test_bad_generate_input(skip_model, kwargs, message):
    kwargs = dict(kwargs)
    labels, cache = kwargs.pop("labels"), kwargs.pop("cache", None)
    with pytest.raises(ValueError, match=message):
        # invalid settings fail when the Sampling / Runtime is made, the others in generate
        sampling = SAMPLE.replace(**{k: v for k, v in kwargs.items() if k == "sampler"})
        runtime = Runtime(**{k: v for k, v in kwargs.items() if k == "precision"})
        generate(skip_model, seeds=[0], condition=labels, sampling=sampling, runtime=runtime, cache=cache)


def test_bf16_autocast_close_to_fp32(skip_model):
    ddim = Sampling(sampler="ddim", steps=4, guidance_scale=1.0)
    fp32 = generate(skip_model, seeds=[0, 1], condition=[1, 2], sampling=ddim, cache="skip:N=2")
    bf16 = generate(skip_model, seeds=[0, 1], condition=[1, 2], sampling=ddim, cache="skip:N=2",
                    runtime=Runtime(precision="bf16"))
    err = (bf16.samples - fp32.samples).abs().max() / fp32.samples.abs().max()
    assert err < 0.05


@pytest.mark.slow
def test_compile_matches_eager():
    model = tiny_model()
    ddim = Sampling(sampler="ddim", steps=4, guidance_scale=1.0)
    eager = generate(model, seeds=[0], condition=[1], sampling=ddim, cache="skip:N=2")
    compiled = generate(model, seeds=[0], condition=[1], sampling=ddim, cache="skip:N=2",
                        runtime=Runtime(compile=True))
    torch.testing.assert_close(compiled.samples, eager.samples, atol=1e-4, rtol=1e-4)


def tiny_vae_folder(path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    vae.save_pretrained(path)
    return path


def test_latent_model_with_local_vae(tmp_path):
    pytest.importorskip("diffusers")
    vae = load_vae(tiny_vae_folder(tmp_path / "vae"))
    assert vae.latent_channels == 4 and vae.scaling_factor == pytest.approx(0.18215)
    model = tiny_model(in_channels=4)
    out = generate(model, seeds=[0], condition=[1], sampling=SAMPLE, vae=vae)
    assert out.images.shape == (1, 64, 64, 3) and out.samples.shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match="4 latent channels, the model takes 3"):
        generate(tiny_model(), seeds=[0], condition=[1], sampling=SAMPLE, vae=vae)
    with pytest.raises(UserError, match="no VAE"):
        load_vae(tmp_path / "nowhere")
