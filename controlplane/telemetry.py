"""Reading the telemetry roll-ups: time series per device or group, with latency percentiles
derived from the merged histograms (so fleet-wide p99s are exact to the bucket, not averages of
per-device percentiles)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controlplane.bridge.ingest import merge_histograms
from controlplane.store import as_utc
from controlplane.store.schema import telemetry_minutes

COUNTS = ("runs", "passed", "failed", "errors", "skipped", "dropped_frames")
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


def percentile(histogram: Mapping[str, Any] | None, q: float) -> float | None:
    """The ``q`` quantile, interpolated linearly inside its bucket; ``None`` when empty. Values in
    the overflow bucket are reported as the last bound (a lower bound of the truth)."""
    if not histogram or not histogram.get("count"):
        return None
    bounds: list[float] = list(histogram["bounds"])
    counts: list[int] = list(histogram["counts"])
    target = q * histogram["count"]
    seen = 0.0
    for index, count in enumerate(counts):
        if count and seen + count >= target:
            if index >= len(bounds):
                return bounds[-1] if bounds else None
            low = bounds[index - 1] if index > 0 else 0.0
            high = bounds[index]
            return float(low + (high - low) * (target - seen) / count)
        seen += count
    return bounds[-1] if bounds else None


def _bucket(minute: datetime, start: datetime, step: timedelta) -> datetime:
    return start + step * ((minute - start) // step)


def series(
    conn: Connection,
    device_ids: Iterable[str],
    start: datetime,
    end: datetime,
    step: timedelta,
    workflow_id: str | None = None,
) -> list[dict[str, Any]]:
    """One point per (step bucket, workflow): counts summed over the devices, latency percentiles
    from their merged histograms. Buckets with no data are left out."""
    query = sa.select(telemetry_minutes).where(
        telemetry_minutes.c.device_id.in_(list(device_ids)),
        telemetry_minutes.c.minute >= start,
        telemetry_minutes.c.minute < end,
    )
    if workflow_id is not None:
        query = query.where(telemetry_minutes.c.workflow_id == workflow_id)
    points: dict[tuple[datetime, str], dict[str, Any]] = {}
    for row in conn.execute(query).mappings():
        minute = as_utc(row["minute"])
        assert minute is not None
        key = (_bucket(minute, start, step), row["workflow_id"])
        point = points.setdefault(key, {**dict.fromkeys(COUNTS, 0), "latency": None, "devices": set()})
        for name in COUNTS:
            point[name] += row[name]
        point["latency"] = (
            merge_histograms(point["latency"], row["latency_ms"])
            if point["latency"]
            else dict(row["latency_ms"])
        )
        point["devices"].add(row["device_id"])
    out = []
    for (at, workflow), point in sorted(points.items()):
        latency = point.pop("latency")
        out.append(
            {
                "at": at.astimezone(UTC),
                "workflow_id": workflow,
                **{name: point[name] for name in COUNTS},
                "devices": len(point["devices"]),
                "latency_ms": {name: percentile(latency, q) for name, q in QUANTILES.items()},
            }
        )
    return out
