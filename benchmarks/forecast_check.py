"""The forecasting Skip-Cache against Skip-Cache at equal work, on a built-in model and several samplers: the
ideal speed-up and the PSNR against the same sampler uncached (docs/caches.md, docs/benchmarks.md).

    python benchmarks/forecast_check.py                                   # digits/Skip-DiT: ddim 50, dpm++2m 20
    python benchmarks/forecast_check.py --samplers heun:10 --seeds 4      # the Heun figures
"""

from __future__ import annotations

import argparse

from skipdit import Sampling, generate, load
from skipdit.metrics.fidelity import psnr

SPECS = ["skip:N=2", "taylor:N=2,order=0", "taylor:N=2,order=1", "taylor:N=2,order=2", "skip:N=3",
         "taylor:N=3,order=1", "taylor:N=3,order=2", "taylor:N=3,order=1,correct=0.5", "taylor:N=3,order=1,correct=1",
         "skip:N=4", "taylor:N=4,order=1", "taylor:N=4,order=2", "skip:N=5", "taylor:N=5,order=1", "taylor:N=5,order=2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digits/Skip-DiT")
    parser.add_argument("--samplers", nargs="+", default=["ddim:50", "dpm++2m:20"], help="SAMPLER:STEPS")
    parser.add_argument("--seeds", type=int, default=32, help="seeds 0..n-1, labels seed mod 10")
    parser.add_argument("--specs", nargs="+", default=SPECS)
    args = parser.parse_args()
    model = load(args.model)
    seeds = list(range(args.seeds))
    labels = [s % 10 for s in seeds]
    for item in args.samplers:
        sampler, _, steps = item.partition(":")
        sampling = Sampling(sampler=sampler, steps=int(steps))
        base = generate(model, seeds, labels, sampling=sampling).images
        print(f"{sampler} {steps} steps, {len(seeds)} seeds")
        for spec in args.specs:
            out = generate(model, seeds, labels, sampling=sampling, cache=spec)
            value = psnr(out.images.float(), base.float()).mean().item()
            print(f"  {spec:34s} {out.stats.ideal_speedup:.2f}x  {value:.2f} dB", flush=True)


if __name__ == "__main__":
    main()
