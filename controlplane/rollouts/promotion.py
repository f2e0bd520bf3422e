"""Making a promoted rollout's candidate the target's assigned bundle for good.

The candidate's workflow version is written as the target's workflow assignment with the
bundle's model and threshold-set versions pinned (``workflow_assignments.pins``, honoured by
``controlplane.desired`` until the assignment is replaced). A group target gets a group
assignment, and every target device that has its own assignment of the workflow (which would
win over the group's) gets the same; a selector or device-list target gets one assignment per
target device.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controlplane import audit
from controlplane.store.schema import groups, workflow_assignments


def pins(bundle: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "rollout_id": bundle["rollout_id"],
        "models": {ref["name"]: int(ref["version"]) for ref in bundle["models"]},
        "threshold_sets": {ref["name"]: int(ref["version"]) for ref in bundle["threshold_sets"]},
    }


def _assignment_targets(
    conn: Connection, workflow: str, target: Mapping[str, Any], device_ids: list[str]
) -> list[tuple[str, str]]:
    group = target.get("group")
    if group is None or conn.execute(sa.select(groups.c.name).where(groups.c.name == group)).first() is None:
        return [("device", device) for device in device_ids]
    own = set(
        conn.execute(
            sa.select(workflow_assignments.c.target).where(
                workflow_assignments.c.name == workflow,
                workflow_assignments.c.target_kind == "device",
                workflow_assignments.c.target.in_(device_ids),
            )
        ).scalars()
    )
    return [("group", group), *(("device", device) for device in device_ids if device in own)]


def assign_candidate(
    conn: Connection, row: Mapping[str, Any], device_ids: list[str], *, actor: str, now: datetime
) -> list[tuple[str, str]]:
    """Write the assignments (audited as ``workflow.assign`` by ``actor``); returns their targets."""
    bundle = row["bundle"]
    name, version = row["workflow"], int(bundle["workflow"]["version"])
    pinned = pins(bundle)
    written = _assignment_targets(conn, name, row["target"], device_ids)
    for kind, target in written:
        key = (
            (workflow_assignments.c.name == name)
            & (workflow_assignments.c.target_kind == kind)
            & (workflow_assignments.c.target == target)
        )
        before = conn.execute(sa.select(workflow_assignments).where(key)).mappings().first()
        values = {
            "version": version,
            "assigned_at": now,
            "assigned_by": f"rollout:{row['id']}",
            "pins": pinned,
        }
        if before is None:
            conn.execute(
                workflow_assignments.insert().values(name=name, target_kind=kind, target=target, **values)
            )
        else:
            conn.execute(workflow_assignments.update().where(key).values(**values))
        audit.append(
            conn,
            actor=actor,
            action="workflow.assign",
            resource=f"workflow_assignments/{name}/{kind}/{target}",
            before=None if before is None else {"version": before["version"], "pins": before["pins"]},
            after={"version": version, "pins": pinned},
            details={"rollout_id": row["id"]},
        )
    return written
