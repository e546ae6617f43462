"""Skip-Cache on the built-in video models: speed-up, PSNR to the uncached output, and whether the
videos show the right digit moving the right way (:mod:`skipdit.metrics.moving_digits`).

* ``moving-digits/Latte-T2V-skip`` gets one prompt per digit x motion ("the digit 7 moves up", ...),
  ``--repeats`` seeds each; digit and motion accuracy are against the prompt.
* ``moving-digits/Latte-skip`` gets the same number of seeds with balanced class labels; its motion is
  free, so the table gives digit accuracy and the share of videos whose digit travels at least 5 pixels
  along one axis (7 for every real video).

The uncached run and each cache spec sample the same seeds with the same sampler, in this process, one
after the other, after a warm-up at the full batch; the uncached run is repeated at the end, and speed-ups
are the faster uncached time / cached seconds. Times are the denoising loops only.

    python benchmarks/video_cache.py --repeats 1 --json docs/figures/video-cache.json
    python benchmarks/video_cache.py --score-only --models runs/moving-digits-latte-t2v-skip/checkpoints/ckpt-0009800.pt
"""

from __future__ import annotations

import argparse
import json

import torch

from skipdit import Condition, Sampling, generate, load
from skipdit.convert.checkpoint import stored_text_encoder
from skipdit.datasets import MOTIONS, caption
from skipdit.metrics import moving_digits as md
from skipdit.metrics import psnr
from skipdit.text import load_text_encoder

MODELS = ["moving-digits/Latte-T2V-skip", "moving-digits/Latte-skip"]
# the official presets of each task (reference §B.2) and their samplers (§C), by the model's conditioning
CACHES = {
    "text": ["t2v:N2-700-50", "t2v:N3-700-50", "t2v:N4-700-50"],
    "class": ["c2v:N=2", "c2v:N=3", "c2v:N=4"],
}
SAMPLERS = {"text": ("ddim", 50), "class": ("ddpm", 250)}


def travelled(videos: torch.Tensor) -> torch.Tensor:
    """Share of videos whose centre of mass moves >= 5 px along one axis and < 2 px along the other."""
    shift = (md.centres_of_mass(videos)[:, -1] - md.centres_of_mass(videos)[:, 0]).abs()
    big, small = shift.max(dim=1).values, shift.min(dim=1).values
    return ((big >= 5) & (small < 2)).float().mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS, help="built-in names or weight files")
    parser.add_argument("--repeats", type=int, default=1, help="seeds per prompt (t2v) / per class x 4 (c2v)")
    parser.add_argument("--sampler", help="default: the task's official sampler (t2v DDIM-50, c2v DDPM-250)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--cfg-scale", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--score-only", action="store_true",
                        help="only the uncached run's digit and motion scores (e.g. of a training checkpoint)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = [(d, m) for d in range(10) for m in range(len(MOTIONS))] * args.repeats  # 40 per repeat
    seeds = list(range(len(pairs)))
    digits = [d for d, _ in pairs]
    moves = [m for _, m in pairs]
    print(f"{len(seeds)} videos per run, cfg {args.cfg_scale}, CPU threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}")
    print("| model | sampler | cache | full / cached steps | ideal | measured | PSNR (dB) | digit | motion |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in args.models:
        model = load(name)
        sampler, steps = SAMPLERS[model.conditioning]
        sampling = Sampling(sampler=args.sampler or sampler, steps=args.steps or steps, guidance_scale=args.cfg_scale)
        if model.conditioning == "text":
            text = stored_text_encoder(name) or {}
            encoder = load_text_encoder(text.get("name"), max_length=text.get("max_length"))
            condition = Condition(prompts=[caption(d, m) for d, m in pairs], text_encoder=encoder)
        else:
            condition = Condition(labels=digits)
        generate(model, seeds, condition, sampling=sampling.replace(steps=2))  # warm-up at the full batch
        base = generate(model, seeds, condition, sampling=sampling)
        specs = [] if args.score_only else CACHES[model.conditioning]
        runs = [("none", base)] + [(spec, generate(model, seeds, condition, sampling=sampling, cache=spec))
                                   for spec in specs]
        base_seconds = base.seconds
        if specs:  # uncached once more, after the cached runs; the faster one: speed-ups err low
            base_seconds = min(base_seconds, generate(model, seeds, condition, sampling=sampling).seconds)
        for spec, out in runs:
            scores = md.score(out.images, digits, moves if model.conditioning == "text" else None)
            motion = scores.get("motion_accuracy", travelled(out.images).item())
            row = {
                "model": name, "sampler": f"{sampling.sampler}-{sampling.num_steps}", "cache": spec,
                "full": out.stats.full_steps, "cached": out.stats.cached_steps,
                "ideal": out.stats.ideal_speedup, "measured": base_seconds / out.seconds,
                "psnr": psnr(out.images, base.images).mean().item() if spec != "none" else None,
                "digit_accuracy": scores["digit_accuracy"], "motion": motion,
                "motion_metric": "accuracy" if "motion_accuracy" in scores else "travelled >= 5 px",
            }
            rows.append(row)
            db = "—" if row["psnr"] is None else f"{row['psnr']:.1f}"
            print(f"| {name} | {row['sampler']} | `{spec}` | {row['full']} / {row['cached']} | {row['ideal']:.2f}× | "
                  f"{row['measured']:.2f}× | {db} | {100 * row['digit_accuracy']:.0f}% | {100 * motion:.0f}% |",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
