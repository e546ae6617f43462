"""Timing two ways of doing the same work so that their ratio means something.

A single timed run of each is at the mercy of the machine: a cached run timed while another process
starts, or an uncached run timed first and paying one-off costs (allocator growth, kernel selection),
gives a speed-up that moves by tens of percent between two identical commands. So the runs are
*interleaved*: in each round every run goes once, in the same order, so a slow drift of the machine
hits all of them alike; the speed-up is the ratio of the medians, which one outlier round cannot move.
``skipdit sample --compare-uncached`` and ``skipdit bench`` both time this way.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Interleaved(Generic[T]):
    """What :func:`interleaved` measured: the first result of each run and the seconds of every round."""

    first: dict[str, T]
    seconds: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def speedup(self, slow: str, fast: str) -> float:
        """Median seconds of ``slow`` over median seconds of ``fast``."""
        return self.median(slow) / self.median(fast)

    def round_speedups(self, slow: str, fast: str) -> list[float]:
        """The speed-up of each round on its own: their range is the spread of the measurement."""
        return [s / f for s, f in zip(self.seconds[slow], self.seconds[fast])]


def interleaved(runs: Mapping[str, Callable[[], T]], repeats: int, seconds: Callable[[T], float]) -> Interleaved[T]:
    """Call every run ``repeats`` times in rounds (a, b, a, b, ...), recording ``seconds(result)`` of each
    call. Only each run's first result is kept: the runs are meant to be deterministic, so later rounds
    would return the same outputs and only their time is new."""
    if repeats < 1:
        raise UserError(f"repeats must be >= 1, got {repeats}")
    first: dict[str, T] = {}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            result = run()
            first.setdefault(name, result)
            times[name].append(seconds(result))
    return Interleaved(first, times)
