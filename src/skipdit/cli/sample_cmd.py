"""``skipdit sample``: images (class-to-image) or videos (class- and text-to-video), with or without a cache."""

from __future__ import annotations

from ..cache import parse_cache
from ..errors import UserError
from ..io import VIDEO_FORMATS, parse_int_list
from ..sample_job import HUNYUAN_STEPS, SampleRun, check_formats, hunyuan_to_folder, sample_to_folder
from . import options
from .common import MAX_SEEDS
from .help import examples

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
SEED_HINT = "; use skipdit sample-many for more"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sample", help="sample images or videos, with or without a cache", epilog=EXAMPLES,
    )
    options.add_model_arguments(p)
    s = options.add_sampling_arguments(p)
    s.add_argument("--compare-uncached", action="store_true",
                   help="also run without the cache: after a warm-up of both, time --repeats interleaved rounds "
                   "of each and print the speed-up of the median times and the PSNR")
    s.add_argument("--repeats", type=int, default=3,
                   help="--compare-uncached: timed rounds of each run; the speed-up is the ratio of the medians")
    r = options.add_runtime_arguments(p)
    r.add_argument("--out", default="samples", help="output folder")
    r.add_argument("--format", default="mp4,gif", help=f"video models: file formats, of {','.join(VIDEO_FORMATS)}")
    r.add_argument("--fps", type=int, default=8, help="video models: frames per second")
    p.set_defaults(run=run)


def run(args) -> int:
    policy = parse_cache(args.cache)
    if args.compare_uncached and policy is None:
        raise UserError("--compare-uncached needs --cache")
    if args.repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {args.repeats}")
    if args.model_dir:
        return run_t2i(args)
    seeds = parse_int_list(args.seeds, "seeds", hint=SEED_HINT, limit=MAX_SEEDS)
    try:
        formats = check_formats(args.format.split(","))
    except UserError:
        raise UserError(f"--format takes {', '.join(VIDEO_FORMATS)} (comma-separated), got {args.format!r}") from None
    settings = options.load_settings(args, len(seeds))
    sampling = settings.sampling
    job = sample_to_folder(settings.loaded, seeds, settings.condition, args.out, sampling=sampling,
                           runtime=settings.runtime, cache=args.cache, compare=args.compare_uncached,
                           repeats=args.repeats, formats=formats, fps=args.fps)
    kind = "videos" if job.result.is_video else "samples"
    print(f"{len(seeds)} {kind} in {job.result.seconds:.2f}s ({sampling.sampler}, {sampling.num_steps} steps) "
          f"-> {args.out}/ ({job.saved})")
    _print(job)
    return 0


def run_t2i(args) -> int:
    """Text-to-image through a local Hunyuan-DiT pipeline folder (reference §A.5, §C)."""
    from ..hunyuan import load_hunyuan

    if args.task not in (None, "t2i"):
        raise UserError(f"--model-dir is a Hunyuan-DiT pipeline (text-to-image), not --task {args.task}")
    if args.ckpt or args.model or args.random_weights:
        raise UserError("--task t2i loads the pipeline in --model-dir; --ckpt, --model and --random-weights "
                         "are for skipdit's own models")
    options.check_arguments(args)
    seeds = parse_int_list(args.seeds, "seeds", hint=SEED_HINT, limit=MAX_SEEDS)
    pipe = load_hunyuan(args.model_dir, device=args.device, precision=args.precision)
    job = hunyuan_to_folder(pipe, args.model_dir, seeds, args.out, prompts=args.prompt,
                            negative_prompt=args.negative_prompt, steps=args.steps, guidance_scale=args.cfg_scale,
                            size=args.image_size, cache=args.cache, compare=args.compare_uncached,
                            repeats=args.repeats, progress=not args.no_progress, device=args.device)
    steps = HUNYUAN_STEPS if args.steps is None else args.steps
    print(f"{len(seeds)} images in {job.result.seconds:.2f}s (DDPM, {steps} steps) -> {args.out}/")
    _print(job)
    return 0


def _print(job: SampleRun) -> None:
    """What the cache did (nothing for a run without one) and, with --compare-uncached, the comparison."""
    if job.result.cache is not None:
        print(f"cache {job.result.cache}: {job.result.stats.summary()}")
    if job.comparison is not None:
        print("\n".join(job.comparison.lines()))
