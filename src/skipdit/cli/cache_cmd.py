"""``skipdit cache plan SPEC``: print a cache schedule and its counts without running a model.
``skipdit cache tune``: search the Skip-Cache schedule with the best fidelity at a target speed-up.
``skipdit cache calibrate-teacache``: fit TeaCache's polynomial for a model.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..assets import BUILTIN_MODELS
from ..cache import TeaCache
from ..cache.families import plan_offline
from ..errors import UserError
from ..io import parse_int_list
from ..savings import warn_if_saves_nothing
from ..tuning import DEFAULT_ORDERS, FAMILIES, SELECTIONS, calibrate_teacache, tune
from . import options
from .common import MAX_SEEDS, check_out_file, finite_float, nonnegative_float, positive_int
from .help import examples

EXAMPLES = examples(
    "skipdit cache plan c2i:N=2 --sampler ddpm --steps 250",
    "skipdit cache plan t2v:N2-700-50                      # official DDIM-50 timesteps 980..0",
    "skipdit cache plan skip:N=3,b=1,start=700,stop<50 --respacing ddim50 --units 28",
    "skipdit cache plan skip:N=2 --sampler dpm++2m --steps 20          # DPM-Solver++ timesteps 999, 949, ..., 50",
)

TUNE_EXAMPLES = examples(
    "skipdit cache tune --model digits/Skip-DiT --target-speedup 2.0 --sampler ddim --steps 50",
    'skipdit sample --sampler ddim --steps 50 --cache "$(skipdit cache tune --target-speedup 2.0 --sampler ddim '
    '--steps 50 --no-progress | tail -1)"',
    "skipdit cache tune --ckpt DiT-XL-2-skip.pt --vae sd-vae-ft-ema/ --target-speedup 1.8 --seeds 0-3 "
    "--class-labels 207,360 --sampler ddpm --steps 250 --cfg-scale 4 --json tune.json",
    "skipdit cache tune --family taylor --masks --target-speedup 1.5 --tolerance 0 --select spread "
    "--max-candidates 40   # the Pareto front of forecasting schedules",
)

CALIBRATE_EXAMPLES = examples(
    "skipdit cache calibrate-teacache --model digits/DiT --sampler ddim --steps 50",
    'skipdit sample --model digits/DiT --sampler ddim --steps 50 --cache "$(skipdit cache calibrate-teacache '
    '--model digits/DiT --sampler ddim --steps 50 | tail -1)"',
)


MAX_SEARCH = 1000  # most values of --intervals / --branches: a model has far fewer steps and units


def add_parser(sub) -> None:
    cache = sub.add_parser("cache", help="plan, tune and calibrate cache schedules")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    p = cache_sub.add_parser(
        "plan", help="print the per-step plan of a cache spec", epilog=EXAMPLES,
    )
    p.add_argument("spec", help="cache spec, e.g. c2i:N=2, t2v:N2-700-50, skip:N=3,b=1,start=700,stop=50")
    options.add_sampler_arguments(p, default="ddpm", steps_type=positive_int,
                                  steps_help="steps (ddpm, ddim: default the preset's official sampler)")
    p.add_argument("--respacing", help="ddpm, ddim: respacing spec: '250', 'ddim50', 'leading100+1', '10,20,30'")
    p.add_argument("--units", type=int, help="units L of the model (default: the preset's official model)")
    p.add_argument("--summary", action="store_true", help="print only the counts")
    p.set_defaults(run=run)

    t = cache_sub.add_parser(
        "tune", help="search the Skip-Cache schedule with the best fidelity at a target speed-up",
        description="Rank Skip-Cache schedules (N, b, start, stop; with --family taylor also the forecast order "
        "and, with --masks, per-step masks) that reach --target-speedup (ideal, from the plan) by PSNR against the "
        "uncached run on calibration seeds, and print the Pareto front of those sampled. The last line is the best "
        "spec.",
        epilog=TUNE_EXAMPLES,
    )
    options.add_model_arguments(t)
    options.add_sampling_arguments(t)
    g = t.add_argument_group("search")
    g.add_argument("--target-speedup", type=finite_float, required=True, help="ideal speed-up to reach, e.g. 2.0")
    g.add_argument("--tolerance", type=finite_float, default=0.05,
                   help="accept ideal speed-ups down to target x (1 - tolerance)")
    g.add_argument("--family", choices=FAMILIES, default="skip",
                   help="the schedules searched: Skip-Cache and its presets (their windows), or taylor, the "
                   "forecasting Skip-Cache (default: skip)")
    g.add_argument("--orders", help="--family taylor: forecast orders to try (default: 0-2)")
    g.add_argument("--masks", action="store_true",
                   help="--family taylor: also per-step masks whose full steps thin out (or thicken) over sampling, "
                   "with and without whole-step reuse")
    g.add_argument("--select", choices=SELECTIONS, default="closest",
                   help="which of the reachable schedules to sample: closest to the target, or spread over the "
                   "speed-ups (for the Pareto front)")
    g.add_argument("--intervals", default="2-8", help="intervals N to try (and the gaps of --masks)")
    g.add_argument("--branches", help="branch depths b to try (default 1..L/2, at most 4 values)")
    g.add_argument("--max-candidates", type=positive_int, default=24,
                   help="most schedules to sample, those closest to the target first")
    g.add_argument("--top", type=positive_int, default=10, help="rows of the printed table")
    g.add_argument("--json", help="write every evaluated row to this JSON file")
    options.add_runtime_arguments(t)
    _set_default(t, "seeds", "1000-1007", "calibration seeds (default 1000-1007, apart from the evaluation seeds "
                 "0-63 of skipdit bench)")
    t.set_defaults(run=run_tune)

    c = cache_sub.add_parser(
        "calibrate-teacache", help="fit TeaCache's polynomial for a model",
        description="Fit TeaCache's rescaling polynomial on uncached runs of a few seeds. The last line is a "
        "ready teacache spec.", epilog=CALIBRATE_EXAMPLES,
    )
    options.add_model_arguments(c)
    options.add_sampling_arguments(c)
    _set_default(c, "seeds", "0-3", "seeds, e.g. 0-3,10")
    g = c.add_argument_group("fit")
    g.add_argument("--degree", type=positive_int, default=4, help="polynomial degree")
    g.add_argument("--threshold", type=nonnegative_float, default=0.1, help="threshold written into the spec")
    options.add_runtime_arguments(c)
    c.set_defaults(run=run_calibrate)


def _set_default(parser, dest: str, value: str, help: str) -> None:
    """Change the default (and its help text) of an argument added by a shared helper."""
    parser.set_defaults(**{dest: value})
    for action in parser._actions:  # argparse has no public accessor for one action
        if action.dest == dest:
            action.help = help


def run(args) -> int:
    if args.units is not None and args.units < 2:
        raise UserError(f"--units must be >= 2, got {args.units}")
    offline = plan_offline(args.spec, args.units, args.respacing, sampler=args.sampler, steps=args.steps,
                           spacing=args.spacing)
    if not args.summary:
        print(f"{'step':>4}  {'t':>4}  {'action':<6}  units")
        for k, step in enumerate(offline.steps):
            ranges = " ".join(f"{a}-{b - 1}" for a, b in step.units)
            print(f"{k:>4}  {step.t:>4}  {'full' if step.full else 'cached':<6}  {step.num_units:>3}  [{ranges}]")
    stats, units = offline.stats, offline.units
    print(f"{offline.policy.spec()}  ({len(offline.timesteps)} steps, {offline.step_list}, {units} units)")
    unguided = (f"; {stats.unguided_steps} steps run the conditional branch alone (with guidance on, they halve)"
                if stats.unguided_steps else "")
    print(f"full {stats.full_steps} / cached {stats.cached_steps}; unit evaluations {stats.unit_evals} "
          f"of {stats.steps * units}{unguided}; ideal speed-up {stats.ideal_speedup:.2f}x")
    warn_if_saves_nothing(args.spec, stats, offline.policy)
    return 0


def _load(args):
    """The model, the calibration seeds, their condition and the sampling settings, as ``skipdit sample`` makes
    them. ``--model`` may name a built-in model (``digits/Skip-DiT``) as a short form of ``--ckpt``."""
    if args.cache is not None:
        raise UserError(f"--cache is not used by cache {args.cache_command}")
    if args.task == "t2i" or args.model_dir:
        raise UserError(f"cache {args.cache_command} runs skipdit's own models (c2i, c2v, t2v), not --model-dir")
    if args.model in BUILTIN_MODELS and not args.ckpt and not args.random_weights:
        args.ckpt, args.model = args.model, None
    seeds = parse_int_list(args.seeds, "seeds", limit=MAX_SEEDS)
    settings = options.load_settings(args, len(seeds))
    return settings.loaded.model, seeds, settings.condition, dict(sampling=settings.sampling, runtime=settings.runtime)


def run_tune(args) -> int:
    intervals = parse_int_list(args.intervals, "intervals", limit=MAX_SEARCH)
    branches = parse_int_list(args.branches, "branches", limit=MAX_SEARCH) if args.branches else None
    if args.family != "taylor" and (args.masks or args.orders is not None):
        raise UserError("--orders and --masks search the forecasting family: add --family taylor")
    orders = DEFAULT_ORDERS if args.orders is None else parse_int_list(args.orders, "orders", limit=MAX_SEARCH)
    if args.json is not None:  # before the search, which samples for minutes
        check_out_file(args.json, "--json")
    model, seeds, condition, settings = _load(args)
    sampling = settings["sampling"]
    result = tune(model, args.target_speedup, seeds, condition, family=args.family, intervals=intervals,
                  branches=branches, orders=orders, masks=args.masks, tolerance=args.tolerance,
                  max_candidates=args.max_candidates, select=args.select, progress=not args.no_progress, **settings)
    evaluated = len(result.candidates)
    floor = args.target_speedup * (1 - args.tolerance)
    print(f"{result.considered} schedules; {result.reachable} distinct plans reach {floor:.2f}x ideal "
          f"({result.duplicates} duplicate plans dropped); {evaluated} sampled on {len(seeds)} seeds "
          f"({sampling.sampler}, {sampling.num_steps} steps)")
    _print_candidates(list(enumerate(result.candidates[:args.top], 1)), "rank")
    print(f"Pareto front of the {evaluated} sampled (ideal speed-up against PSNR), fastest first:")
    _print_candidates(list(enumerate(result.pareto, 1)), "")
    best = result.best
    print(f"best: ideal {best.ideal_speedup:.2f}x, measured {result.measured_speedup:.2f}x "
          f"(uncached {result.uncached_seconds:.2f}s, cached {best.seconds:.2f}s), PSNR {best.psnr:.2f} dB")
    if args.json:
        report = {"target_speedup": args.target_speedup, "tolerance": args.tolerance, "seeds": seeds,
                  "sampler": sampling.sampler, "steps": sampling.num_steps, "respacing": sampling.respacing,
                  "uncached_seconds": result.uncached_seconds, "considered": result.considered,
                  "reachable": result.reachable, "duplicates": result.duplicates,
                  "family": args.family, "best": best.spec, "rows": [c.row() for c in result.candidates],
                  "pareto": [c.spec for c in result.pareto]}
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(best.spec)
    return 0


def _print_candidates(numbered, title: str) -> None:
    width = max([36, *(len(c.spec) for _, c in numbered)])
    print(f"{title:>4}  {'spec':<{width}} {'ideal':>6} {'measured':>8} {'PSNR':>7} {'SSIM':>6}")
    for rank, cand in numbered:
        score = "-" if cand.ssim is None else f"{cand.ssim:.4f}"
        print(f"{rank:>4}  {cand.spec:<{width}} {cand.ideal_speedup:>5.2f}x {cand.measured_speedup:>7.2f}x "
              f"{cand.psnr:>7.2f} {score:>6}")


def run_calibrate(args) -> int:
    model, seeds, condition, settings = _load(args)
    coefficients, fit = calibrate_teacache(model, seeds, condition, degree=args.degree, **settings)
    sampling = settings["sampling"]
    print(f"fit on {fit['pairs']} step pairs ({len(seeds)} seeds, {sampling.sampler}, {sampling.num_steps} "
          f"steps): R² = {fit['r2']:.4f}")
    print("coefficients (highest degree first): " + ", ".join(f"{c:.6g}" for c in coefficients))
    print(TeaCache(threshold=args.threshold, coefficients=coefficients).spec())
    return 0
