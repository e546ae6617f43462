"""Training curves of the built-in digits models: class accuracy and FDD of EMA samples at each snapshot.

The small-scale version of the paper's training-acceleration claim (reference §D.2): with the same size,
recipe, data order, noise and seed, does Skip-DiT reach a given FDD in fewer steps than DiT?

    skipdit train --config configs/digits/skip-dit.yaml
    skipdit train --config configs/digits/dit.yaml
    python benchmarks/digits_curves.py --runs runs/digits-dit runs/digits-skip-dit --out docs/figures/digits-curves

Writes ``<out>.json``, ``<out>.md`` (the table) and ``<out>.png`` (the plot).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from skipdit import Runtime, Sampling, generate
from skipdit.metrics.digits import DigitsEvaluator
from skipdit.train import load_run
from skipdit.train.checkpoint import list_checkpoints


def evaluate_run(run_dir: Path, evaluator: DigitsEvaluator, args) -> list[dict]:
    seeds = list(range(args.samples))
    labels = [s % 10 for s in seeds]
    rows = []
    for step, _ in list_checkpoints(run_dir):
        if step % args.every:
            continue
        model, _ = load_run(run_dir, step)
        out = generate(model, seeds, labels,
                       sampling=Sampling(sampler=args.sampler, steps=args.steps, guidance_scale=args.cfg_scale),
                       runtime=Runtime(batch_size=args.batch_size))
        scores = evaluator.evaluate(out.images, labels)  # uint8, as saved
        rows.append({"step": step, **scores})
        print(f"{run_dir.name} step {step}: accuracy {scores['accuracy']:.3f}, FDD {scores['fdd']:.2f}", flush=True)
    return rows


def first_step_below(rows: list[dict], threshold: float) -> int | None:
    return next((r["step"] for r in rows if r["fdd"] <= threshold), None)


def write_table(results: dict[str, list[dict]], path: Path) -> None:
    names = list(results)
    steps = sorted({r["step"] for rows in results.values() for r in rows})
    by_step = {n: {r["step"]: r for r in rows} for n, rows in results.items()}
    head = "| step | " + " | ".join(f"{n} FDD ↓ | {n} accuracy ↑" for n in names) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(names))]
    for step in steps:
        cells = []
        for n in names:
            r = by_step[n].get(step)
            cells += [f"{r['fdd']:.2f}", f"{r['accuracy']:.3f}"] if r else ["", ""]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_fdd, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, rows in results.items():
        steps = [r["step"] for r in rows]
        ax_fdd.plot(steps, [r["fdd"] for r in rows], marker="o", label=name)
        ax_acc.plot(steps, [100 * r["accuracy"] for r in rows], marker="o", label=name)
    ax_fdd.set(xlabel="training step", ylabel="FDD (lower is better)", yscale="log", title="Fréchet digits distance")
    ax_acc.set(xlabel="training step", ylabel="class accuracy (%)", title="samples classified as their label")
    for ax in (ax_fdd, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="run folders of skipdit train")
    parser.add_argument("--out", default="docs/figures/digits-curves", help="output path without extension")
    parser.add_argument("--every", type=int, default=500, help="evaluate checkpoints at multiples of this step")
    parser.add_argument("--samples", type=int, default=1000, help="samples per checkpoint (balanced classes)")
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cfg-scale", type=float, default=1.0, help="1 = no guidance, as FID curves are drawn")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    evaluator = DigitsEvaluator.load()
    results = {}
    for run in map(Path, args.runs):
        model, _ = load_run(run)
        name = "Skip-DiT" if model.has_long_skips else "DiT"
        results[name] = evaluate_run(run, evaluator, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("samples", "sampler", "steps", "cfg_scale")}
    summary = {}
    if {"DiT", "Skip-DiT"} <= results.keys() and results["DiT"]:
        target = results["DiT"][-1]["fdd"]  # DiT's final FDD: when does Skip-DiT first reach it?
        summary = {"dit_final_step": results["DiT"][-1]["step"], "dit_final_fdd": target,
                   "skip_dit_first_step_at_or_below": first_step_below(results["Skip-DiT"], target)}
    out.with_suffix(".json").write_text(json.dumps({"settings": settings, "results": results, "summary": summary},
                                                   indent=1))
    write_table(results, out.with_suffix(".md"))
    plot(results, out.with_suffix(".png"))
    print(json.dumps(summary))
    print(f"wrote {out}.json, .md, .png")


if __name__ == "__main__":
    main()
