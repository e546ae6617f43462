"""``skipdit cache plan SPEC``: print a cache schedule and its counts without running a model."""

from __future__ import annotations

import argparse

from ..cache import CacheStats, official_setting, parse_cache
from ..diffusion import space_timesteps

EXAMPLES = """examples:
  skipdit cache plan c2i:N=2 --sampler ddpm --steps 250
  skipdit cache plan t2v:N2-700-50                      # official DDIM-50 timesteps 980..0
  skipdit cache plan skip:N=3,b=1,start=700,stop<50 --respacing ddim50 --units 28
"""


def add_parser(sub) -> None:
    cache = sub.add_parser("cache", help="inspect cache schedules")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    p = cache_sub.add_parser(
        "plan", help="print the per-step plan of a cache spec", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", help="cache spec, e.g. c2i:N=2, t2v:N2-700-50, skip:N=3,b=1,start=700,stop=50")
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm",
                   help="sampler (timesteps follow --steps / --respacing)")
    p.add_argument("--steps", type=int, help="respaced steps; default: the preset's official sampler")
    p.add_argument("--respacing", help="respacing spec: '250', 'ddim50', 'leading100+1', '10,20,30'")
    p.add_argument("--units", type=int, help="units L of the model (default: the preset's official model)")
    p.add_argument("--summary", action="store_true", help="print only the counts")
    p.set_defaults(run=run)


def run(args) -> int:
    policy = parse_cache(args.spec)
    if policy is None:
        raise ValueError("no cache: nothing to plan")
    units, respacing = official_setting(policy)
    units = args.units or units
    if args.respacing:
        respacing = args.respacing
    elif args.steps:
        respacing = str(args.steps)
    if units < 2:
        raise ValueError(f"--units must be >= 2, got {units}")
    timesteps = space_timesteps(1000, respacing)[::-1]
    policy.check_units(units)
    plan = policy.plan(timesteps, units)
    if not args.summary:
        print(f"{'step':>4}  {'t':>4}  {'action':<6}  units")
        for k, step in enumerate(plan):
            ranges = " ".join(f"{a}-{b - 1}" for a, b in step.units)
            print(f"{k:>4}  {step.t:>4}  {'full' if step.full else 'cached':<6}  {step.num_units:>3}  [{ranges}]")
    stats = CacheStats.from_plan(plan, units)
    print(f"{policy.spec()}  ({len(timesteps)} steps, respacing {respacing!r}, {units} units)")
    print(f"full {stats.full_steps} / cached {stats.cached_steps}; unit evaluations {stats.unit_evals} "
          f"of {stats.steps * units}; ideal speed-up {stats.ideal_speedup:.2f}x")
    return 0
