"""Wall-clock speed-up of the Skip-Cache presets over the uncached model, measured in one process.

The model is DiT-XL/2-skip (28 blocks, hidden 1152, 256 tokens) with random weights. Each run samples
one class label with batched classifier-free guidance, so the model sees batch 2, as in the paper's
latency protocol (reference §E.3). Every preset is applied to the same model; only its schedule
differs. For each repeat the uncached model runs first, then every preset, and each speed-up is the
uncached time of that repeat divided by the cached time. The table gives, per preset, the median
measured speed-up, the ideal one (unit evaluations saved, ``CacheStats.ideal_speedup``), their ratio,
and the PSNR of the cached output against the uncached one (random weights: a sanity number only).
Times are those of the denoising loop (``Generation.seconds``); there is no VAE.

    python benchmarks/skip_cache_speed.py                                   # DDPM-250, every preset
    python benchmarks/skip_cache_speed.py --device cpu --steps 50 --threads 2 --json out.json
    python benchmarks/skip_cache_speed.py --precision bf16 --compile --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

import skipdit
from skipdit.metrics import psnr
from skipdit.models.random import randomize_

MODEL = "DiT-XL/2-skip"
PRESETS = ("c2i:N=2", "c2i:N=3", "c2i:N=4", "c2i:N=5", "c2v:N=2", "t2v:N2-700-50", "t2i:N=2")
SEED, LABEL, CFG_SCALE = 0, 207, 1.5  # one seed with batched CFG -> model batch 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--steps", type=int, default=250, help="respaced steps (official c2i: DDPM-250)")
    parser.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated cache specs")
    parser.add_argument("--compile", action="store_true", help="torch.compile each block")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    return parser.parse_args()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def run(model, args: argparse.Namespace, cache: str | None, steps: int | None = None) -> skipdit.Generation:
    return skipdit.generate(
        model, seeds=[SEED], condition=[LABEL], cache=cache,
        sampling=skipdit.Sampling(sampler=args.sampler, steps=steps or args.steps, guidance_scale=CFG_SCALE),
        runtime=skipdit.Runtime(device=args.device, precision=args.precision, compile=args.compile),
    )


def measure(model, args: argparse.Namespace, presets: list[str]) -> tuple[list[float], list[dict]]:
    """Interleaved runs: per repeat, uncached then every preset. Returns the uncached times and one
    row per preset."""
    run(model, args, None, steps=2)  # warm-up (allocator, kernels, compilation)
    uncached_times = []
    rows = [{"preset": spec, "seconds": [], "speedups": []} for spec in presets]
    for repeat in range(args.repeats):
        reference = run(model, args, None)
        uncached_times.append(reference.seconds)
        print(f"repeat {repeat + 1}/{args.repeats}: uncached {reference.seconds:.2f} s", flush=True)
        for row in rows:
            out = run(model, args, row["preset"])
            row["seconds"].append(out.seconds)
            row["speedups"].append(reference.seconds / out.seconds)
            row.update(
                cache=out.cache, full_steps=out.stats.full_steps, cached_steps=out.stats.cached_steps,
                ideal=out.stats.ideal_speedup, psnr=psnr(out.images, reference.images).mean().item(),
            )
            print(f"  {row['preset']}: {out.seconds:.2f} s, x{row['speedups'][-1]:.3f}", flush=True)
    for row in rows:
        row["measured"] = statistics.median(row["speedups"])
        row["ratio"] = row["measured"] / row["ideal"]
    return uncached_times, rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| preset | full / cached steps | cached s (median) | ideal speed-up | measured speed-up "
        "| measured / ideal | PSNR vs uncached (dB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        seconds = statistics.median(r["seconds"])
        lines.append(
            f"| `{r['preset']}` | {r['full_steps']} / {r['cached_steps']} | {seconds:.2f} "
            f"| {r['ideal']:.3f}x | {r['measured']:.3f}x | {r['ratio']:.3f} | {r['psnr']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    device = torch.device(args.device)
    torch.manual_seed(0)  # build_model initialises from the global RNG; randomize_ then adds seeded noise
    model = randomize_(skipdit.build_model(MODEL)).eval()
    setup = {
        "model": MODEL, "device": device_name(device), "torch": torch.__version__,
        "precision": args.precision, "sampler": args.sampler, "steps": args.steps, "repeats": args.repeats,
        "compile": args.compile, "batch": 2, "cfg_scale": CFG_SCALE,
    }
    print(", ".join(f"{k}: {v}" for k, v in setup.items()), flush=True)

    tic = time.perf_counter()
    uncached_times, rows = measure(model, args, presets)
    total = time.perf_counter() - tic

    print(f"\nuncached: {statistics.median(uncached_times):.2f} s (median of {args.repeats}); "
          f"benchmark wall time {total / 60:.1f} min\n")
    print(markdown_table(rows))
    if args.json:
        results = {**setup, "uncached_seconds": uncached_times, "wall_seconds": total, "presets": rows}
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
