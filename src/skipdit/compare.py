"""A cached run against the uncached one: the measured speed-up and the fidelity, in one process.

    comparison = compare_uncached(lambda cache, sampling: generate(model, seeds, cond, sampling=sampling,
                                                                   cache=cache), policy, sampling)
    print("\\n".join(comparison.lines()))

Both runs are warmed up first (two steps at the full batch, so no timed run pays one-off costs), then timed in
``repeats`` interleaved rounds (cached, uncached, cached, ...), so slow drifts of the machine hit both; the
speed-up is the ratio of the median times. The samples are deterministic, so the outputs come from each one's
first timed run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .errors import UserError
from .metrics import psnr
from .sampling import Generation, Sampling
from .timing import Interleaved, interleaved

Runner = Callable[[object, Sampling], Generation]  # (cache policy or None, sampling) -> the run's result


@dataclass
class Comparison:
    """The cached and uncached results, their timings, and the PSNR of each cached sample against its
    uncached twin."""

    cached: Generation
    uncached: Generation
    timed: Interleaved[Generation]
    psnr: torch.Tensor  # (N,) dB

    @property
    def speedup(self) -> float:
        """Uncached median time ÷ cached median time."""
        return self.timed.speedup("uncached", "cached")

    def lines(self) -> list[str]:
        timed = self.timed
        rounds = timed.round_speedups("uncached", "cached")
        spread = f", per round {min(rounds):.2f}x-{max(rounds):.2f}x" if len(rounds) > 1 else ""
        return [
            f"timed {len(rounds)} interleaved rounds after a warm-up: cached median {timed.median('cached'):.2f}s "
            f"({_span(timed.seconds['cached'])}), uncached median {timed.median('uncached'):.2f}s "
            f"({_span(timed.seconds['uncached'])})",
            f"measured speed-up {self.speedup:.2f}x (ratio of medians{spread}; "
            f"ideal {self.cached.stats.ideal_speedup:.2f}x)",
            f"PSNR cached vs uncached: mean {self.psnr.mean():.2f} dB, min {self.psnr.min():.2f} dB",
        ]

    def report(self) -> dict:
        """The numbers for ``run.json``."""
        timed = self.timed
        return {"uncached_seconds": timed.median("uncached"), "cached_seconds": timed.median("cached"),
                "speedup": self.speedup, "repeats": len(timed.round_speedups("uncached", "cached")),
                "timed_seconds": timed.seconds, "round_speedups": timed.round_speedups("uncached", "cached"),
                "psnr": self.psnr.tolist()}


def compare_uncached(run: Runner, policy, sampling: Sampling, repeats: int = 3,
                     warm_up: Sampling | None = None) -> Comparison:
    """``run(cache, sampling)`` with ``policy`` and without a cache: a warm-up of each (``warm_up``, default two
    steps of ``sampling``), then ``repeats`` interleaved timed rounds."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"repeats must be an integer >= 1, got {repeats!r}")
    warm = warm_up or sampling.warm_up()
    for cache in (policy, None):
        run(cache, warm)
    timed = interleaved({"cached": lambda: run(policy, sampling), "uncached": lambda: run(None, sampling)},
                        repeats, lambda result: result.seconds)
    cached, uncached = timed.first["cached"], timed.first["uncached"]
    return Comparison(cached, uncached, timed, psnr(cached.images, uncached.images))


def _span(seconds: Sequence[float]) -> str:
    return f"{min(seconds):.2f}-{max(seconds):.2f}s" if len(seconds) > 1 else f"{seconds[0]:.2f}s"
