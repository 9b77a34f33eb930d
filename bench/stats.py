"""Percentiles and small figures shared by the driver and the report."""

from __future__ import annotations

import math
import statistics


def percentile(sorted_values: list[float], p: float) -> float:
    """The nearest-rank percentile ``p`` (0-100) of values sorted ascending; NaN when there are none."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(p / 100.0 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def summarize(latencies_ms: list[float]) -> dict[str, float | int | None]:
    """count, p50/p90/p99/max/mean in milliseconds (None when there is nothing to summarize)."""
    values = sorted(latencies_ms)
    if not values:
        return {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "max_ms": round(values[-1], 3),
        "mean_ms": round(statistics.fmean(values), 3),
    }


def slope(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of y over x; None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    result: float = statistics.linear_regression([x for x, _ in points], [y for _, y in points]).slope
    return result
