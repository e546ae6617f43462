"""``skipdit analyze landscape|spectral``: the paper's stability analyses, a model against a baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..analysis import INPUTS, check_settings, compare_landscapes, compare_spectral, landscape_summary, spectral_table
from ..convert import load
from ..distributed import check_device
from ..errors import UserError
from .common import check_out_dir, nonnegative_int
from .help import DEVICE_HELP, MODEL_HELP, examples

EXAMPLES = examples(
    "skipdit analyze landscape --t 500 --grid 21 --radius 0.05 --out analysis/",
    "skipdit analyze spectral --model digits/Skip-DiT --baseline-model digits/DiT --t 500 --iters 20 --out analysis/",
    "skipdit analyze landscape --model skip.safetensors --baseline-model dit.safetensors --inputs trajectory --out a/",
)


def add_parser(sub) -> None:
    analyze = sub.add_parser("analyze", help="stability analyses: perturbation landscape, Jacobian spectral norms")
    actions = analyze.add_subparsers(dest="analyze_command", required=True, metavar="ANALYSIS")
    land = actions.add_parser(
        "landscape", help="feature cosine under a 2-D input perturbation", epilog=EXAMPLES,
    )
    _common(land)
    land.add_argument("--grid", type=int, default=21, help="odd number of alpha (and beta) values in [-1, 1]")
    land.add_argument("--radius", type=float, default=0.05,
                      help="each direction's norm as a fraction of the input's norm")
    land.add_argument("--batch", type=int, default=16, help="inputs averaged over")
    land.set_defaults(run=run_landscape)
    spec = actions.add_parser(
        "spectral", help="sigma_max of each unit's Jacobian by power iteration", epilog=EXAMPLES,
    )
    _common(spec)
    spec.add_argument("--iters", type=int, default=20, help="power iterations per map")
    spec.add_argument("--batch", type=int, default=8, help="inputs averaged over")
    spec.set_defaults(run=run_spectral)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="digits/Skip-DiT", help=MODEL_HELP)
    p.add_argument("--baseline-model", default="digits/DiT", help="the model to compare with, " + MODEL_HELP)
    p.add_argument("--t", type=int, default=500, help="timestep on the 0..999 scale")
    p.add_argument("--inputs", choices=INPUTS, default="noise",
                   help="noise: x_t ~ N(0, I), the same for both models; trajectory: each model's DDIM path to t")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps down to t with --inputs trajectory")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seeds the inputs and the perturbation directions")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help=DEVICE_HELP)
    p.add_argument("--out", default="analysis", help="output folder for the PNG and JSON")


def _models(args, **settings) -> dict:
    """The two models, after every setting, the device and --out are checked (loading and the analysis take a
    while; a bad --grid or an unwritable --out should not wait for them). The numbers are checked by the
    library's own ``check_settings``, so the CLI and a Python user get the same message."""
    names = [args.baseline_model, args.model]
    if names[0] == names[1]:
        raise UserError(f"--model and --baseline-model are both {names[0]}: nothing to compare")
    check_settings(t=args.t, batch=args.batch, inputs=args.inputs, steps=args.steps, **settings)
    check_device(args.device)
    check_out_dir(args.out)
    return {name: load(name).to(args.device) for name in names}


def run_landscape(args) -> int:
    models = _models(args, grid=args.grid, radius=args.radius)
    results = compare_landscapes(models, t=args.t, grid=args.grid, radius=args.radius, batch=args.batch,
                                 seed=args.seed, inputs=args.inputs, steps=args.steps, out_dir=args.out)
    print(landscape_summary(results))
    print(f"wrote {Path(args.out) / 'landscape.json'} and landscape.png")
    return 0


def run_spectral(args) -> int:
    models = _models(args, iters=args.iters)
    results = compare_spectral(models, t=args.t, iters=args.iters, batch=args.batch, seed=args.seed,
                               inputs=args.inputs, steps=args.steps, out_dir=args.out)
    print(spectral_table(results))
    print(f"wrote {Path(args.out) / 'spectral.json'} and spectral.png")
    return 0
