"""``skipdit sample``: class-conditional images from a DiT / Skip-DiT, with or without a cache."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

from ..assets import BUILTIN_MODELS, DEFAULT_MODEL
from ..cache import CACHE_FAMILIES, parse_cache
from ..convert import load
from ..diffusion import SAMPLERS
from ..diffusion.guidance import CFG_MODES
from ..io import parse_int_list, save_grid, save_samples
from ..metrics import psnr
from ..models import build_model
from ..models.random import randomize_
from ..models.skip import SKIP_INITS
from ..sampling import PRECISIONS, generate
from ..vae import load_vae

EXAMPLES = """examples:
  skipdit sample --cache skip:N=2 --compare-uncached          # the built-in digits/Skip-DiT, on a CPU
  skipdit sample --model DiT-XL/2-skip --ckpt DiT-XL-2-skip.pt --vae sd-vae-ft-ema/ --cache c2i:N=2 \\
      --seeds 0-7 --class-labels 207,360 --sampler ddpm --steps 250 --cfg-scale 4 --out samples/
  skipdit sample --ckpt DiT-XL-2-skip.pt --vae sd-vae-ft-ema/ --cache c2i:N=3 --compare-uncached
  skipdit sample --model DiT-S/2-skip --random-weights --image-size 32 --cache skip:N=2,b=2 --compare-uncached
"""

VAE_DOWNSAMPLE = 8


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sample", help="sample class-conditional images", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", help="preset, e.g. DiT-XL/2-skip (default: the architecture in --ckpt)")
    g.add_argument("--ckpt", help="official DiT / Skip-DiT .pt, our .safetensors, or a built-in name "
                   f"({', '.join(BUILTIN_MODELS)}; default {DEFAULT_MODEL})")
    g.add_argument("--random-weights", action="store_true",
                   help="no checkpoint: a pixel-space (RGB) --model with random weights, to try things out")
    g.add_argument("--skip-init", choices=SKIP_INITS, help="load a vanilla --ckpt into a -skip --model")
    g.add_argument("--vae", help="local diffusers AutoencoderKL folder (latent models)")
    g.add_argument("--image-size", type=int, help="output image side in pixels (default: from the model)")
    s = p.add_argument_group("sampling")
    s.add_argument("--seeds", default="0-7", help="seeds, e.g. 0-7,10 (one sample per seed; default 0-7)")
    s.add_argument("--class-labels", help="labels, cycled over the seeds (default: sample k gets k mod classes)")
    s.add_argument("--sampler", choices=SAMPLERS, default="ddpm")
    s.add_argument("--steps", type=int, help="sampling steps (default 250 for ddpm, 50 for ddim)")
    s.add_argument("--respacing", help="timestep respacing, e.g. ddim50 (overrides --steps)")
    s.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    s.add_argument("--cfg-scale", type=float, default=4.0, help="classifier-free guidance scale (1 = off)")
    s.add_argument("--cfg-mode", choices=CFG_MODES, default="all",
                   help="dit_legacy guides only 3 channels, to reproduce the official DiT numbers")
    s.add_argument("--cfg-two-pass", action="store_true", help="run cond and uncond as two model calls")
    s.add_argument("--cache", help=f"cache spec, e.g. c2i:N=2 (families: {', '.join(CACHE_FAMILIES)})")
    s.add_argument("--compare-uncached", action="store_true",
                   help="also run without the cache; print the measured speed-up and PSNR")
    r = p.add_argument_group("runtime")
    r.add_argument("--batch-size", type=int, help="samples per batch (default: all)")
    r.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    r.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    r.add_argument("--compile", action="store_true", help="torch.compile each block")
    r.add_argument("--out", default="samples", help="output folder (default: samples/)")
    r.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def build(args):
    """The model and the decoder the arguments ask for."""
    vae = load_vae(args.vae, args.device) if args.vae else None
    if args.image_size is not None:
        scale = VAE_DOWNSAMPLE if vae is not None else 1
        if args.image_size % scale:
            raise ValueError(f"image size {args.image_size} is not divisible by {scale} (the VAE's downsampling)")
    size = {"input_size": args.image_size // (VAE_DOWNSAMPLE if vae else 1)} if args.image_size else {}
    if args.ckpt:
        if args.random_weights:
            raise ValueError("--random-weights and --ckpt exclude each other")
        model = load(args.ckpt, args.model, skip_init=args.skip_init, **size)
    elif args.random_weights:
        if not args.model:
            raise ValueError("--random-weights needs --model, e.g. --model DiT-S/2-skip")
        if vae is not None:
            raise ValueError("--random-weights builds a pixel-space model; drop --vae")
        model = randomize_(build_model(args.model, in_channels=3, **size))
    else:
        if args.model or args.skip_init:
            raise ValueError("--model and --skip-init need --ckpt PATH (or --random-weights)")
        model = load(DEFAULT_MODEL, **size)
    if vae is None and model.in_channels not in (1, 3):
        raise ValueError(f"this model makes {model.in_channels}-channel latents: pass --vae DIR to decode them")
    return model, vae


def run(args) -> int:
    seeds = parse_int_list(args.seeds, "seeds")
    if args.compare_uncached and parse_cache(args.cache) is None:
        raise ValueError("--compare-uncached needs --cache")
    model, vae = build(args)
    num_classes = model.config.num_classes
    if args.class_labels:
        given = parse_int_list(args.class_labels, "class labels")
        labels = [given[k % len(given)] for k in range(len(seeds))]
    else:
        labels = [k % num_classes for k in range(len(seeds))]
    steps = args.steps or (250 if args.sampler == "ddpm" else 50)
    settings = dict(
        sampler=args.sampler, steps=steps, respacing=args.respacing, eta=args.eta, cfg_scale=args.cfg_scale,
        cfg_mode=args.cfg_mode, cfg_batched=not args.cfg_two_pass, vae=vae, batch_size=args.batch_size,
        device=args.device, precision=args.precision, compile=args.compile, progress=not args.no_progress,
    )
    out = Path(args.out)
    if args.compare_uncached:  # warm up kernels and allocators so the first timed run is not penalised
        generate(model, seeds[:1], labels[:1], **{**settings, "respacing": "2", "progress": False})
    result = generate(model, seeds, labels, cache=args.cache, **settings)
    _write(result, out, "grid.png")
    report = {"seeds": seeds, "labels": labels, "cache": result.cache, "seconds": result.seconds}
    print(f"{len(seeds)} samples in {result.seconds:.2f}s ({args.sampler}, {steps} steps) -> {out}/")
    print(f"cache {result.cache}: {result.stats.summary()}")
    report["stats"] = {**asdict(result.stats), "ideal_speedup": result.stats.ideal_speedup}
    if args.compare_uncached:
        base = generate(model, seeds, labels, cache=None, **settings)
        _write(base, out / "uncached", "grid.png")
        scores = psnr(result.images, base.images)
        speedup = base.seconds / result.seconds
        print(f"uncached: {base.seconds:.2f}s -> measured speed-up {speedup:.2f}x "
              f"(ideal {result.stats.ideal_speedup:.2f}x)")
        print(f"PSNR cached vs uncached: mean {scores.mean():.2f} dB, min {scores.min():.2f} dB")
        report.update(uncached_seconds=base.seconds, speedup=speedup, psnr=scores.tolist())
    (out / "run.json").write_text(json.dumps(report, indent=2, default=str))
    return 0


def _write(result, out: Path, grid_name: str) -> None:
    save_samples(result.images, result.seeds, result.labels, out)
    captions = [f"{s}: {y}" for s, y in zip(result.seeds, result.labels)]
    save_grid(result.images, captions, out / grid_name)
