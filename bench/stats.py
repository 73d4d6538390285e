"""Small statistics and formatting helpers shared by the benchmark scripts."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (``q`` in 0-100); 0 when empty."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[k])


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of ``values`` (seconds in, seconds out)."""
    s = sorted(values)
    return {
        "p50": percentile(s, 50),
        "p90": percentile(s, 90),
        "p99": percentile(s, 99),
        "max": float(s[-1]) if s else 0.0,
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def fmt_duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fmt_rate(per_s: float) -> str:
    return f"{per_s / 1000:.1f} k/s" if per_s >= 10_000 else f"{per_s:.0f} /s"


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"
