"""Skip-Cache on the modern samplers: ideal and measured speed-up, and PSNR against the uncached run.

For each sampler, ``digits/Skip-DiT`` samples the same seeds (labels seed mod 10, guidance 4) without a cache and
with each cache spec, on the sampler's own timesteps (the cache plans on them). "ideal" is the run's
CacheStats.ideal_speedup, block evaluations without ÷ with the cache counted once per sampler step; "per call"
counts them per model call, which differs for Heun (two calls per step, but one on the step into σ = 0). The
measured speed-up is the ratio of median times over interleaved timed rounds after a warm-up, as
``skipdit sample --compare-uncached`` measures it (skipdit.compare). Accuracy is the built-in digits classifier's,
on the cached samples (on the uncached ones in parentheses).

    python benchmarks/samplers.py                                  # dpm++2m, unipc, euler, heun at 20 steps
    python benchmarks/samplers.py --samplers dpm++2m euler --steps 10 20 50 --caches skip:N=2 skip:N=3
"""

from __future__ import annotations

import argparse

import torch

from skipdit import Condition, Runtime, Sampling, generate, load, parse_cache
from skipdit.compare import compare_uncached
from skipdit.metrics.digits import DigitsEvaluator


def ideal_per_call(policy, sampler, units: int) -> float | None:
    """Block evaluations without ÷ with the cache, each step weighted by its model calls (static plans only)."""
    if policy.decides_at_run_time:
        return None
    plan = policy.plan(sampler.cache_timesteps(), units)
    calls = sampler.calls_per_step
    return sum(calls) * units / sum(c * step.num_units for c, step in zip(calls, plan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digits/Skip-DiT")
    parser.add_argument("--samplers", nargs="+", default=["dpm++2m", "unipc", "euler", "heun"])
    parser.add_argument("--steps", type=int, nargs="+", default=[20])
    parser.add_argument("--spacing", help="step list of every sampler (default: each one's, linspace)")
    parser.add_argument("--caches", nargs="+", default=["skip:N=2"])
    parser.add_argument("--seeds", type=int, default=16, help="seeds 0..N-1")
    parser.add_argument("--cfg-scale", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(args.model)
    seeds = list(range(args.seeds))
    condition = Condition(labels=[s % 10 for s in seeds])
    runtime = Runtime(device="cpu")
    evaluator = DigitsEvaluator.load()
    print(f"{args.model}, seeds 0-{args.seeds - 1}, cfg {args.cfg_scale}, {args.repeats} timed rounds, "
          f"CPU threads {torch.get_num_threads()}, torch {torch.__version__}")
    print()
    print("| sampler | steps | spacing | model calls | cache | full / cached steps | ideal | ideal per call | "
          "measured | PSNR mean (min) dB | accuracy (uncached) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.samplers:
        for steps in args.steps:
            sampling = Sampling(sampler=name, steps=steps, spacing=args.spacing, guidance_scale=args.cfg_scale)
            sampler = sampling.make_sampler(model)
            for spec in args.caches:
                policy = parse_cache(spec)
                per_call = ideal_per_call(policy, sampler, model.num_units)
                comparison = compare_uncached(
                    lambda cache, s: generate(model, seeds, condition, sampling=s, runtime=runtime, cache=cache),
                    policy, sampling, repeats=args.repeats)
                stats = comparison.cached.stats
                cached_acc = evaluator.evaluate(comparison.cached.images, condition.labels)["accuracy"]
                base_acc = evaluator.evaluate(comparison.uncached.images, condition.labels)["accuracy"]
                print(f"| {name} | {steps} | {sampling.spacing_used or '—'} | {sampler.model_calls} | "
                      f"{policy.spec()} | "
                      f"{stats.full_steps} / {stats.cached_steps} | {stats.ideal_speedup:.2f}x | "
                      f"{'—' if per_call is None else f'{per_call:.2f}x'} | "
                      f"{comparison.speedup:.2f}x | {comparison.psnr.mean():.1f} ({comparison.psnr.min():.1f}) | "
                      f"{cached_acc:.3f} ({base_acc:.3f}) |", flush=True)


if __name__ == "__main__":
    main()
