"""The shipped deep twins: their bf16 files against the float32 EMA of the runs they came from, their guided
quality (digits evaluator), and a few caches on each (docs/model-zoo.md, docs/benchmarks.md).

    python benchmarks/deep_twins_check.py --runs runs/digits-deep-skip-dit runs/digits-deep-dit
"""

from __future__ import annotations

import argparse

from skipdit import Sampling, generate, load
from skipdit.metrics.digits import DigitsEvaluator
from skipdit.metrics.fidelity import psnr
from skipdit.train import load_run

MODELS = ("digits-deep/Skip-DiT", "digits-deep/DiT")
CACHES = {True: ["c2i:N=2", "skip:N=2", "skip:N=3", "taylor:N=3,order=1", "taylor:N=4,order=2"],
          False: ["deepcache:N=2,b=1", "fora:N=3", "teacache:threshold=0.1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs=2, required=True, help="the run folders of the two models, in MODELS' order")
    parser.add_argument("--seeds", type=int, default=64, help="seeds 0..n-1, labels seed mod 10")
    args = parser.parse_args()
    evaluator = DigitsEvaluator.load()
    seeds = list(range(args.seeds))
    labels = [s % 10 for s in seeds]
    sampling = Sampling(sampler="ddim", steps=50)
    for name, run in zip(MODELS, args.runs):
        shipped, (full, _) = load(name), load_run(run)
        ours = generate(shipped, seeds, labels, sampling=sampling)
        reference = generate(full, seeds, labels, sampling=sampling)
        print(f"{name}: bf16 file vs float32 EMA {psnr(ours.images.float(), reference.images.float()).mean():.1f} dB; "
              f"{evaluator.evaluate(ours.images, labels)}", flush=True)
        for spec in CACHES[shipped.has_long_skips]:
            out = generate(shipped, seeds, labels, sampling=sampling, cache=spec)
            print(f"  {spec:24s} {out.stats.ideal_speedup:.2f}x  "
                  f"{psnr(out.images.float(), ours.images.float()).mean():.2f} dB", flush=True)


if __name__ == "__main__":
    main()
