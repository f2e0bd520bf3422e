"""Creating a rollout: the spec checked against the registry and the fleet, the bundle resolved
and signed, the row, its ``start`` decision and the audit entry, all in the caller's transaction.

Resolution (docs/rollouts.md): the workflow version defaults to the newest; the models default to
the versions recorded with that workflow version, and a spec that names models must name exactly
the ones the workflow version uses; each threshold set the workflow reads defaults to the version
the target's devices run now (they must agree; a set nobody assigned is left out of the bundle).
Every problem is reported at once, by field (:class:`SpecInvalid`); a target that shares a device
with an active rollout of the same workflow is refused (:class:`RolloutConflict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controlplane import audit
from controlplane.desired import threshold_sets_named, threshold_versions
from controlplane.rollouts import bundle, store
from controlplane.rollouts.errors import RolloutConflict, SpecInvalid
from controlplane.rollouts.spec import RolloutSpec
from controlplane.rollouts.targets import describe, target_devices
from controlplane.signing import SigningKey
from controlplane.store.schema import devices, groups, models, rollouts, threshold_sets, workflows

_CREATE_LOCK = 0x6564_6766_726F  # PostgreSQL advisory lock: one rollout creation at a time


@dataclass(frozen=True)
class Created:
    row: Mapping[str, Any]
    devices: list[str]


def _versions(conn: Connection, table: sa.Table, name: str) -> list[int]:
    query = sa.select(table.c.version).where(table.c.name == name).order_by(table.c.version)
    return [int(v) for v in conn.execute(query).scalars()]


def _row(conn: Connection, table: sa.Table, name: str, version: int) -> Mapping[Any, Any] | None:
    query = sa.select(table).where(table.c.name == name, table.c.version == version)
    return conn.execute(query).mappings().first()


def _missing_version(kind: str, name: str, version: int, known: list[int]) -> str:
    have = f"it has versions {', '.join(map(str, known))}" if known else "it has no versions"
    return f"{kind} '{name}' has no version {version} ({have})"


class _Resolver:
    """Collects every problem of one spec, by field."""

    def __init__(self, conn: Connection, spec: RolloutSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.errors: list[dict[str, str]] = []

    def fail(self, field: str, message: str) -> None:
        self.errors.append({"field": f"body.{field}", "message": message})

    def workflow(self) -> Mapping[Any, Any] | None:
        name = self.spec.workflow
        known = _versions(self.conn, workflows, name)
        if not known:
            self.fail("workflow", f"workflow '{name}' does not exist")
            return None
        version = self.spec.bundle.workflow_version or known[-1]
        row = _row(self.conn, workflows, name, version)
        if row is None:
            self.fail("bundle.workflow_version", _missing_version("workflow", name, version, known))
        return row

    def targets(self) -> list[str]:
        target = self.spec.target
        if target.group is not None:
            exists = self.conn.execute(sa.select(groups.c.name).where(groups.c.name == target.group)).first()
            if exists is None:
                self.fail("target.group", f"group '{target.group}' does not exist")
                return []
        for index, device_id in enumerate(target.devices or []):
            status = self.conn.execute(sa.select(devices.c.status).where(devices.c.id == device_id)).scalar()
            if status is None:
                self.fail(f"target.devices[{index}]", f"device '{device_id}' does not exist")
            elif status != "active":
                self.fail(f"target.devices[{index}]", f"device '{device_id}' is {status}")
        found = target_devices(self.conn, target.as_dict())
        if not found and not self.errors:
            self.fail("target", f"{describe(target.as_dict())} matches no active device")
        return found

    def models(self, workflow: Mapping[Any, Any]) -> list[Mapping[Any, Any]]:
        used = {ref["name"]: int(ref["version"]) for ref in workflow["models"]}
        label = f"workflow '{workflow['name']}' version {workflow['version']}"
        wanted = dict(used)
        if self.spec.bundle.models is not None:
            given = self.spec.bundle.models
            for name in sorted(set(given) - set(used)):
                uses = ", ".join(sorted(used)) or "none"
                self.fail(f"bundle.models.{name}", f"{label} does not use model '{name}' (it uses: {uses})")
            missing = sorted(set(used) - set(given))
            if missing:
                self.fail(
                    "bundle.models",
                    f"{label} uses model(s) {', '.join(missing)}: name a version for every model it uses",
                )
            wanted = {name: version for name, version in given.items() if name in used}
        rows = []
        for name, version in sorted(wanted.items()):
            row = _row(self.conn, models, name, version)
            if row is None:
                known = _versions(self.conn, models, name)
                self.fail(f"bundle.models.{name}", _missing_version("model", name, version, known))
            else:
                rows.append(row)
        return rows

    def threshold_sets(self, workflow: Mapping[Any, Any], target: list[str]) -> list[Mapping[Any, Any]]:
        named = threshold_sets_named(workflow["document"])
        given = self.spec.bundle.threshold_sets or {}
        label = f"workflow '{workflow['name']}' version {workflow['version']}"
        for name in sorted(set(given) - named):
            reads = ", ".join(sorted(named)) or "none"
            self.fail(
                f"bundle.threshold_sets.{name}",
                f"{label} reads no threshold set '{name}' (it reads: {reads})",
            )
        running = self._running_thresholds(target, named - set(given))
        rows = []
        for name in sorted(named):
            version = given.get(name, running.get(name))
            if version is None:
                continue  # nobody assigned it, and the spec names none: the inline thresholds apply
            row = _row(self.conn, threshold_sets, name, version)
            if row is None:
                known = _versions(self.conn, threshold_sets, name)
                self.fail(
                    f"bundle.threshold_sets.{name}", _missing_version("threshold set", name, version, known)
                )
            else:
                rows.append(row)
        return rows

    def _running_thresholds(self, target: list[str], names: set[str]) -> dict[str, int]:
        """The version of each of ``names`` the target's devices run now, where they agree."""
        if not names or not target:
            return {}
        labels = dict(
            self.conn.execute(sa.select(devices.c.id, devices.c.labels).where(devices.c.id.in_(target))).all()
        )
        per_device = {
            device: threshold_versions(self.conn, device, labels.get(device) or {}) for device in target
        }
        chosen: dict[str, int] = {}
        for name in sorted(names):
            seen = {device: versions.get(name) for device, versions in per_device.items()}
            distinct = set(seen.values())
            if len(distinct) > 1:
                sample = ", ".join(f"{d}: {v or 'none'}" for d, v in sorted(seen.items())[:6])
                self.fail(
                    f"bundle.threshold_sets.{name}",
                    f"the target's devices run different versions of threshold set '{name}' ({sample}): "
                    "name the version the candidate should use",
                )
            elif None not in distinct:
                chosen[name] = int(distinct.pop())  # type: ignore[arg-type]
        return chosen


def _check_overlap(conn: Connection, spec: RolloutSpec, target: list[str]) -> None:
    wanted = set(target)
    for row in store.active(conn, spec.workflow):
        common = wanted & set(target_devices(conn, row["target"]))
        if common:
            shown = ", ".join(sorted(common)[:10]) + (" …" if len(common) > 10 else "")
            raise RolloutConflict(
                f"rollout {row['id']} ({row['state']}) of workflow '{spec.workflow}' already targets "
                f"{shown}: a device takes part in at most one active rollout of a workflow; "
                f"wait for it to end or abort it"
            )


def create_rollout(
    conn: Connection,
    spec: RolloutSpec,
    *,
    actor: str,
    signer: SigningKey,
    manifest_lifetime: timedelta,
    now: datetime,
) -> Created:
    """Check ``spec``, sign its bundle, store the rollout at its first step (``running``, or
    ``paused`` when the first step is a pause) with a ``start`` decision and an audit entry.
    The caller refreshes the desired states of ``Created.devices`` in the same transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK})
    resolver = _Resolver(conn, spec)
    workflow = resolver.workflow()
    target = resolver.targets()
    model_rows = resolver.models(workflow) if workflow is not None else []
    set_rows = resolver.threshold_sets(workflow, target) if workflow is not None else []
    if resolver.errors or workflow is None:
        raise SpecInvalid(resolver.errors)
    _check_overlap(conn, spec, target)

    rollout_id = store.new_id()
    while conn.execute(sa.select(rollouts.c.id).where(rollouts.c.id == rollout_id)).first() is not None:
        rollout_id = store.new_id()
    signed = bundle.sign(
        bundle.build(rollout_id, workflow, model_rows, set_rows, spec.gate),
        signer,
        lifetime=manifest_lifetime,
    )
    first = spec.steps[0]
    row: dict[str, Any] = {
        "id": rollout_id,
        "workflow": spec.workflow,
        "target": spec.target.as_dict(),
        "spec": spec.model_dump(mode="json", exclude_none=True),
        "bundle": signed.document,
        "bundle_bytes": signed.data,
        "bundle_sha256": signed.sha256,
        "bundle_manifest": signed.manifest,
        "state": "paused" if first.kind == "pause" else "running",
        "step_index": 0,
        "step_started_at": now,
        "paused_reason": "waiting for approval: step 1 is a pause" if first.kind == "pause" else None,
        "created_at": now,
        "created_by": actor,
        "updated_at": now,
        "finished_at": None,
        "reason": None,
        "analysis": None,
        "revision": 1,
    }
    conn.execute(rollouts.insert().values(**row))
    store.add_decision(
        conn,
        rollout_id,
        at=now,
        step_index=0,
        step=first.kind,
        action="start",
        actor=actor,
        reason=f"created for {describe(row['target'])} ({len(target)} devices)",
    )
    if row["paused_reason"] is not None:
        store.add_decision(
            conn,
            rollout_id,
            at=now,
            step_index=0,
            step="pause",
            action="pause",
            actor="controller",
            reason=row["paused_reason"],
        )
    audit.append(
        conn,
        actor=actor,
        action="rollout.create",
        resource=f"rollouts/{rollout_id}",
        after={k: row[k] for k in ("workflow", "target", "spec", "bundle", "bundle_sha256", "state")},
        details={"devices": len(target)},
    )
    return Created(row=row, devices=target)
