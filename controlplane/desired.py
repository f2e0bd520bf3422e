"""Each device's desired state: what it should run, computed from the assignments.

A workflow version is assigned to a group or a device (``workflow_assignments``); a device runs
every workflow assigned to it or to one of its groups. Where several apply, the device's own
assignment wins, then the most recent group assignment. The models a workflow version uses come
with it (recorded at upload), and so do the threshold sets its ``threshold`` nodes name, at the
version assigned to the device or its groups the same way (a set nobody assigned is left out:
the node's inline thresholds apply). Every artifact carries its content URL and signed manifest.

A workflow assignment written by a rollout's promotion pins the bundle's model and threshold-set
versions (``pins``); they hold until the assignment is replaced. While a rollout is active
(``controlplane.rollouts.plan``), its target devices run the baseline (what they would run
without it), the candidate bundle, or both, as its current step places them (docs/rollouts.md).

``refresh(conn, device_ids)`` recomputes and stores the states; the generation goes up only when
the content changed, so recomputing is always safe. It returns the devices whose state changed,
for the MQTT bridge to publish (retained).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from google.protobuf import timestamp_pb2
from sqlalchemy.engine import Connection

from controlplane.fleet import groups_of
from controlplane.rollouts.plan import ActiveRollout, load_active
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


def _pick_rows(
    rows: Iterable[Mapping[Any, Any]], device_id: str, device_groups: list[str]
) -> dict[str, Mapping[Any, Any]]:
    """name → the assignment row that applies: the device's own, else the newest group one."""
    chosen: dict[str, tuple[tuple[int, Any], Mapping[Any, Any]]] = {}
    for row in rows:
        if row["target_kind"] == "device" and row["target"] == device_id:
            rank = 1
        elif row["target_kind"] == "group" and row["target"] in device_groups:
            rank = 0
        else:
            continue
        key = (rank, as_utc(row["assigned_at"]))
        current = chosen.get(row["name"])
        if current is None or key > current[0]:
            chosen[row["name"]] = (key, row)
    return {name: value[1] for name, value in chosen.items()}


def _pick(rows: Iterable[Mapping[Any, Any]], device_id: str, device_groups: list[str]) -> dict[str, int]:
    """name → version: the device's own assignment, else the newest group assignment."""
    return {name: row["version"] for name, row in _pick_rows(rows, device_id, device_groups).items()}


def pins_of(row: Mapping[Any, Any]) -> Mapping[str, Any]:
    """The versions a rollout's promotion pinned on a workflow assignment, while they still hold:
    only as long as the row is the one the promotion wrote (``assigned_by`` "rollout:<id>")."""
    pins = row.get("pins")
    if not pins or row["assigned_by"] != f"rollout:{pins.get('rollout_id')}":
        return {}
    return dict(pins)


def threshold_sets_named(document: Mapping[str, Any]) -> set[str]:
    """The threshold sets a workflow graph's ``threshold`` nodes read."""
    return {
        node["config"]["threshold_set"]
        for node in document.get("nodes", [])
        if node.get("type") == "threshold"
        and isinstance(node.get("config"), dict)
        and node["config"].get("threshold_set")
    }


def _target_filter(table: sa.Table, targets: list[tuple[str, str]]) -> sa.ColumnElement[bool]:
    return sa.or_(*(sa.and_(table.c.target_kind == k, table.c.target == v) for k, v in targets))


def threshold_versions(
    conn: Connection, device_id: str, labels: Mapping[str, str], device_groups: list[str] | None = None
) -> dict[str, int]:
    """Threshold set name → the version assigned to the device or its groups (the device's own
    assignment wins, then the newest group one); sets nobody assigned are absent."""
    if device_groups is None:
        device_groups = groups_of(conn, device_id, labels)
    targets = [("device", device_id), *(("group", g) for g in device_groups)]
    rows = conn.execute(
        sa.select(threshold_assignments).where(_target_filter(threshold_assignments, targets))
    ).mappings()
    return _pick(rows, device_id, device_groups)


def _row(conn: Connection, table: sa.Table, name: str, version: int) -> Mapping[Any, Any]:
    return (
        conn.execute(sa.select(table).where(table.c.name == name, table.c.version == version))
        .mappings()
        .one()
    )


def _baseline(
    conn: Connection,
    workflow_row: Mapping[Any, Any],
    pins: Mapping[str, Any],
    thresholds: Mapping[str, int],
    base_url: str,
) -> sync_pb2.WorkflowAssignment:
    """The assignment of one workflow version: the models recorded with it (or pinned), and the
    threshold sets its nodes name at the assigned (or pinned) versions."""
    assignment = sync_pb2.WorkflowAssignment(workflow=_artifact("workflow", workflow_row, base_url))
    pinned_models: Mapping[str, int] = pins.get("models") or {}
    pinned_sets: Mapping[str, int] = pins.get("threshold_sets") or {}
    for ref in workflow_row["models"]:
        version = pinned_models.get(ref["name"], ref["version"])
        assignment.models.append(_artifact("model", _row(conn, models, ref["name"], version), base_url))
    for set_name in sorted(threshold_sets_named(workflow_row["document"])):
        set_version = pinned_sets.get(set_name, thresholds.get(set_name))
        if set_version is None:
            continue
        row = _row(conn, threshold_sets, set_name, set_version)
        assignment.threshold_sets.append(_artifact("thresholds", row, base_url))
    return assignment


def _candidate(
    conn: Connection, rollout: ActiveRollout, role: str, base_url: str
) -> sync_pb2.WorkflowAssignment:
    """The rollout's bundle as an assignment: exactly the bundle's artifacts, with the bundle and
    its signed manifest."""
    bundle = rollout.bundle
    workflow = bundle["workflow"]
    assignment = sync_pb2.WorkflowAssignment(
        workflow=_artifact(
            "workflow", _row(conn, workflows, workflow["name"], workflow["version"]), base_url
        ),
        role=role,
        rollout_id=rollout.id,
        bundle=rollout.bundle_bytes,
        bundle_manifest=rollout.bundle_manifest,
    )
    for ref in bundle["models"]:
        assignment.models.append(
            _artifact("model", _row(conn, models, ref["name"], ref["version"]), base_url)
        )
    for ref in bundle["threshold_sets"]:
        row = _row(conn, threshold_sets, ref["name"], ref["version"])
        assignment.threshold_sets.append(_artifact("thresholds", row, base_url))
    return assignment


def compute(
    conn: Connection,
    device_id: str,
    labels: Mapping[str, str],
    base_url: str,
    rollouts: Sequence[ActiveRollout] | None = None,
) -> sync_pb2.DesiredState:
    """The desired state of one device, without generation and time.

    ``rollouts`` are the active rollouts (``plan.load_active``; loaded here when None). For a
    workflow an active rollout targets this device with, the baseline (what the device runs
    without the rollout) gets role ``baseline`` and the rollout id, or the candidate replaces it
    (role ``canary``), or the candidate runs beside it (role ``shadow``), as the current step
    places the device (docs/rollouts.md)."""
    if rollouts is None:
        rollouts = load_active(conn)
    device_groups = groups_of(conn, device_id, labels)
    targets = [("device", device_id), *(("group", g) for g in device_groups)]
    wanted = _pick_rows(
        conn.execute(
            sa.select(workflow_assignments).where(_target_filter(workflow_assignments, targets))
        ).mappings(),
        device_id,
        device_groups,
    )
    thresholds = threshold_versions(conn, device_id, labels, device_groups)
    placed = {r.workflow: r for r in rollouts if r.placement(device_id) is not None}
    state = sync_pb2.DesiredState(device_id=device_id)
    for name in sorted(set(wanted) | set(placed)):
        baseline = None
        if name in wanted:
            assigned = wanted[name]
            row = _row(conn, workflows, name, assigned["version"])
            baseline = _baseline(conn, row, pins_of(assigned), thresholds, base_url)
        rollout = placed.get(name)
        placement = None if rollout is None else rollout.placement(device_id)
        if rollout is None or placement is None:
            if baseline is not None:
                state.workflows.append(baseline)
            continue
        if placement == "canary":
            state.workflows.append(_candidate(conn, rollout, "canary", base_url))
            continue
        if baseline is None:
            continue  # nothing to run beside, and not the candidate's turn yet
        baseline.role = "baseline"
        baseline.rollout_id = rollout.id
        state.workflows.append(baseline)
        if placement == "shadow":
            state.workflows.append(_candidate(conn, rollout, "shadow", base_url))
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
    active = load_active(conn)
    for device in conn.execute(query).all():
        state = compute(conn, device.id, device.labels, base_url, active)
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
