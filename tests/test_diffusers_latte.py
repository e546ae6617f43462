"""Latte-T2V(-skip) as a diffusers model (skipdit.diffusers.SkipLatteTransformer3DModel) in diffusers' own
LattePipeline, and skipdit.cache.enable on LattePipeline: any cache through our model's seam, the DeepCache-style
form on diffusers' vanilla LatteTransformer3DModel through block hooks."""

from __future__ import annotations

import pytest
import torch

import skipdit
import skipdit.cache as cache
from skipdit.cli import main
from skipdit.metrics.fidelity import psnr

from .test_latte import caption, t2v, video

diffusers = pytest.importorskip("diffusers")
from skipdit.diffusers import SkipLatteTransformer3DModel  # noqa: E402

STEPS = 10


def diffusers_latte(model) -> diffusers.LatteTransformer3DModel:
    """diffusers' own Latte holding a vanilla ``model``'s weights (our keys are its keys)."""
    c = model.config
    theirs = diffusers.LatteTransformer3DModel(
        num_attention_heads=c.num_heads, attention_head_dim=c.hidden_size // c.num_heads, in_channels=c.in_channels,
        out_channels=c.out_channels, num_layers=c.depth, cross_attention_dim=c.hidden_size, attention_bias=True,
        sample_size=c.input_size, patch_size=c.patch_size, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=c.norm_eps,
        caption_channels=c.caption_channels, video_length=c.num_frames)
    theirs.load_state_dict(model.state_dict(), strict=True)
    return theirs.eval()


def pipeline(transformer) -> diffusers.LattePipeline:
    """diffusers' LattePipeline around ``transformer``, with the DiT chain as a DDIM scheduler and a tiny VAE whose
    scale factor is 1 (the latents are the model's 8x8 frames); no text encoder: the tests pass embeddings."""
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(block_out_channels=(8,), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                                  down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                        beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                                        steps_offset=0, timestep_spacing="leading")
    pipe = diffusers.LattePipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                                   scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe) -> torch.Tensor:
    """One guided 4-frame video from fixed caption embeddings, as latents (1, 4, 4, 8, 8)."""
    g = torch.Generator().manual_seed(3)
    text, negative = torch.randn(1, 5, 12, generator=g), torch.randn(1, 5, 12, generator=g)
    return pipe(negative_prompt=None, prompt_embeds=text, negative_prompt_embeds=negative, video_length=4, height=8,
                width=8, num_inference_steps=STEPS, guidance_scale=4.0, generator=torch.Generator().manual_seed(0),
                output_type="latent", mask_feature=False).frames


def count_spatial_and_temporal(transformer) -> list[list[int]]:
    """Per unit, how often its spatial and its temporal block really computed (their self-attention ran)."""
    counts = [[0, 0] for _ in transformer.transformer_blocks]
    for part, blocks in enumerate((transformer.transformer_blocks, transformer.temporal_transformer_blocks)):
        for i, block in enumerate(blocks):
            block.attn1.register_forward_hook(lambda m, a, o, i=i, p=part: counts[i].__setitem__(p, counts[i][p] + 1))
    return counts


# -- the model ------------------------------------------------------------------------------------------------
def test_the_wrapper_computes_our_model():
    model = t2v()
    wrapper = SkipLatteTransformer3DModel.from_skipdit(model)
    x, t = video()
    text, mask = caption()
    bias = (~mask).float()[:, None] * -10000.0  # diffusers' bias form of the same mask
    with torch.no_grad():
        ref = model(x, t, text, mask)
        assert torch.equal(wrapper(x, t, text, mask).sample, ref)
        assert torch.equal(wrapper(x, t, text, bias, return_dict=False)[0], ref)
        assert torch.equal(wrapper(x[:, :, :1], t, text, enable_temporal_attentions=False).sample,
                           model(x[:, :, :1], t, text, temporal=False))
    assert wrapper.config.sample_size == 8 and wrapper.config.video_length == 4 and wrapper.config.long_skip
    assert set(wrapper.state_dict()) == {f"latte.{k}" for k in model.state_dict()}


def test_round_trip_is_bit_identical_and_skipdit_reads_the_folder(tmp_path):
    model = t2v()
    SkipLatteTransformer3DModel.from_skipdit(model).save_pretrained(tmp_path / "transformer")
    back = SkipLatteTransformer3DModel.from_pretrained(tmp_path / "transformer")
    assert back.latte.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(back.latte.state_dict().values(), model.state_dict().values()))
    for folder in (tmp_path / "transformer", tmp_path):  # the model folder, or a pipeline folder holding it
        loaded = skipdit.load(folder)
        assert isinstance(loaded, type(model)) and loaded.config == model.config
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_refusals():
    with pytest.raises(ValueError, match="wraps a Latte-T2V"):
        SkipLatteTransformer3DModel.from_skipdit(skipdit.load("digits/Skip-DiT"))
    with pytest.raises(ValueError, match="norm_type='layer_norm'"):
        SkipLatteTransformer3DModel(norm_type="layer_norm", num_layers=2, num_attention_heads=2, attention_head_dim=8)
    wrapper = SkipLatteTransformer3DModel.from_skipdit(t2v())
    x, t = video()
    with pytest.raises(ValueError, match="needs encoder_hidden_states"):
        wrapper(x, t)


# -- diffusers' LattePipeline ------------------------------------------------------------------------------------
def test_latte_pipeline_runs_ours_as_it_runs_its_own_latte():
    """A vanilla Latte-T2V: the pipeline's output with our model and with diffusers' own on the same weights."""
    model = t2v(long_skip=False)
    ours, theirs = run(pipeline(SkipLatteTransformer3DModel.from_skipdit(model))), run(pipeline(diffusers_latte(model)))
    assert ours.shape == (1, 4, 4, 8, 8)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_skip_cache_on_latte_pipeline():
    transformer = SkipLatteTransformer3DModel.from_skipdit(t2v())
    pipe = pipeline(transformer)
    base = run(pipe)
    handle = cache.enable(pipe, "skip:N=1")
    assert torch.equal(run(pipe), base)  # every step full: the same computation
    counts = count_spatial_and_temporal(transformer.latte)
    handle = cache.enable(pipe, "skip:N=2")
    cached = run(pipe)
    stats = handle.stats
    assert (stats.full_steps, stats.cached_steps, stats.cached_units) == (5, 5, (0, 3))
    assert counts == [[10, 10], [5, 5], [5, 5], [10, 10]]  # cached steps: the outer pair only, both blocks
    assert not torch.equal(cached, base)
    assert torch.equal(run(pipe), cached)  # every pipeline call starts a fresh cache
    cache.disable(pipe)
    assert "forward" not in vars(transformer)
    assert torch.equal(run(pipe), base)


def test_deepcache_on_diffusers_latte_pipeline():
    """The block hooks on diffusers' vanilla Latte, a unit being a (spatial, temporal) pair, compute what the
    DeepCache-style policy computes through our own model's seam."""
    model = t2v(long_skip=False)
    theirs_model = diffusers_latte(model)
    theirs, ours = pipeline(theirs_model), pipeline(SkipLatteTransformer3DModel.from_skipdit(model))
    base = run(theirs)
    counts = count_spatial_and_temporal(theirs_model)
    handle = cache.enable(theirs, "deepcache:N=2,b=1")
    cached = run(theirs)
    assert counts == [[5, 5], [5, 5], [5, 5], [10, 10]]  # cached steps run the last pair only
    stats = handle.stats
    assert (stats.full_steps, stats.cached_steps, stats.cached_units) == (5, 5, (3,))
    assert not torch.equal(cached, base)
    cache.enable(ours, "deepcache:N=2,b=1")
    torch.testing.assert_close(cached, run(ours), atol=1e-4, rtol=0)
    torch.testing.assert_close(run(theirs), cached, atol=0, rtol=0)  # state reset per call
    with pytest.raises(ValueError, match="has no long skips: Skip-Cache needs them"):
        cache.enable(theirs, "skip:N=2")
    cache.disable(theirs)
    assert all("forward" not in vars(b) for b in [*theirs_model.transformer_blocks,
                                                  *theirs_model.temporal_transformer_blocks])
    assert torch.equal(run(theirs), base)


def test_any_cache_through_the_seam_on_latte_pipeline():
    """Our wrapper takes every policy of skipdit, e.g. FORA on the sublayers and PAB's broadcasts."""
    pipe = pipeline(SkipLatteTransformer3DModel.from_skipdit(t2v(long_skip=False)))
    base = run(pipe)
    for spec in ("fora:N=2", "pab"):
        handle = cache.enable(pipe, spec)
        out = run(pipe)
        assert handle.stats.cached_steps > 0 and not torch.equal(out, base), spec
    cache.disable(pipe)
    assert torch.equal(run(pipe), base)



def test_convert_writes_a_latte_pipeline_folder(tmp_path, capsys):
    """`skipdit convert --to diffusers` on the built-in text-to-video model: diffusers' LattePipeline loads the
    folder, skipdit reads it back bit for bit, and the pipeline with Skip-Cache runs it from skipdit's own caption
    embeddings."""
    assert main(["convert", "moving-digits/Latte-T2V-skip", str(tmp_path / "pipe"), "--to", "diffusers"]) == 0
    assert "LattePipeline folder" in capsys.readouterr().out
    source, back = skipdit.load("moving-digits/Latte-T2V-skip"), skipdit.load(tmp_path / "pipe")
    assert back.config == source.config
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), source.state_dict().values()))
    pipe = diffusers.LattePipeline.from_pretrained(tmp_path / "pipe", tokenizer=None, text_encoder=None, vae=None)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.transformer, SkipLatteTransformer3DModel)
    encoder = skipdit.load_text_encoder()
    text, negative = encoder.encode(["a 3 moving right", ""])[0].split(1)  # (1, L, 384) each, zero at padding
    # no VAE: the pipeline's latents are the frames; its size rule assumes a VAE that downsamples 8x
    size = source.config.input_size * pipe.vae_scale_factor
    call = lambda: pipe(negative_prompt=None, prompt_embeds=text, negative_prompt_embeds=negative,  # noqa: E731
                        video_length=source.config.num_frames, height=size, width=size, num_inference_steps=20,
                        generator=torch.Generator().manual_seed(0), output_type="latent", mask_feature=False).frames
    base = call()
    handle = cache.enable(pipe, "skip:N=2")
    cached = call()
    assert (handle.stats.full_steps, handle.stats.cached_steps) == (10, 10)
    assert psnr(cached.clamp(-1, 1), base.clamp(-1, 1), data_range=2.0).item() > 35  # 39.9 dB measured
