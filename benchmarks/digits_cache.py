"""Skip-Cache on the built-in digits models: speed-up, PSNR to the uncached output, accuracy and FDD.
digits/DiT has no long skips, so it gets only the uncached row, for comparison.

For each model, the uncached run and each cache spec sample the same seeds and labels (balanced
classes) with the same sampler. Speed-ups are uncached seconds ÷ cached seconds, timed in this process.

    python benchmarks/digits_cache.py --samples 500 --caches skip:N=2 skip:N=3 skip:N=4
"""

from __future__ import annotations

import argparse
import json

import torch

from skipdit import Sampling, generate, load
from skipdit.assets import BUILTIN_MODELS
from skipdit.metrics import psnr
from skipdit.metrics.digits import DigitsEvaluator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(BUILTIN_MODELS),
                        help="built-in models; one without long skips gets the uncached row only")
    parser.add_argument("--caches", nargs="+", default=["skip:N=2", "skip:N=3", "skip:N=4"])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--sampler", default="ddpm")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--cfg-scale", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    evaluator = DigitsEvaluator.load()
    seeds = list(range(args.samples))
    labels = [s % 10 for s in seeds]
    sampling = Sampling(sampler=args.sampler, steps=args.steps, guidance_scale=args.cfg_scale)
    print(f"{args.samples} samples, {args.sampler}-{args.steps}, cfg {args.cfg_scale}, "
          f"CPU threads {torch.get_num_threads()}, torch {torch.__version__}")
    print("| model | cache | full / cached steps | ideal | measured | PSNR (dB) | accuracy | FDD |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for name in args.models:
        model = load(name)
        generate(model, seeds[:8], labels[:8], sampling=sampling.replace(steps=5))  # warm-up
        base = generate(model, seeds, labels, sampling=sampling)
        runs = [("none", base)]
        if model.has_long_skips:  # Skip-Cache needs long skips; a vanilla DiT is the uncached reference
            runs += [(spec, generate(model, seeds, labels, sampling=sampling, cache=spec)) for spec in args.caches]
        for spec, out in runs:
            scores = evaluator.evaluate(out.images, labels)
            row = {
                "model": name, "cache": spec, "full": out.stats.full_steps, "cached": out.stats.cached_steps,
                "ideal": out.stats.ideal_speedup, "measured": base.seconds / out.seconds,
                "psnr": psnr(out.images, base.images).mean().item() if spec != "none" else None, **scores,
            }
            rows.append(row)
            db = "—" if row["psnr"] is None else f"{row['psnr']:.1f}"
            print(f"| {name} | `{spec}` | {row['full']} / {row['cached']} | {row['ideal']:.2f}× | "
                  f"{row['measured']:.2f}× | {db} | {100 * row['accuracy']:.1f}% | {row['fdd']:.1f} |", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
