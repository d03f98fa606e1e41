"""Side-by-side timing: paths run in turn within each repeat, so load drift hits them alike; medians reported."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["throughput", "interleaved"]


def throughput(step: Callable[[], None], items_per_step: int, steps: int) -> float:
    """Items per second over ``steps`` calls of ``step``.

    Example:
        >>> throughput(lambda: None, items_per_step=8, steps=3) > 0
        True
    """
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return items_per_step * steps / (time.perf_counter() - start)


def interleaved(paths: dict[str, Callable[[], float]], repeats: int) -> dict[str, dict[str, float | list[float]]]:
    """Call every path once per repeat, in turn; return each path's rates and their median.

    Interleaving (A, B, C, A, B, C, ...) instead of timing A three times then B three times keeps a burst
    of load from another process from landing on one path only.

    Args:
        paths: name -> a callable that runs one timed unit and returns its rate (items/s).
        repeats: timed units per path.

    Returns:
        ``{name: {"rates": [...], "median": m}}``.

    Example:
        >>> interleaved({"a": lambda: 2.0, "b": lambda: 1.0}, repeats=3)["a"]["median"]
        2.0
    """
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, run in paths.items():
            rates[name].append(float(run()))
    return {name: {"rates": [round(r, 2) for r in values], "median": round(statistics.median(values), 2)}
            for name, values in rates.items()}
