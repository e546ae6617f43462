"""``skipdit bench``: Skip-Cache and every peer cache on the same models, seeds and sampler."""

from __future__ import annotations

import torch

from ..bench.harness import CACHE_DIT, DIFFUSERS, FAMILIES, Bench, Preparer, run_bench, select_methods
from ..bench.report import write_report
from ..convert import load
from ..distributed import check_device
from ..errors import UserError
from ..io import parse_int_list
from ..loading import Loaded, ModelRequest, text_encoder_for
from ..sampling import DEFAULT_GUIDANCE
from . import options
from .common import MAX_SEEDS, check_in_file, check_out_dir, guidance_scale, positive_int
from .help import DEVICE_HELP, MODEL_HELP, NO_PROGRESS_HELP, examples

# A sweep runs every method several times: it samples with DDIM (at its default steps) unless told otherwise.
BENCH_SAMPLER = "ddim"

MIN_SEEDS = 2

EXAMPLES = examples(
    "skipdit bench --model digits/Skip-DiT --baseline-model digits/DiT --caches all --seeds 0-63 --out bench/",
    "skipdit bench --model digits/Skip-DiT --baseline-model digits/DiT --caches skip,fora,fbc,hf-pab",
    'skipdit bench --model moving-digits/Latte-T2V-skip --caches skip:N=2,tgate,pab --prompt "the digit 3 moves up"',
    note="""
Writes bench.md (the table), bench.json (every row), pareto.png (PSNR against the measured speed-up,
the paper's Figure 1c), pareto-macs.png (the same against the ideal speed-up from counted MACs) and
similarity.png (per-step feature similarity, Figure 1a) into --out.
Methods that do not apply to a model (Δ-DiT on a skip model, T-GATE without text) are listed, not run.
""",
)


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="compare Skip-Cache with the peer caches (speed-up, PSNR, SSIM, LPIPS ...)",
                       epilog=EXAMPLES)
    p.add_argument("--model", default="digits/Skip-DiT", help="the Skip-DiT model: " + MODEL_HELP)
    p.add_argument("--baseline-model",
                   help="the vanilla model the peers run on, " + MODEL_HELP + " (default: the --model itself)")
    families = ", ".join([*FAMILIES, *DIFFUSERS, *CACHE_DIT])
    p.add_argument("--caches", default="all", help=f"'all', families ({families}) or specs such as fora:N=5, "
                   "comma-separated ('all,taylor:N=6' adds a spec to every family)")
    p.add_argument("--seeds", default="0-63", help="evaluation seeds")
    p.add_argument("--calibration-seeds", default="1000-1003",
                   help="seeds for TeaCache's and MagCache's fits, apart from the evaluation seeds")
    p.add_argument("--class-labels", help="labels cycled over the seeds (default: seed mod classes)")
    p.add_argument("--prompt", action="append", help="text models: prompts cycled over the seeds")
    p.add_argument("--text-encoder", help="text models: 'minilm' or a local folder (default: the model's)")
    options.add_sampler_arguments(p, default=BENCH_SAMPLER, steps_type=positive_int)
    p.add_argument("--cfg-scale", type=guidance_scale, help=f"classifier-free guidance scale (1 = off; default "
                   f"{DEFAULT_GUIDANCE:g}, off for unconditional models)")
    p.add_argument("--repeats", type=positive_int, default=2,
                   help="timed runs per method, interleaved with as many timed uncached runs; the speed-up is "
                   "the ratio of the medians")
    p.add_argument("--lpips-backbone", help="LPIPS: torchvision's AlexNet / VGG16 ImageNet weights (.pth)")
    p.add_argument("--lpips-heads", help="LPIPS: the lpips package's linear heads for that net (alex.pth / vgg.pth)")
    p.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex", help="LPIPS: the network of those weights")
    p.add_argument("--flops", action="store_true", help="also print the MACs per sample of every run")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help=DEVICE_HELP)
    p.add_argument("--out", default="bench-out", help="output folder")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(run=run)


def run(args) -> int:
    seeds = parse_int_list(args.seeds, "seeds", limit=MAX_SEEDS)
    if len(seeds) < MIN_SEEDS:
        raise UserError(f"--seeds {args.seeds!r} gives {len(seeds)} seed; bench needs at least {MIN_SEEDS} (the "
                        "Fréchet distance of the fidelity scores needs two samples)")
    calibration = parse_int_list(args.calibration_seeds, "calibration seeds", limit=MAX_SEEDS)
    if set(seeds) & set(calibration):
        raise UserError("--calibration-seeds must not overlap --seeds (fits are made apart from the evaluation)")
    if bool(args.lpips_backbone) != bool(args.lpips_heads):
        raise UserError("LPIPS needs both --lpips-backbone and --lpips-heads")
    for option, path in (("--lpips-backbone", args.lpips_backbone), ("--lpips-heads", args.lpips_heads)):
        if path is not None:
            check_in_file(path, option)
    sampling = options.sampling_from(args)
    methods = select_methods(args.caches, sampling.num_steps)
    check_device(args.device)  # before any model moves: torch's own errors come from deep inside .to()
    check_out_dir(args.out)  # before the run, which takes minutes, not after it
    request = ModelRequest(model=args.model, text_encoder=args.text_encoder)
    model = load(args.model).to(args.device)  # latents are compared as they are: the bench decodes nothing
    loaded = Loaded(model, None, text_encoder_for(model, request, args.device), model.task, request)
    models = {"model": model}
    names = {"model": args.model}
    if args.baseline_model:
        models["baseline"] = load(args.baseline_model).to(args.device)
        names["baseline"] = args.baseline_model
        if models["baseline"].conditioning != models["model"].conditioning:
            raise UserError("--model and --baseline-model must take the same conditioning")
    labels = parse_int_list(args.class_labels, "class labels", limit=MAX_SEEDS) if args.class_labels else None
    condition = loaded.condition(len(seeds), labels=labels, prompts=args.prompt)
    bench = Bench(models, names, seeds, condition, sampling, options.runtime_from(args, progress=False),
                  repeats=args.repeats, evaluator=_evaluator(models["model"]), lpips_model=_lpips(args),
                  progress=not args.no_progress)
    rows, skipped = run_bench(bench, methods, Preparer(bench, calibration))

    scale = sampling.guidance_for(models["model"])
    spacing = f" {sampling.spacing_used}" if sampling.spacing_used else ""
    context = (f"{len(seeds)} seeds, {args.sampler}-{sampling.num_steps}{spacing}, cfg {scale}, {args.repeats} timed "
               f"repeats, device {args.device}, torch {torch.__version__}")
    report = write_report(args.out, rows, skipped, context)
    print(report.text)
    if args.flops:
        print("\n".join(f"{r.method}: {r.macs_per_sample / 1e9:.3f} GMACs per sample" for r in rows))
    print(f"-> {args.out}/{', '.join(report.files)} ({', '.join(report.drawn) or 'no matching rows'})")
    return 0


def _evaluator(model):
    """The digits evaluator, for models that make 16x16 grey images with 10 classes."""
    config = model.config
    if model.task == "c2i" and model.num_classes == 10 and model.in_channels == 1 and config.input_size == 16:
        from ..metrics.digits import DigitsEvaluator

        return DigitsEvaluator.load()
    return None


def _lpips(args):
    if not args.lpips_backbone:
        return None
    from ..metrics.lpips import LPIPS

    return LPIPS.load(args.lpips_backbone, args.lpips_heads, net=args.lpips_net)
