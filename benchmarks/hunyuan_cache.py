"""Skip-Cache through the Hunyuan-DiT adapter (``skipdit.cache.enable``), and cache-dit's DBCache beside it:
measured speed-up and fidelity.

The models are diffusers ``HunyuanDiT2DModel``s with random weights, built here (nothing is downloaded):

* ``tiny``: the model of ``tests/test_hunyuan_adapter.py`` (6 blocks, hidden 16, 16 image tokens);
* ``base``: the depth of Hunyuan-DiT-g/2 (40 blocks: 0..18 push, 19 and 20 are unpaired, 21..39 pop),
  narrowed for a CPU: hidden 384 (6 heads of 64), patch 2 on a 16x16 latent (64 tokens), MLP ratio 4,
  8 + 8 text tokens. diffusers initialises only the norm biases to zero; they get small random values
  (std 0.02) so that every path carries signal.

The sampler is the one of Hunyuan's pipeline: diffusers' ``DDPMScheduler`` with Hunyuan-DiT's diffusion
config (scaled-linear betas 0.00085 -> 0.02, v-prediction, no sample clipping), 100 steps with "leading"
spacing and ``steps_offset=1`` (reference §C "leading100+1": 991, 981, ..., 1). Guidance is batched
(the model sees batch 2: uncond + cond, scale 6) on fixed random text embeddings. The model has learned
sigma: the first half of its output channels is the prediction (``--prediction``), the rest is dropped,
as in the pipeline. The DDPM noise comes from a generator seeded anew for every run, so all runs start
from the same latents and draw the same noise.

Each cache spec is put on the bare transformer with the scheduler's timesteps and one model call per step,
and taken off again after the run. A reference run (untimed, it is also the warm-up) gives the uncached
latents, and ``t2i:N=1`` must reproduce them exactly (the script stops otherwise). Then, per repeat, the
uncached loop runs, followed by every cache spec; only the denoising loop is timed. Measured speed-up =
median uncached seconds / median cached seconds; ideal speed-up and full / cached steps come from
``skipdit.cache.stats``. Fidelity compares the final latents with the uncached ones: PSNR with data range =
peak-to-peak (max - min) of the uncached latents, and the cosine similarity of the flattened latents.
The weights are random, so this is a numerical check of the cache, not a statement about image quality.

cache-dit (``pip install 'skipdit[cachedit]'``; skipped if it is missing): DBCache settings in cache-dit's short
names (``--cache-dit F1B0_R0.08``: the first 1 and last 0 blocks always run, the middle ones are skipped while
the first block's residual changed by less than 0.08 relative L1; cache-dit's default warm-up of 8 calls). It
runs on a second copy of the model with the same weights (cache-dit's ``disable_cache`` leaves its own copies of
the transformer's and the blocks' forwards behind, which Skip-Cache's adapter must not meet), through
``cache_dit.enable_cache(transformer, cache_config=DBCacheConfig(..., num_inference_steps=steps))`` before each
run and ``cache_dit.disable_cache`` after it; threshold 0 must reproduce the uncached latents exactly. Its
"full / cached" are cache-dit's own counts of steps that ran or skipped the middle blocks, and its ideal
speed-up is block calls without / with it, counted with forward pre-hooks (cache-dit does not call a block it
skips); a setting that skipped nothing says so. With random weights the residuals change much more from step
to step than a trained model's, so these thresholds may never be met.

Cost: the reference run, the N=1 check, and per repeat one uncached run plus the specs (about 2.8 uncached
runs for the default five), so ``--size base --repeats 3`` is about 13.5 uncached runs (plus up to one uncached
run per cache-dit setting and repeat, and one for its check); one base run takes about 30 s on one busy CPU core
(104M parameters, 100 steps, batch 2).

    python benchmarks/hunyuan_cache.py --size tiny --repeats 3
    OMP_NUM_THREADS=2 python benchmarks/hunyuan_cache.py --size base --repeats 3 --json hunyuan-base.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import statistics
import time

import diffusers
import torch
from diffusers.models.embeddings import get_2d_rotary_pos_embed

import skipdit.cache

CACHES = ["t2i:N=2", "t2i:N=3", "t2i:N=4", "t2i:N=5", "t2i:N=6"]
CACHE_DIT = ["F1B0_R0.08", "F1B0_R0.12", "F4B0_R0.12"]  # cache-dit DBCache settings (F<first>B<last>_R<threshold>)
SEED = 0

# HunyuanDiT2DModel arguments per size; text: (tokens, width) of the BERT and of the T5 embeddings
SIZES = {
    "tiny": dict(
        model=dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, patch_size=2, sample_size=8,
                   hidden_size=16, num_layers=6, mlp_ratio=2.0, cross_attention_dim=16, cross_attention_dim_t5=16,
                   pooled_projection_dim=8, text_len=4, text_len_t5=5),
        text=((4, 16), (5, 16)),
    ),
    "base": dict(
        model=dict(num_attention_heads=6, attention_head_dim=64, in_channels=4, patch_size=2, sample_size=16,
                   hidden_size=384, num_layers=40, mlp_ratio=4.0, cross_attention_dim=256,
                   cross_attention_dim_t5=256, pooled_projection_dim=128, text_len=8, text_len_t5=8),
        text=((8, 256), (8, 256)),
    ),
}
COMMON = dict(activation_fn="gelu-approximate", learn_sigma=True, norm_type="layer_norm",
              use_style_cond_and_image_meta_size=False)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=tuple(SIZES), default="tiny")
    parser.add_argument("--caches", nargs="+", default=CACHES, help="Skip-Cache specs")
    parser.add_argument("--cache-dit", nargs="*", default=CACHE_DIT, type=dbcache_setting, metavar="F<n>B<n>_R<x>",
                        help="cache-dit DBCache settings (none: skip cache-dit)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the uncached loop and of each spec")
    parser.add_argument("--steps", type=int, default=100, help="DDPM steps")
    parser.add_argument("--cfg-scale", type=float, default=6.0)
    parser.add_argument("--prediction", choices=("v_prediction", "epsilon"), default="v_prediction",
                        help="how the scheduler reads the first half of the output (Hunyuan-DiT: v_prediction)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's, OMP_NUM_THREADS)")
    parser.add_argument("--json", metavar="PATH", help="also write the setup and the rows here")
    return parser.parse_args()


def dbcache_setting(text: str) -> str:
    if not re.fullmatch(r"F\d+B\d+_R\d*\.?\d+", text):
        raise argparse.ArgumentTypeError(f"a DBCache setting looks like F1B0_R0.08, got {text!r}")
    return text


def dbcache_config(setting: str, steps: int):
    from cache_dit import DBCacheConfig

    first, last, threshold = re.fullmatch(r"F(\d+)B(\d+)_R(.+)", setting).groups()
    return DBCacheConfig(Fn_compute_blocks=int(first), Bn_compute_blocks=int(last),
                         residual_diff_threshold=float(threshold), num_inference_steps=steps,
                         enable_separate_cfg=False)  # guidance in one batch


def build_model(size: str) -> diffusers.HunyuanDiT2DModel:
    torch.manual_seed(0)
    model = diffusers.HunyuanDiT2DModel(**SIZES[size]["model"], **COMMON)
    with torch.no_grad():
        for p in model.parameters():
            if size == "tiny":
                p.add_(torch.randn_like(p) * 0.05)  # as the test does: every parameter
            elif not p.any():
                p.add_(torch.randn_like(p) * 0.02)  # the zero-initialised ones (norm biases)
    return model.eval()


def model_inputs(model: diffusers.HunyuanDiT2DModel, size: str) -> dict:
    """Text embeddings for (uncond, cond), their masks, and the 2D rotary embedding of the image tokens (the
    pipeline's at its base resolution: the crop is the whole grid)."""
    g = torch.Generator().manual_seed(1)
    (n1, d1), (n2, d2) = SIZES[size]["text"]
    cfg = model.config
    grid = cfg.sample_size // cfg.patch_size
    return dict(
        encoder_hidden_states=torch.randn(2, n1, d1, generator=g),
        text_embedding_mask=torch.ones(2, n1, dtype=torch.long),
        encoder_hidden_states_t5=torch.randn(2, n2, d2, generator=g),
        text_embedding_mask_t5=torch.ones(2, n2, dtype=torch.long),
        image_rotary_emb=get_2d_rotary_pos_embed(cfg.attention_head_dim, ((0, 0), (grid, grid)), (grid, grid)),
    )


def make_scheduler(args: argparse.Namespace) -> diffusers.DDPMScheduler:
    scheduler = diffusers.DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.02, prediction_type=args.prediction,
        clip_sample=False, timestep_spacing="leading", steps_offset=1)
    scheduler.set_timesteps(args.steps)
    return scheduler


def sample(model, scheduler, noise: torch.Tensor, inputs: dict, cfg_scale: float) -> tuple[torch.Tensor, float]:
    """One DDPM run with batched guidance; returns the final latents and the seconds of the loop."""
    channels = noise.shape[1]
    generator = torch.Generator().manual_seed(SEED + 1)  # the DDPM noise, the same in every run
    latents = noise * scheduler.init_noise_sigma
    with torch.no_grad():
        tic = time.perf_counter()
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            out = model(x, torch.full((2,), float(t)), **inputs, return_dict=False)[0]
            uncond, cond = out[:, :channels].chunk(2)  # first half of the channels; the rest is sigma
            guided = uncond + cfg_scale * (cond - uncond)
            latents = scheduler.step(guided, t, latents, generator=generator, return_dict=False)[0]
        seconds = time.perf_counter() - tic
    return latents, seconds


def cached_sample(model, scheduler, noise, inputs, cfg_scale, spec):
    """A run with ``spec`` on the transformer; returns latents, seconds and the cache's stats."""
    skipdit.cache.enable(model, spec, timesteps=scheduler.timesteps.tolist(), calls_per_step=1)
    try:
        latents, seconds = sample(model, scheduler, noise, inputs, cfg_scale)
        stats = skipdit.cache.stats(model)
    finally:
        skipdit.cache.disable(model)
    return latents, seconds, stats


def cachedit_sample(model, scheduler, noise, inputs, cfg_scale, setting):
    """A run with cache-dit's DBCache ``setting`` on the transformer; returns latents, seconds, cache-dit's cached
    steps and the block calls made (counted by pre-hooks on the blocks)."""
    import cache_dit

    calls = [0]
    handles = [block.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)) for block in model.blocks]
    cache_dit.enable_cache(model, cache_config=dbcache_config(setting, len(scheduler.timesteps)))
    try:
        latents, seconds = sample(model, scheduler, noise, inputs, cfg_scale)
        cached_steps = len(cache_dit.summary(model, logging=False)[0].cached_steps)
    finally:
        cache_dit.disable_cache(model)
        for handle in handles:
            handle.remove()
    return latents, seconds, cached_steps, calls[0]


def psnr(x: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR (dB) of ``x`` against ``reference``, data range = peak-to-peak of ``reference``."""
    mse = torch.mean((x.double() - reference.double()) ** 2).item()
    data_range = (reference.max() - reference.min()).item()
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def cosine(x: torch.Tensor, reference: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(x.double().flatten(), reference.double().flatten(), dim=0).item()


def describe(model, size: str) -> str:
    cfg = model.config
    tokens = (cfg.sample_size // cfg.patch_size) ** 2
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return (f"{size}: {cfg.num_layers} blocks, hidden {cfg.hidden_size} ({cfg.num_attention_heads} heads of "
            f"{cfg.attention_head_dim}), {tokens} image tokens, {params:.2f}M params")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.size)
    inputs = model_inputs(model, args.size)
    scheduler = make_scheduler(args)
    timesteps = scheduler.timesteps.tolist()
    cfg = model.config
    noise = torch.randn(1, cfg.in_channels, cfg.sample_size, cfg.sample_size,
                        generator=torch.Generator().manual_seed(SEED))
    setup = {
        "model": describe(model, args.size), "size": args.size, "torch": torch.__version__,
        "diffusers": diffusers.__version__, "threads": torch.get_num_threads(), "steps": args.steps,
        "timesteps": f"{timesteps[0]}, {timesteps[1]}, ..., {timesteps[-1]}",
        "scheduler": f"DDPM scaled_linear 0.00085-0.02, {args.prediction}, leading + steps_offset 1",
        "batch": 2, "cfg_scale": args.cfg_scale, "repeats": args.repeats,
    }
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, {torch.get_num_threads()} threads; "
          f"model {setup['model']}", flush=True)
    print(f"sampler: {setup['scheduler']}, {len(timesteps)} steps, timesteps {setup['timesteps']}; "
          f"batched CFG {args.cfg_scale} (batch 2)", flush=True)

    tic = time.perf_counter()
    reference, seconds = sample(model, scheduler, noise, inputs, args.cfg_scale)  # also the warm-up
    print(f"reference (warm-up) run: {seconds:.2f} s; latents std {reference.std().item():.3f}, "
          f"peak-to-peak {(reference.max() - reference.min()).item():.3f}", flush=True)
    same, _, stats = cached_sample(model, scheduler, noise, inputs, args.cfg_scale, "t2i:N=1")
    diff = (same - reference).abs().max().item()
    if diff != 0 or stats.cached_steps != 0:
        raise AssertionError(f"t2i:N=1 should reproduce the uncached latents exactly: max |diff| = {diff}, "
                             f"{stats.cached_steps} cached steps")
    print(f"sanity: t2i:N=1 reproduces the uncached latents exactly (max |diff| = {diff}, "
          f"{stats.full_steps} full steps)", flush=True)

    cachedit_model = None
    if args.cache_dit and importlib.util.find_spec("cache_dit") is None:
        print("cache-dit is not installed (pip install 'skipdit[cachedit]'): its rows are skipped", flush=True)
    elif args.cache_dit:
        cachedit_model = build_model(args.size)  # the same weights; cache-dit patches this copy's forwards
        same, _, cached, _ = cachedit_sample(cachedit_model, scheduler, noise, inputs, args.cfg_scale, "F1B0_R0")
        diff = (same - reference).abs().max().item()
        if diff != 0 or cached != 0:
            raise AssertionError(f"cache-dit at threshold 0 should reproduce the uncached latents exactly: max |diff| "
                                 f"= {diff}, {cached} cached steps")
        print(f"sanity: cache-dit DBCache at threshold 0 reproduces the uncached latents exactly (a second copy of "
              f"the model, max |diff| = {diff})", flush=True)
    blocks = cfg.num_layers * len(timesteps)  # block calls of an uncached run

    uncached_seconds, drift = [], 0.0
    rows = [{"model": args.size, "cache": spec, "seconds": []} for spec in args.caches]
    cd_rows = [{"model": args.size, "cache": f"cache-dit DBCache {setting}", "setting": setting, "seconds": []}
               for setting in (args.cache_dit if cachedit_model is not None else [])]
    for repeat in range(args.repeats):
        latents, seconds = sample(model, scheduler, noise, inputs, args.cfg_scale)
        uncached_seconds.append(seconds)
        drift = max(drift, (latents - reference).abs().max().item())
        line = [f"repeat {repeat + 1}/{args.repeats}: uncached {seconds:.2f} s"]
        for row in rows:
            latents, seconds, stats = cached_sample(model, scheduler, noise, inputs, args.cfg_scale, row["cache"])
            row["seconds"].append(seconds)
            row.update(full_steps=stats.full_steps, cached_steps=stats.cached_steps, ideal=stats.ideal_speedup,
                       psnr=psnr(latents, reference), cosine=cosine(latents, reference))
            line.append(f"{row['cache']} {seconds:.2f} s")
        for row in cd_rows:
            latents, seconds, cached, calls = cachedit_sample(cachedit_model, scheduler, noise, inputs, args.cfg_scale,
                                                              row["setting"])
            row["seconds"].append(seconds)
            row.update(full_steps=len(timesteps) - cached, cached_steps=cached, ideal=blocks / calls,
                       psnr=psnr(latents, reference), cosine=cosine(latents, reference))
            line.append(f"{row['cache']} {seconds:.2f} s")
        print(", ".join(line), flush=True)
    uncached = statistics.median(uncached_seconds)
    rows += cd_rows
    for row in rows:
        row["measured"] = uncached / statistics.median(row["seconds"])
    total = time.perf_counter() - tic

    print(f"\nuncached: {uncached:.2f} s (median of {args.repeats}; timed uncached runs vs the reference: "
          f"max |diff| = {drift:g}); wall time {total:.0f} s")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {setup['model']}; "
          f"PSNR with data range = peak-to-peak of the uncached latents\n")
    print("| model | cache | full / cached | ideal | measured | PSNR (dB) | cosine |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | `{r['cache']}` | {r['full_steps']} / {r['cached_steps']} | {r['ideal']:.2f}x "
              f"| {r['measured']:.2f}x | {r['psnr']:.1f} | {r['cosine']:.6f} |")
    for r in cd_rows:
        if not r["cached_steps"]:
            print(f"{r['cache']} never skipped a block: its threshold was never met on this random model")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**setup, "uncached_seconds": uncached_seconds, "wall_seconds": total, "rows": rows},
                      f, indent=1)


if __name__ == "__main__":
    main()
