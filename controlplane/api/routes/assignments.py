"""Assigning a version of a workflow or threshold set to a group or a device: shared by both."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection

from controlplane import audit
from controlplane.access import Principal
from controlplane.api.deps import Services
from controlplane.api.problems import Problem
from controlplane.api.routes.releases import load_version
from controlplane.fleet import in_group
from controlplane.store import as_utc, utcnow
from controlplane.store.schema import devices, groups

TargetKind = Literal["group", "device"]


class AssignmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=2**31 - 1)


class AssignmentOut(BaseModel):
    name: str
    target_kind: TargetKind
    target: str
    version: int
    assigned_at: datetime
    assigned_by: str


def assignment_out(row: Mapping[Any, Any]) -> AssignmentOut:
    return AssignmentOut(**{**row, "assigned_at": as_utc(row["assigned_at"])})


def affected_devices(conn: Connection, target_kind: str, target: str) -> list[str]:
    """The active devices an assignment to ``target`` reaches."""
    if target_kind == "device":
        return [target]
    group = conn.execute(sa.select(groups).where(groups.c.name == target)).mappings().one()
    rows = conn.execute(sa.select(devices.c.id, devices.c.labels).where(devices.c.status == "active"))
    return [row.id for row in rows if in_group(group, row.id, row.labels)]


def assign(
    svc: Services,
    *,
    assignments: sa.Table,
    versions: sa.Table,
    kind: str,
    name: str,
    target_kind: TargetKind,
    target: str,
    version: int,
    caller: Principal,
) -> AssignmentOut:
    """Record the assignment (replacing any earlier one for the same target), audit it, and
    recompute and publish the desired state of the devices it reaches."""
    with svc.db.write() as conn:
        load_version(conn, versions, kind, name, version)
        column = groups.c.name if target_kind == "group" else devices.c.id
        if conn.execute(sa.select(column).where(column == target)).first() is None:
            raise Problem(404, f"{target_kind} '{target}' does not exist", type="not-found")
        key = (
            (assignments.c.name == name)
            & (assignments.c.target_kind == target_kind)
            & (assignments.c.target == target)
        )
        before = conn.execute(sa.select(assignments).where(key)).mappings().first()
        row = {
            "name": name,
            "target_kind": target_kind,
            "target": target,
            "version": version,
            "assigned_at": utcnow(),
            "assigned_by": caller.actor,
        }
        if before is None:
            conn.execute(assignments.insert().values(**row))
        else:
            conn.execute(assignments.update().where(key).values(**row))
        audit.append(
            conn,
            actor=caller.actor,
            action=f"{kind.replace(' ', '_')}.assign",
            resource=f"{assignments.name}/{name}/{target_kind}/{target}",
            before=None if before is None else {"version": before["version"]},
            after={"version": version},
        )
        changed = svc.refresh_desired(conn, affected_devices(conn, target_kind, target))
    svc.publish_desired(changed)
    return assignment_out(row)
