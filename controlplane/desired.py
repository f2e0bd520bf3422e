"""Each device's desired state: what it should run, computed from the assignments.

A workflow version is assigned to a group or a device (``workflow_assignments``); a device runs
every workflow assigned to it or to one of its groups. Where several apply, the device's own
assignment wins, then the most recent group assignment. The models a workflow version uses come
with it (recorded at upload), and so do the threshold sets its ``threshold`` nodes name, at the
version assigned to the device or its groups the same way (a set nobody assigned is left out:
the node's inline thresholds apply). Every artifact carries its content URL and signed manifest.

``refresh(conn, device_ids)`` recomputes and stores the states; the generation goes up only when
the content changed, so recomputing is always safe. It returns the devices whose state changed,
for the MQTT bridge to publish (retained).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from google.protobuf import timestamp_pb2
from sqlalchemy.engine import Connection

from controlplane.fleet import groups_of
from controlplane.store import as_utc, utcnow
from controlplane.store.schema import (
    desired_states,
    devices,
    models,
    threshold_assignments,
    threshold_sets,
    workflow_assignments,
    workflows,
)
from protos import sync_pb2

PATHS = {"model": "models", "workflow": "workflows", "thresholds": "thresholds"}


def _artifact(kind: str, row: Mapping[Any, Any], base_url: str) -> sync_pb2.ArtifactRef:
    return sync_pb2.ArtifactRef(
        kind=kind,
        name=row["name"],
        version=row["version"],
        sha256=row["sha256"],
        size=row["size"],
        url=f"{base_url}/api/v1/{PATHS[kind]}/{row['name']}/versions/{row['version']}/content",
        signed_manifest=json.dumps(row["manifest"], sort_keys=True, separators=(",", ":")).encode(),
    )


def _pick(rows: Iterable[Mapping[Any, Any]], device_id: str, device_groups: list[str]) -> dict[str, int]:
    """name → version: the device's own assignment, else the newest group assignment."""
    chosen: dict[str, tuple[int, Any, int]] = {}
    for row in rows:
        if row["target_kind"] == "device" and row["target"] == device_id:
            rank = 1
        elif row["target_kind"] == "group" and row["target"] in device_groups:
            rank = 0
        else:
            continue
        key = (rank, as_utc(row["assigned_at"]))
        current = chosen.get(row["name"])
        if current is None or key > current[:2]:
            chosen[row["name"]] = (*key, row["version"])
    return {name: value[2] for name, value in chosen.items()}


def _threshold_sets_named(document: Mapping[str, Any]) -> set[str]:
    return {
        node["config"]["threshold_set"]
        for node in document.get("nodes", [])
        if node.get("type") == "threshold"
        and isinstance(node.get("config"), dict)
        and node["config"].get("threshold_set")
    }


def compute(
    conn: Connection, device_id: str, labels: Mapping[str, str], base_url: str
) -> sync_pb2.DesiredState:
    """The desired state of one device, without generation and time."""
    device_groups = groups_of(conn, device_id, labels)
    targets = [("device", device_id), *(("group", g) for g in device_groups)]
    target_filter = sa.or_(
        *(sa.and_(t.c.target_kind == k, t.c.target == v) for t in [workflow_assignments] for k, v in targets)
    )
    wanted = _pick(
        conn.execute(sa.select(workflow_assignments).where(target_filter)).mappings(),
        device_id,
        device_groups,
    )
    threshold_filter = sa.or_(
        *(
            sa.and_(threshold_assignments.c.target_kind == k, threshold_assignments.c.target == v)
            for k, v in targets
        )
    )
    threshold_versions = _pick(
        conn.execute(sa.select(threshold_assignments).where(threshold_filter)).mappings(),
        device_id,
        device_groups,
    )
    state = sync_pb2.DesiredState(device_id=device_id)
    for name in sorted(wanted):
        row = (
            conn.execute(
                sa.select(workflows).where(workflows.c.name == name, workflows.c.version == wanted[name])
            )
            .mappings()
            .one()
        )
        assignment = state.workflows.add(workflow=_artifact("workflow", row, base_url))
        for ref in row["models"]:
            model = (
                conn.execute(
                    sa.select(models).where(models.c.name == ref["name"], models.c.version == ref["version"])
                )
                .mappings()
                .one()
            )
            assignment.models.append(_artifact("model", model, base_url))
        for set_name in sorted(_threshold_sets_named(row["document"])):
            version = threshold_versions.get(set_name)
            if version is None:
                continue
            thresholds = (
                conn.execute(
                    sa.select(threshold_sets).where(
                        threshold_sets.c.name == set_name, threshold_sets.c.version == version
                    )
                )
                .mappings()
                .one()
            )
            assignment.threshold_sets.append(_artifact("thresholds", thresholds, base_url))
    return state


def refresh(conn: Connection, base_url: str, device_ids: Iterable[str] | None = None) -> list[str]:
    """Recompute the desired state of ``device_ids`` (every active device when None); store the
    ones that changed with the next generation. Returns the ids whose state changed."""
    query = sa.select(devices.c.id, devices.c.labels).where(devices.c.status == "active")
    if device_ids is not None:
        query = query.where(devices.c.id.in_(list(device_ids)))
    stored = {
        row.device_id: row
        for row in conn.execute(
            sa.select(desired_states.c.device_id, desired_states.c.generation, desired_states.c.digest)
        )
    }
    changed = []
    now = utcnow()
    for device in conn.execute(query).all():
        state = compute(conn, device.id, device.labels, base_url)
        digest = hashlib.sha256(state.SerializeToString(deterministic=True)).hexdigest()
        previous = stored.get(device.id)
        if previous is not None and previous.digest == digest:
            continue
        state.generation = (previous.generation if previous else 0) + 1
        state.issued_at.CopyFrom(timestamp_pb2.Timestamp(seconds=int(now.timestamp())))
        values = {
            "generation": state.generation,
            "digest": digest,
            "payload": state.SerializeToString(),
            "updated_at": now,
        }
        if previous is None:
            conn.execute(desired_states.insert().values(device_id=device.id, **values))
        else:
            conn.execute(
                desired_states.update().where(desired_states.c.device_id == device.id).values(**values)
            )
        changed.append(device.id)
    return changed


def load(conn: Connection, device_id: str) -> sync_pb2.DesiredState | None:
    payload = conn.execute(
        sa.select(desired_states.c.payload).where(desired_states.c.device_id == device_id)
    ).scalar()
    return None if payload is None else sync_pb2.DesiredState.FromString(payload)
