"""How the benchmarks time a call: one warm-up call first (oneDNN picks and caches its kernels,
a pipeline caches the prompt's text states), then the median of `repeats` timed calls, so one
slow call (another process waking) does not move the figure."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of fn() over `repeats` calls, after one untimed warm-up call."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
