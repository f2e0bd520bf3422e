"""Telemetry and events as devices reported them: per device, per group, and events by filter."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, BeforeValidator

from controlplane.access import Principal
from controlplane.api.deps import ServicesDep, ensure_item, guard, guard_item
from controlplane.api.http import NamePath, Page, PageDep, paginate
from controlplane.api.problems import Problem
from controlplane.fleet import in_group
from controlplane.store import as_utc, utcnow
from controlplane.store.schema import devices, events, groups
from controlplane.telemetry import series

router = APIRouter(prefix="/api/v1", tags=["telemetry"])

MAX_POINTS = 10_000


def _iso_only(value: Any) -> Any:
    """RFC 3339 date-times only: pydantic would read ``0.5`` as a Unix time."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("expected an RFC 3339 date-time, e.g. 2026-11-25T18:00:00Z")
    return value


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only)]


class Latency(BaseModel):
    p50: float | None
    p95: float | None
    p99: float | None


class TelemetryPoint(BaseModel):
    at: datetime
    workflow_id: str
    runs: int
    passed: int
    failed: int
    errors: int
    skipped: int
    dropped_frames: int
    devices: int
    latency_ms: Latency


class TelemetrySeries(BaseModel):
    start: datetime
    end: datetime
    step_s: int
    points: list[TelemetryPoint]


class EventOut(BaseModel):
    device_id: str
    seq: int
    at: datetime
    kind: str
    severity: str
    workflow_id: str
    run_id: str
    message: str
    lineage: dict[str, Any]
    attributes: dict[str, Any]
    has_thumbnail: bool


class Window:
    def __init__(
        self,
        start: Annotated[
            datetime | None, Query(alias="from", description="Default: an hour before `to`.")
        ] = None,
        end: Annotated[IsoDatetime | None, Query(alias="to", description="Default: now.")] = None,
        step: Annotated[int, Query(ge=60, le=86400, description="Seconds per point (whole minutes).")] = 60,
    ) -> None:
        self.end = as_utc(end) or utcnow()
        self.start = as_utc(start) or self.end - timedelta(hours=1)
        if self.start >= self.end:
            raise Problem(422, "query.from: must be before query.to", type="validation")
        self.step = timedelta(seconds=step - step % 60)
        if (self.end - self.start) / self.step > MAX_POINTS:
            raise Problem(
                422, f"query.step: more than {MAX_POINTS} points; widen the step", type="validation"
            )

    def answer(self, points: list[dict[str, Any]]) -> TelemetrySeries:
        return TelemetrySeries(
            start=self.start,
            end=self.end,
            step_s=int(self.step.total_seconds()),
            points=[TelemetryPoint(**p) for p in points],
        )


@router.get("/devices/{device_id}/telemetry", response_model=TelemetrySeries)
def device_telemetry(
    device_id: NamePath,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard_item("devices", "read"))],
    window: Annotated[Window, Depends()],
    workflow: Annotated[str | None, Query(max_length=128)] = None,
) -> TelemetrySeries:
    """Runs, outcomes and latency percentiles of one device, per step and workflow."""
    with svc.db.read() as conn:
        row = conn.execute(sa.select(devices.c.labels).where(devices.c.id == device_id)).first()
        if row is None:
            raise Problem(404, f"device '{device_id}' is not registered", type="not-found")
        ensure_item(caller, "devices", "read", row.labels)
        points = series(conn, [device_id], window.start, window.end, window.step, workflow)
    return window.answer(points)


@router.get("/groups/{name}/telemetry", response_model=TelemetrySeries)
def group_telemetry(
    name: NamePath,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("devices", "read"))],
    window: Annotated[Window, Depends()],
    workflow: Annotated[str | None, Query(max_length=128)] = None,
) -> TelemetrySeries:
    """Fleet-wide aggregates over a group's devices: counts summed, latency percentiles from the
    merged histograms."""
    with svc.db.read() as conn:
        group = conn.execute(sa.select(groups).where(groups.c.name == name)).mappings().first()
        if group is None:
            raise Problem(404, f"group '{name}' does not exist", type="not-found")
        rows = conn.execute(sa.select(devices.c.id, devices.c.labels))
        members = [r.id for r in rows if in_group(group, r.id, r.labels)]
        points = series(conn, members, window.start, window.end, window.step, workflow)
    return window.answer(points)


def _event_out(row: Mapping[Any, Any]) -> EventOut:
    return EventOut(
        **{
            k: row[k]
            for k in (
                "device_id",
                "seq",
                "kind",
                "severity",
                "workflow_id",
                "run_id",
                "message",
                "lineage",
                "attributes",
            )
        },
        at=as_utc(row["at"]),
        has_thumbnail=row["thumbnail"] is not None,
    )


@router.get("/events", response_model=Page[EventOut])
def list_events(
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("devices", "read"))],
    page: PageDep,
    device: Annotated[str | None, Query(max_length=128)] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    workflow: Annotated[str | None, Query(max_length=128)] = None,
    start: Annotated[IsoDatetime | None, Query(alias="from")] = None,
    end: Annotated[IsoDatetime | None, Query(alias="to")] = None,
) -> Page[EventOut]:
    """Events devices reported (rejected parts, rollbacks, failures), oldest first."""
    query = sa.select(events)
    for column, value in (
        (events.c.device_id, device),
        (events.c.kind, kind),
        (events.c.workflow_id, workflow),
    ):
        if value is not None:
            query = query.where(column == value)
    if start is not None:
        query = query.where(events.c.at >= as_utc(start))
    if end is not None:
        query = query.where(events.c.at < as_utc(end))
    with svc.db.read() as conn:
        return paginate(conn, query, [events.c.at, events.c.device_id, events.c.seq], page, _event_out)
