"""The statistics rollout analysis rests on: the two-proportion z-test, a binomial tail, and
quantiles of fixed-bucket latency histograms (merged across devices and minutes)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from controlplane.telemetry import percentile

__all__ = ["binomial_tail", "histogram_quantile", "merge_latency", "runs_above", "two_proportion_test"]


def two_proportion_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """The pooled two-proportion z-test of x1/n1 against x2/n2: ``(z, two-sided p)``, z > 0 when
    the first proportion is larger. ``(0.0, 1.0)`` when a side is empty or there is no variance
    (all parts on both sides landed the same way). Raises ValueError unless 0 <= x <= n."""
    if not (0 <= x1 <= n1 and 0 <= x2 <= n2):
        raise ValueError(f"counts out of range: {x1}/{n1}, {x2}/{n2}")
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return 0.0, 1.0
    z = (x1 / n1 - x2 / n2) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2))


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed term by term in log space."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    total = 0.0
    for i in range(k, n + 1):
        term = math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
        total += term
        if i > n * p and term <= total * 1e-15:
            break
    return min(total, 1.0)


def histogram_quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of a histogram (``counts[i]`` counts values <= ``bounds[i]``, the last
    count is the overflow), as :func:`controlplane.telemetry.percentile` computes it: linear inside
    the bucket, the last bound for the overflow (a lower bound). None when empty."""
    return percentile({"bounds": list(bounds), "counts": list(counts), "count": sum(counts)}, q)


def merge_latency(
    histograms: Iterable[Mapping[str, Any] | None],
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Sum latency histograms into ``(bounds, counts)``. Histograms with the same bounds add up
    exactly. When the bounds differ, the result's bounds are the union of all of them and each
    bucket's count moves to the union bucket ending at its own upper bound (the overflow stays the
    overflow): a count is never placed below where it was, so quantiles may come out high, never
    low. Empty and malformed histograms are skipped."""
    by_bounds: dict[tuple[float, ...], list[int]] = {}
    for histogram in histograms:
        if not histogram or not histogram.get("bounds"):
            continue
        bounds = tuple(float(b) for b in histogram["bounds"])
        counts = [int(c) for c in histogram.get("counts", [])]
        if len(counts) == len(bounds):
            counts.append(0)  # no overflow bucket sent
        if len(counts) != len(bounds) + 1 or not sum(counts):
            continue
        total = by_bounds.setdefault(bounds, [0] * len(counts))
        by_bounds[bounds] = [a + b for a, b in zip(total, counts, strict=True)]
    if not by_bounds:
        return (), ()
    if len(by_bounds) == 1:
        [(bounds, counts)] = by_bounds.items()
        return bounds, tuple(counts)
    union = tuple(sorted({b for bounds in by_bounds for b in bounds}))
    index = {b: i for i, b in enumerate(union)}
    merged = [0] * (len(union) + 1)
    for bounds, counts in by_bounds.items():
        for i, count in enumerate(counts):
            merged[index[bounds[i]] if i < len(bounds) else len(union)] += count
    return union, tuple(merged)


def runs_above(bounds: Sequence[float], counts: Sequence[int], line: float) -> int:
    """Runs certainly slower than ``line``: those in buckets whose lower edge is at or above it."""
    edges = [0.0, *bounds]
    return sum(count for edge, count in zip(edges, counts, strict=False) if edge >= line)
