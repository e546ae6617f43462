"""``skipdit sample``: images (class-to-image) or videos (class- and text-to-video), with or without a cache."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from ..assets import BUILTIN_MODELS, TASK_DEFAULTS
from ..cache import CACHE_FAMILIES, parse_cache
from ..convert import load
from ..convert.checkpoint import stored_text_encoder
from ..diffusion import SAMPLERS, space_timesteps
from ..diffusion.guidance import CFG_MODES
from ..distributed import check_device
from ..errors import UserError
from ..io import (
    VIDEO_FORMATS,
    atomic_write,
    parse_int_list,
    save_grid,
    save_image,
    save_samples,
    save_video_grid,
    save_videos,
)
from ..metrics import psnr
from ..models import arch_of, build_model
from ..models.random import randomize_
from ..models.skip import SKIP_INITS
from ..provenance import identity, provenance
from ..sample_many import SAMPLE_SETTINGS
from ..sampling import PRECISIONS, Generation, generate
from ..savings import warn_if_plan_saves_nothing, warn_if_saves_nothing
from ..timing import Interleaved, interleaved
from ..vae import load_vae
from .common import MAX_SEEDS, check_number, check_out_dir
from .help import DEVICE_HELP, MODEL_HELP, NO_PROGRESS_HELP, examples

EXAMPLES = examples(
    "skipdit sample --cache skip:N=2 --compare-uncached          # the built-in digits/Skip-DiT, on a CPU",
    "skipdit sample --model digits/DiT --cache fora:N=2 --compare-uncached --repeats 5",
    'skipdit sample --task t2v --prompt "the digit 7 moves up" --cache t2v:N=2 --format mp4,gif',
    "skipdit sample --task c2v --class-labels 3 --seeds 0-3 --cache c2v:N=2 --compare-uncached",
    'skipdit sample --task t2i --model-dir HunyuanDiT-v1.2-Diffusers/ --prompt "一只可爱的猫" --cache t2i:N=2 '
    "--steps 100 --cfg-scale 6 --compare-uncached",
    'skipdit sample --ckpt Latte-skip.pt --text-encoder t5-v1_1-xxl/ --vae vae/ --prompt "a dog on a beach" '
    "--sampler ddim --steps 50 --cfg-scale 7.5 --cache t2v:N2-700-50",
    "skipdit sample --model DiT-XL/2-skip --ckpt DiT-XL-2-skip.pt --vae sd-vae-ft-ema/ --cache c2i:N=2 "
    "--seeds 0-7 --class-labels 207,360 --sampler ddpm --steps 250 --cfg-scale 4 --out samples/",
    "skipdit sample --ckpt DiT-XL-2-skip.pt --vae sd-vae-ft-ema/ --cache c2i:N=3 --compare-uncached",
    "skipdit sample --model DiT-S/2-skip --random-weights --image-size 32 --cache skip:N=2,b=2 --compare-uncached",
)

VAE_DOWNSAMPLE = 8
TASKS = ("c2i", "c2v", "t2v", "t2i")
TASK_OF_ARCH = {"dit": "c2i", "latte": "c2v", "latte_t2v": "t2v"}
TEXT_TASKS = ("t2v", "t2i")
DEFAULT_STEPS = {"ddpm": 250, "ddim": 50}  # --steps unset (the official samplers of DiT and Latte)
HUNYUAN_STEPS = 100  # --task t2i --model-dir: the reference's Hunyuan-DiT setting
DEFAULT_PROMPTS = {"t2v": "the digit 7 moves up", "t2i": "a handwritten four"}  # for the built-in text models


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sample", help="sample images or videos, with or without a cache", epilog=EXAMPLES,
    )
    add_model_arguments(p)
    s = add_sampling_arguments(p)
    s.add_argument("--compare-uncached", action="store_true",
                   help="also run without the cache: after a warm-up of both, time --repeats interleaved rounds "
                   "of each and print the speed-up of the median times and the PSNR")
    s.add_argument("--repeats", type=int, default=3,
                   help="--compare-uncached: timed rounds of each run; the speed-up is the ratio of the medians")
    r = p.add_argument_group("runtime")
    r.add_argument("--batch-size", type=int, help="samples per batch (default: all)")
    r.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help=DEVICE_HELP)
    r.add_argument("--precision", choices=list(PRECISIONS), default="fp32", help="autocast precision")
    r.add_argument("--compile", action="store_true", help="torch.compile each block")
    r.add_argument("--out", default="samples", help="output folder")
    r.add_argument("--format", default="mp4,gif", help=f"video models: file formats, of {','.join(VIDEO_FORMATS)}")
    r.add_argument("--fps", type=int, default=8, help="video models: frames per second")
    r.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(run=run)


def add_model_arguments(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--task", choices=TASKS, help="c2i: class-to-image, c2v: class-to-video, t2v: text-to-video, "
                   "t2i: text-to-image (the built-in model, or Hunyuan-DiT with --model-dir) (default: what --ckpt "
                   "holds; else c2i)")
    g.add_argument("--model-dir", help="t2i: a local diffusers HunyuanDiTPipeline folder")
    g.add_argument("--model", help=MODEL_HELP + "; with --ckpt or --random-weights: the architecture preset, "
                   "e.g. DiT-XL/2-skip (default: the built-in model of --task, or the architecture in --ckpt)")
    g.add_argument("--ckpt", help="official DiT / Latte .pt, a diffusers Latte folder, our .safetensors, or a "
                   "built-in name")
    g.add_argument("--random-weights", action="store_true",
                   help="no checkpoint: a pixel-space (RGB) --model with random weights, to try things out")
    g.add_argument("--skip-init", choices=SKIP_INITS, help="load a vanilla --ckpt into a -skip --model")
    g.add_argument("--vae", help="local diffusers AutoencoderKL folder (latent models)")
    g.add_argument("--text-encoder", help="text models: 'minilm' (built in) or a local T5 / CLIP folder "
                   "(default: the one the model was trained with, else minilm)")
    g.add_argument("--image-size", type=int, help="output image side in pixels (default: from the model)")


def add_sampling_arguments(p):
    s = p.add_argument_group("sampling")
    s.add_argument("--seeds", default="0-7", help="seeds, e.g. 0-7,10 (one sample per seed)")
    s.add_argument("--class-labels", help="labels, cycled over the seeds (default: sample k gets k mod classes)")
    s.add_argument("--prompt", action="append", help="text models: a prompt (repeat for several; cycled over "
                   "the seeds)")
    s.add_argument("--negative-prompt", default="", help="text models: the unconditional prompt")
    s.add_argument("--num-frames", type=int, help="video models: frames (default: the model's)")
    s.add_argument("--sampler", choices=SAMPLERS, default="ddpm", help="sampler")
    s.add_argument("--steps", type=int, help="sampling steps (default 250 for ddpm, 50 for ddim)")
    s.add_argument("--respacing", help="timestep respacing, e.g. ddim50 (overrides --steps)")
    s.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    s.add_argument("--cfg-scale", type=float, default=4.0,
                   help="classifier-free guidance scale (1 = off; unconditional models ignore it)")
    s.add_argument("--cfg-mode", choices=CFG_MODES, default="all",
                   help="all guides every channel; dit_legacy guides only 3, to reproduce the official DiT numbers")
    s.add_argument("--cfg-two-pass", action="store_true", help="run cond and uncond as two model calls")
    s.add_argument("--cache", help=f"cache spec, e.g. c2i:N=2 (families: {', '.join(CACHE_FAMILIES)}; default: "
                   "no cache)")
    return s


def check_arguments(args) -> None:
    """The numbers, the device and the output folder of every command that samples (sample, sample-many, cache
    tune / calibrate-teacache), checked before a model loads: None means "the default", anything else must be
    valid (``--steps 0`` is an error, not the default), and a run never samples for minutes and then finds
    it cannot write."""
    for option, minimum in (("steps", 1), ("image_size", 1), ("num_frames", 1), ("batch_size", 1), ("fps", 1)):
        check_number(getattr(args, option, None), "--" + option.replace("_", "-"), minimum=minimum, integer=True)
    check_number(args.eta, "--eta", minimum=0)
    check_number(args.cfg_scale, "--cfg-scale", minimum=1)
    if args.eta and args.sampler != "ddim":
        raise UserError(f"--eta applies to the ddim sampler only, not --sampler {args.sampler}")
    if getattr(args, "device", "auto") != "auto":  # sample-many resolves "auto" itself
        check_device(args.device)
    if getattr(args, "out", None) is not None:
        check_out_dir(args.out)
    parse_cache(args.cache)  # a malformed spec fails here, not after the model and the text encoder load
    if args.respacing is not None:
        space_timesteps(1000, args.respacing)  # the same: respacing applies to the 1000-step chain of every model


def build(args):
    """The model, the decoder and the text encoder the arguments ask for (after :func:`check_arguments`)."""
    check_arguments(args)
    vae = load_vae(args.vae, args.device) if args.vae else None
    if args.image_size is not None:
        scale = VAE_DOWNSAMPLE if vae is not None else 1
        if args.image_size % scale:
            raise UserError(f"image size {args.image_size} is not divisible by {scale} (the VAE's downsampling)")
    size = {} if args.image_size is None else {"input_size": args.image_size // (VAE_DOWNSAMPLE if vae else 1)}
    ckpt, preset = model_source(args)
    if ckpt:
        if args.random_weights:
            raise UserError("--random-weights and --ckpt exclude each other")
        model = load(ckpt, preset, skip_init=args.skip_init, **size)
    elif args.random_weights:
        if not preset:
            raise UserError("--random-weights needs --model, e.g. --model DiT-S/2-skip")
        if vae is not None:
            raise UserError("--random-weights builds a pixel-space model; drop --vae")
        model = randomize_(build_model(preset, in_channels=3, **size))
    else:
        if preset or args.skip_init:
            raise UserError("--model and --skip-init need --ckpt PATH (or --random-weights)")
        ckpt = TASK_DEFAULTS[args.task or "c2i"]
        model = load(ckpt, **size)
    task = task_of(model)
    if args.task and args.task != task:
        raise UserError(f"--task {args.task}, but the model is a {task} model")
    if vae is None and model.in_channels not in (1, 3):
        raise UserError(f"this model makes {model.in_channels}-channel latents: pass --vae DIR to decode them")
    check_task_arguments(args, task)
    encoder = None
    if task in TEXT_TASKS:
        from ..text import load_text_encoder

        spec = {"name": args.text_encoder} if args.text_encoder else (ckpt and stored_text_encoder(ckpt)) or {}
        encoder = load_text_encoder(spec.get("name"), max_length=spec.get("max_length"), device=args.device)
    return model, vae, encoder, task


def model_source(args) -> tuple[str | None, str | None]:
    """(checkpoint, architecture preset) from ``--ckpt`` and ``--model``. ``--model`` names a model as in
    every other subcommand (a built-in name or a checkpoint) unless ``--ckpt`` or ``--random-weights``
    is given, where it is the architecture preset to load into (the official scripts' ``--model``)."""
    model = args.model
    if model and not args.ckpt and not args.random_weights and (model in BUILTIN_MODELS or Path(model).exists()):
        return model, None
    return args.ckpt, model


def task_of(model) -> str:
    """The task a model does: a text-to-video model with a single frame is a text-to-image model."""
    task = TASK_OF_ARCH[arch_of(model.config)]
    return "t2i" if task == "t2v" and model.config.num_frames == 1 else task


def run(args) -> int:
    if args.model_dir:
        return run_t2i(args)
    seeds = parse_int_list(args.seeds, "seeds", hint="; use skipdit sample-many for more", limit=MAX_SEEDS)
    policy = parse_cache(args.cache)
    _check_compare(args, policy)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in VIDEO_FORMATS]
    if bad or not formats:
        raise UserError(f"--format takes {', '.join(VIDEO_FORMATS)} (comma-separated), got {args.format!r}")
    if args.fps < 1:
        raise UserError(f"--fps must be >= 1, got {args.fps}")
    model, vae, encoder, task = build(args)
    settings = sampling_settings(args, model, vae, encoder, task, len(seeds))
    steps = settings["steps"]
    planned = warn_if_plan_saves_nothing(args.cache, model, steps, settings["respacing"]) is not None
    out = Path(args.out)
    run_with = functools.partial(generate, model, seeds)
    if args.compare_uncached:
        warm = {**settings, "respacing": "2", "progress": False}  # 2 steps at the full batch, both ways
        timed = compare_uncached(run_with, policy, settings, warm, args.repeats)
        result = timed.first["cached"]
    else:
        result = run_with(cache=policy, **settings)
    saved = _write(result, out, formats, args.fps)
    report = {"task": task, "seeds": seeds, "labels": result.labels, "prompts": result.prompts,
              "cache": result.cache, "seconds": result.seconds}
    kind = "videos" if result.is_video else "samples"
    print(f"{len(seeds)} {kind} in {result.seconds:.2f}s ({args.sampler}, {steps} steps) -> {out}/ ({saved})")
    _print_cache(args.cache, result, policy, warned=planned)
    report["stats"] = {**asdict(result.stats), "ideal_speedup": result.stats.ideal_speedup}
    if args.compare_uncached:
        base = timed.first["uncached"]
        _write(base, out / "uncached", formats, args.fps)
        report.update(_compare(result, base, timed))
    report["settings"] = _settings_record(args, settings, policy)
    report["provenance"] = provenance(args.device)
    _write_report(out / "run.json", report)
    return 0


def _settings_record(args, settings: dict, policy) -> dict:
    """What made the samples, as ``sample-many`` fingerprints it: the model (a file's sha256, a built-in name, or
    the preset of random weights), the VAE, every sampling setting and the cache."""
    ckpt, preset = model_source(args)
    if ckpt is None:
        model = f"random weights ({preset})" if args.random_weights else TASK_DEFAULTS[args.task or "c2i"]
    else:
        model = identity(ckpt)
    return {"model": model, "model_preset": preset, "vae": identity(args.vae),
            **{k: settings.get(k) for k in SAMPLE_SETTINGS}, "cache": None if policy is None else policy.spec()}


def _write_report(path: Path, report: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(report, indent=2, default=str, ensure_ascii=False)))


def _check_compare(args, policy) -> None:
    if args.compare_uncached and policy is None:
        raise UserError("--compare-uncached needs --cache")
    if args.repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {args.repeats}")


def _print_cache(spec: str | None, result, policy, warned: bool = False) -> None:
    """What the cache did, and a warning if it saved nothing (unless the plan already said so before the
    run); nothing at all for a run without a cache."""
    if policy is None:
        return
    print(f"cache {result.cache}: {result.stats.summary()}")
    if not warned:
        warn_if_saves_nothing(spec, result.stats, policy)


def compare_uncached(run_with: Callable[..., Generation], policy, settings: dict, warm: dict,
                     repeats: int) -> Interleaved[Generation]:
    """``run_with(cache=..., **settings)`` cached (``policy``) and uncached: one warm-up of each with ``warm``
    (so no timed run pays one-off costs), then ``repeats`` interleaved rounds of a cached and an uncached run.
    The samples are deterministic, so the outputs come from each one's first run."""
    for cache in (policy, None):
        run_with(cache=cache, **warm)
    return interleaved({"cached": lambda: run_with(cache=policy, **settings),
                        "uncached": lambda: run_with(cache=None, **settings)}, repeats, lambda run: run.seconds)


def _compare(result, base, timed: Interleaved) -> dict:
    """Print and return the measured speed-up (of the median times) and the PSNR of the cached samples
    against the uncached ones."""
    scores = psnr(result.images, base.images)
    speedup = timed.speedup("uncached", "cached")
    rounds = timed.round_speedups("uncached", "cached")
    ideal = result.stats.ideal_speedup
    n = len(rounds)
    print(f"timed {n} interleaved rounds after a warm-up: cached median {timed.median('cached'):.2f}s "
          f"({_span(timed.seconds['cached'])}), uncached median {timed.median('uncached'):.2f}s "
          f"({_span(timed.seconds['uncached'])})")
    spread = f", per round {min(rounds):.2f}x-{max(rounds):.2f}x" if n > 1 else ""
    print(f"measured speed-up {speedup:.2f}x (ratio of medians{spread}; ideal {ideal:.2f}x)")
    print(f"PSNR cached vs uncached: mean {scores.mean():.2f} dB, min {scores.min():.2f} dB")
    return {"uncached_seconds": timed.median("uncached"), "cached_seconds": timed.median("cached"),
            "speedup": speedup, "repeats": n, "timed_seconds": timed.seconds, "round_speedups": rounds,
            "psnr": scores.tolist()}


def _span(seconds: Sequence[float]) -> str:
    return f"{min(seconds):.2f}-{max(seconds):.2f}s" if len(seconds) > 1 else f"{seconds[0]:.2f}s"


def check_task_arguments(args, task: str) -> None:
    """Options that the model's task does not take are errors, not silently ignored; :func:`build` checks them
    before the text encoder loads."""
    if task not in TEXT_TASKS and (args.prompt or args.negative_prompt):
        raise UserError(f"--prompt and --negative-prompt are for text models; this is a {task} model")
    if task in TEXT_TASKS and args.class_labels is not None:
        raise UserError(f"--class-labels is for class-conditional models; this is a {task} model (use --prompt)")
    if task in ("c2i", "t2i") and args.num_frames is not None:
        raise UserError(f"--num-frames is for video models; this is a {task} model")


def sampling_settings(args, model, vae, encoder, task: str, n: int) -> dict:
    """``generate()`` keyword arguments for ``n`` seeds: the conditioning (labels cycled over the seeds,
    or prompts), the sampler, guidance and runtime options."""
    check_task_arguments(args, task)
    condition = {"labels": None}
    if task in TEXT_TASKS:
        condition.update(prompts=args.prompt or [DEFAULT_PROMPTS[task]], negative_prompt=args.negative_prompt,
                         text_encoder=encoder)
    elif getattr(model.config, "num_classes", 0):
        given = parse_int_list(args.class_labels, "class labels", limit=MAX_SEEDS) if args.class_labels \
            else list(range(model.config.num_classes))
        condition["labels"] = [given[k % len(given)] for k in range(n)]
    elif args.class_labels:
        raise UserError("this model is unconditional: it takes no --class-labels")
    if task in ("c2v", "t2v"):
        condition["num_frames"] = args.num_frames
    guided = task in TEXT_TASKS or condition.get("labels") is not None
    return dict(
        sampler=args.sampler, steps=DEFAULT_STEPS[args.sampler] if args.steps is None else args.steps,
        respacing=args.respacing, eta=args.eta, cfg_scale=args.cfg_scale if guided else 1.0, cfg_mode=args.cfg_mode,
        cfg_batched=not args.cfg_two_pass, vae=vae, batch_size=args.batch_size, device=args.device,
        precision=args.precision, compile=args.compile, progress=not args.no_progress, **condition,
    )


def run_t2i(args) -> int:
    """Text-to-image through a local Hunyuan-DiT pipeline folder (reference §A.5, §C)."""
    from ..hunyuan import generate_hunyuan, load_hunyuan

    if args.task not in (None, "t2i"):
        raise UserError(f"--model-dir is a Hunyuan-DiT pipeline (text-to-image), not --task {args.task}")
    if args.ckpt or args.model or args.random_weights:
        raise UserError("--task t2i loads the pipeline in --model-dir; --ckpt, --model and --random-weights "
                         "are for skipdit's own models")
    policy = parse_cache(args.cache)
    _check_compare(args, policy)
    check_arguments(args)
    seeds = parse_int_list(args.seeds, "seeds", hint="; use skipdit sample-many for more", limit=MAX_SEEDS)
    pipe = load_hunyuan(args.model_dir, device=args.device, precision=args.precision)
    settings = dict(prompts=args.prompt or ["一只可爱的猫"], negative_prompt=args.negative_prompt or None,
                    steps=HUNYUAN_STEPS if args.steps is None else args.steps, cfg_scale=args.cfg_scale,
                    size=args.image_size, progress=not args.no_progress)
    out = Path(args.out)
    run_with = functools.partial(generate_hunyuan, pipe, seeds)
    if args.compare_uncached:
        warm = {**settings, "steps": 2, "progress": False}
        timed = compare_uncached(run_with, policy, settings, warm, args.repeats)
        result = timed.first["cached"]
    else:
        result = run_with(cache=policy, **settings)
    _write_t2i(result, out)
    print(f"{len(seeds)} images in {result.seconds:.2f}s (DDPM, {settings['steps']} steps) -> {out}/")
    _print_cache(args.cache, result, policy)
    report = {"task": "t2i", "seeds": seeds, "prompts": result.prompts, "cache": result.cache,
              "seconds": result.seconds, "stats": {**asdict(result.stats), "ideal_speedup": result.stats.ideal_speedup}}
    if args.compare_uncached:
        base = timed.first["uncached"]
        _write_t2i(base, out / "uncached")
        report.update(_compare(result, base, timed))
    report["settings"] = {"model": identity(args.model_dir), **{k: v for k, v in settings.items() if k != "progress"},
                          "cache": None if policy is None else policy.spec()}
    report["provenance"] = provenance(args.device)
    _write_report(out / "run.json", report)
    return 0


def _write_t2i(result, out: Path) -> None:
    for image, seed, prompt in zip(result.images, result.seeds, result.prompts):
        save_image(image, out / f"{seed:06d}-{_slug(prompt) or 'prompt'}.png")
    save_grid(result.images, _captions(result), out / "grid.png")


def _captions(result) -> list[str]:
    if result.prompts is not None:
        return [f"{s}: {p}" for s, p in zip(result.seeds, result.prompts)]
    if result.labels is not None:
        return [f"{s}: {y}" for s, y in zip(result.seeds, result.labels)]
    return [str(s) for s in result.seeds]


def _write(result, out: Path, formats: list[str], fps: int) -> str:
    """Per-sample files and a grid; returns a short description of what was written."""
    captions = _captions(result)
    if not result.is_video:
        if result.prompts is not None:  # text-to-image: <seed>-<prompt>.png
            _write_t2i(result, out)
        else:
            save_samples(result.images, result.seeds, result.labels, out)
            save_grid(result.images, captions, out / "grid.png")
        return "PNGs, grid.png"
    tags = result.prompts or result.labels or [""] * len(result.seeds)
    names = [f"{s:06d}-{_slug(str(tag))}".rstrip("-") for s, tag in zip(result.seeds, tags)]
    save_videos(result.images, names, out, formats=formats, fps=fps)
    for fmt in formats:
        save_video_grid(result.images, captions, out / f"grid.{fmt}", fps=fps)
    return f"{', '.join(formats)} per video, " + ", ".join(f"grid.{fmt}" for fmt in formats)


def _slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit]
