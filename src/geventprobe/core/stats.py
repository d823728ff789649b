"""Percentiles and histograms of recorded samples (nearest rank, never averages of averages)."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence

from geventprobe.record import LatencySummary

# Eight buckets per power of two: about 9% wide, enough to draw a distribution.
_BUCKETS_PER_OCTAVE = 8


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def summarize(samples: Sequence[float]) -> LatencySummary:
    """Count, p50/p90/p99, max and mean of ``samples``."""
    values = sorted(samples)
    if not values:
        return LatencySummary(0, None, None, None, None, None)
    return LatencySummary(
        count=len(values),
        p50_us=percentile(values, 50),
        p90_us=percentile(values, 90),
        p99_us=percentile(values, 99),
        max_us=float(values[-1]),
        mean_us=statistics.fmean(values),
    )


def bucket_floor(value: float) -> int:
    """Lower bound of the log bucket holding ``value`` (values below 1 go to bucket 0)."""
    if value < 1:
        return 0
    k = math.floor(math.log2(value) * _BUCKETS_PER_OCTAVE)
    return int(2 ** (k / _BUCKETS_PER_OCTAVE))


def histogram(samples: Sequence[float]) -> dict[str, int]:
    """Log-bucketed counts, keyed by the bucket's lower bound (as text, for JSON)."""
    counts = Counter(bucket_floor(v) for v in samples)
    return {str(k): counts[k] for k in sorted(counts)}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b
