"""Which steps refresh: the interval rule of the official Skip-Cache, computed up front.

The official code keeps a call counter on the model (reference §B.1)::

    full = counter % N == 0 or cache is empty or t >= start_t
    counter += 1
    if t <= stop_t (or t < stop_t):  counter = 0; cache = empty

Simulating it over the run's timesteps gives the same full/cached pattern with no state on the model
and no ``.item()`` per step.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UserError


def interval_schedule(
    timesteps: Sequence[int], interval: int, *, start_t: int | None = None, stop_t: int | None = None,
    stop_inclusive: bool = True,
) -> list[bool]:
    """``True`` where the step is full. ``timesteps`` are original timesteps in sampling order."""
    if interval < 1:
        raise UserError(f"cache interval must be >= 1, got {interval}")
    flags, counter, have_cache = [], 0, False
    for t in timesteps:
        full = counter % interval == 0 or not have_cache or (start_t is not None and t >= start_t)
        flags.append(full)
        have_cache = True
        counter += 1
        if stop_t is not None and (t <= stop_t if stop_inclusive else t < stop_t):
            counter, have_cache = 0, False
    return flags
