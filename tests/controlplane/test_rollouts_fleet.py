"""Rollouts over the REST API on SQLite and PostgreSQL: spec validation by field, overlapping
targets, YAML bodies, reading rollouts and decisions, access, and the desired state of every
device at every step (decoded protobufs, the bundle's signature checked with the fleet's key).

The helpers here (a fleet with two releases of ``surface_inspection``, telemetry and reported
states through the real ingest path) are shared with ``test_rollouts_controller.py``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from google.protobuf import timestamp_pb2

from agent.manifest import load_public_key, verify_digest, verify_manifest
from controlplane import audit, desired
from controlplane.bridge import ingest
from controlplane.rollouts.controller import RolloutController
from controlplane.settings import ControlPlaneSettings
from controlplane.store.schema import workflow_assignments
from protos import sync_pb2
from tests.controlplane.live import LiveControlPlane, live_control_plane

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = "surface_inspection"
LINE = [f"cam-{i}" for i in range(6)]  # label line=1: the group "line-1"
BOUNDS = [2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0]


class Clock:
    """The controller's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Fleet:
    """Six devices in group line-1 and one outside it; workflow v1 (model v1, thresholds v1)
    assigned to the group, v2 (model v2) and thresholds v2 uploaded but not assigned."""

    live: LiveControlPlane
    seqs: dict[str, int] = field(default_factory=dict)

    @property
    def admin(self) -> Any:
        return self.live.admin()

    def create(self, spec: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        response = self.admin.post("/api/v1/rollouts", json=spec, **kwargs)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, rollout_id: str) -> dict[str, Any]:
        response = self.admin.get(f"/api/v1/rollouts/{rollout_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def decisions(self, rollout_id: str) -> list[dict[str, Any]]:
        response = self.admin.get(f"/api/v1/rollouts/{rollout_id}/decisions")
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def desired(self, device_id: str) -> sync_pb2.DesiredState:
        with self.live.services.db.read() as conn:
            state = desired.load(conn, device_id)
        assert state is not None
        return state

    def controller(self, clock: Clock) -> RolloutController:
        return self.live.services.rollout_controller(clock=clock)

    def telemetry(
        self,
        device_id: str,
        at: datetime,
        *,
        rollout_id: str,
        cohort: str,
        runs: int,
        failed: int = 0,
        errors: int = 0,
        latency_ms: float = 4.0,
        compared: int = 0,
        agreed: int = 0,
        workflow_version: int = 2,
        rss_bytes: int = 0,
    ) -> None:
        """One telemetry record from ``device_id``, sent as the agent sends it (a RecordBatch),
        stored through the bridge's ingest; ``rss_bytes``: the agent's memory in its system metrics."""
        seq = self.seqs[device_id] = self.seqs.get(device_id, 0) + 1
        stamp = timestamp_pb2.Timestamp(seconds=int(at.timestamp()))
        batch = sync_pb2.RecordBatch(device_id=device_id)
        record = batch.records.add(seq=seq, created_at=stamp)
        record.telemetry.window_end.CopyFrom(stamp)
        if rss_bytes:
            record.telemetry.system.process_rss_bytes = rss_bytes
        workflow = record.telemetry.workflows.add(
            workflow_id=WORKFLOW,
            runs=runs,
            passed=runs - failed - errors,
            failed=failed,
            errors=errors,
            shadow_compared=compared,
            shadow_agreed=agreed,
            shadow_scored=compared,
            shadow_score_drift_sum=0.01 * compared,
        )
        workflow.lineage.workflow_version = workflow_version
        workflow.lineage.rollout_id = rollout_id
        workflow.lineage.cohort = cohort
        counts = [0] * (len(BOUNDS) + 1)
        counts[next((i for i, b in enumerate(BOUNDS) if latency_ms <= b), len(BOUNDS))] = runs
        workflow.latency_ms.CopyFrom(
            sync_pb2.Histogram(bounds=BOUNDS, counts=counts, sum=latency_ms * runs, count=runs)
        )
        wire = sync_pb2.RecordBatch.FromString(batch.SerializeToString())
        with self.live.services.db.write() as conn:
            assert ingest.ingest_records(conn, wire.device_id, wire.records) == [seq]

    def report(
        self,
        device_id: str,
        *,
        rollout_id: str = "",
        bundle_sha256: str = "",
        failure: str | None = None,
        failing: bool = False,
    ) -> None:
        """A reported state: the candidate bundle active, a rollout failure, FAILING health."""
        reported = sync_pb2.ReportedState(device_id=device_id, generation=1)
        reported.workflows.add(
            workflow_id=WORKFLOW,
            active_version=2,
            rollout_id=rollout_id,
            role="canary",
            bundle_sha256=bundle_sha256,
        )
        if failure is not None:
            reported.rollout_failures.add(
                rollout_id=rollout_id,
                workflow_id=WORKFLOW,
                bundle_sha256=bundle_sha256,
                kind=sync_pb2.RolloutFailure.HEALTH_GATE,
                reason=failure,
            )
        reported.health.state = sync_pb2.Health.FAILING if failing else sync_pb2.Health.OK
        wire = sync_pb2.ReportedState.FromString(reported.SerializeToString())
        with self.live.services.db.write() as conn:
            ingest.ingest_reported(conn, device_id, wire)

    def audit_ok(self) -> list[dict[str, Any]]:
        with self.live.services.db.read() as conn:
            assert audit.verify(conn).ok
        entries: list[dict[str, Any]] = self.admin.get("/api/v1/audit", params={"limit": 500}).json()["items"]
        return entries


def setup_fleet(live: LiveControlPlane) -> Fleet:
    admin = live.admin()
    for device in LINE:
        live.enroll(device, labels={"line": "1"})
    live.enroll("cam-9", labels={"line": "2"})
    admin.post("/api/v1/groups", json={"name": "line-1", "selector": {"line": "1"}}).raise_for_status()
    admin.post("/api/v1/groups", json={"name": "line-2", "selector": {"line": "2"}}).raise_for_status()
    model = (REPO / "models" / "surface_inspection_v1.onnx").read_bytes()
    graph = json.loads((REPO / "examples" / "workflows" / "surface_inspection.json").read_text())
    for version, threshold in ((1, 0.5), (2, 0.45)):
        admin.post(f"/api/v1/models/{WORKFLOW}/versions", content=model).raise_for_status()
        admin.post("/api/v1/workflows", json={**graph, "version": version}).raise_for_status()
        admin.post(
            "/api/v1/thresholds/surface/versions", json={"values": {"default": threshold}}
        ).raise_for_status()
        if version == 1:
            for group in ("line-1", "line-2"):
                admin.put(
                    f"/api/v1/thresholds/surface/assignments/group/{group}", json={"version": 1}
                ).raise_for_status()
                admin.put(
                    f"/api/v1/workflows/{WORKFLOW}/assignments/group/{group}", json={"version": 1}
                ).raise_for_status()
    return Fleet(live)


def spec(*steps: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "workflow": WORKFLOW,
        "target": {"group": "line-1"},
        "steps": list(steps)
        or [{"kind": "canary", "devices": 2, "duration_s": 60, "min_samples": 100}, {"kind": "full"}],
    }
    body.update(overrides)
    return body


@pytest.fixture
def rollout_settings(cp_settings: ControlPlaneSettings) -> ControlPlaneSettings:
    """The test drives the controller itself (``tick()`` with its own clock): no background driver."""
    return cp_settings.model_copy(update={"rollout_tick_s": 0})


@pytest.fixture
def fleet(rollout_settings: ControlPlaneSettings) -> Iterator[Fleet]:
    with live_control_plane(rollout_settings) as live:
        yield setup_fleet(live)


# ---- spec validation -------------------------------------------------------------------------


def _fields(response: Any) -> set[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return {error["field"] for error in response.json()["errors"]}


STRUCTURAL_ERRORS: list[tuple[dict[str, Any], set[str]]] = [
    ({"steps": []}, {"body.steps"}),
    ({"target": {"group": "line-1", "devices": ["cam-1"]}}, {"body.target"}),
    ({"steps": [{"kind": "canary", "duration_s": 5}]}, {"body.steps[0]"}),
    ({"steps": [{"kind": "pause", "devices": 1}]}, {"body.steps[0]"}),
    ({"steps": [{"kind": "canary", "percent": 120}]}, {"body.steps[0].percent"}),
    ({"steps": [{"kind": "rollback"}]}, {"body.steps[0].kind"}),
    ({"analysis": {"max_error_rate": 2}}, {"body.analysis.max_error_rate"}),
    ({"gate": {"frames": -1}}, {"body.gate.frames"}),
    ({"bogus": 1}, {"body.bogus"}),
]


def test_structural_errors_name_the_field(sqlite_fleet: Fleet) -> None:
    for change, fields in STRUCTURAL_ERRORS:
        response = sqlite_fleet.admin.post("/api/v1/rollouts", json=spec(**change))
        assert _fields(response) == fields, change
        assert response.json()["detail"].startswith("invalid rollout spec: ")
    not_an_object = sqlite_fleet.admin.post("/api/v1/rollouts", json=[1, 2])
    assert not_an_object.status_code == 422


@pytest.fixture
def sqlite_fleet(tmp_path: Path) -> Iterator[Fleet]:
    settings = ControlPlaneSettings(data_dir=tmp_path / "cp", rollout_tick_s=0)
    with live_control_plane(settings) as live:
        yield setup_fleet(live)


def test_registry_errors_name_the_field(fleet: Fleet) -> None:
    post = fleet.admin.post
    cases: list[tuple[dict[str, Any], set[str], str]] = [
        ({"workflow": "nope"}, {"body.workflow"}, "workflow 'nope' does not exist"),
        ({"bundle": {"workflow_version": 9}}, {"body.bundle.workflow_version"}, "has no version 9"),
        ({"bundle": {"models": {WORKFLOW: 7}}}, {f"body.bundle.models.{WORKFLOW}"}, "has no version 7"),
        (
            {"bundle": {"models": {"other": 1}}},
            {"body.bundle.models.other", "body.bundle.models"},
            "does not use model 'other'",
        ),
        (
            {"bundle": {"threshold_sets": {"surface": 9}}},
            {"body.bundle.threshold_sets.surface"},
            "no version 9",
        ),
        (
            {"bundle": {"threshold_sets": {"nope": 1}}},
            {"body.bundle.threshold_sets.nope"},
            "reads no threshold",
        ),
        ({"target": {"group": "line-7"}}, {"body.target.group"}, "group 'line-7' does not exist"),
        ({"target": {"devices": ["cam-1", "cam-77"]}}, {"body.target.devices[1]"}, "'cam-77' does not exist"),
        ({"target": {"selector": {"line": "7"}}}, {"body.target"}, "matches no active device"),
    ]
    for change, fields, message in cases:
        response = post("/api/v1/rollouts", json=spec(**change))
        assert _fields(response) == fields, change
        assert message in response.json()["detail"], response.json()["detail"]
    # Threshold sets default to what the target runs; a target that disagrees must name one.
    fleet.admin.put(
        "/api/v1/thresholds/surface/assignments/device/cam-3", json={"version": 2}
    ).raise_for_status()
    response = post("/api/v1/rollouts", json=spec())
    assert _fields(response) == {"body.bundle.threshold_sets.surface"}
    assert "cam-3: 2" in response.json()["detail"]
    assert post("/api/v1/rollouts", json=spec(bundle={"threshold_sets": {"surface": 2}})).status_code == 201
    with fleet.live.services.db.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM rollouts")).scalar() == 1


def test_create_resolves_the_bundle_and_refuses_overlaps(fleet: Fleet) -> None:
    created = fleet.create(spec())
    assert created["id"].startswith("r-")
    assert len(created["id"]) == 12
    assert created["state"] == "running"
    assert created["step_index"] == 0
    assert created["step"] == {"kind": "canary", "devices": 2, "duration_s": 60.0, "min_samples": 100}
    bundle = created["bundle"]
    assert bundle["workflow"]["name"] == WORKFLOW
    assert bundle["workflow"]["version"] == 2
    assert [(m["name"], m["version"]) for m in bundle["models"]] == [(WORKFLOW, 2)]
    assert [(t["name"], t["version"]) for t in bundle["threshold_sets"]] == [
        ("surface", 1)
    ]  # what line-1 runs
    assert bundle["gate"] == {"warmup_frames": 5, "frames": 20, "max_errors": 0, "max_latency_ms": 1000.0}
    assert created["spec"]["analysis"]["max_error_rate"] == 0.02
    assert sorted(created["cohorts"]["canary"] + created["cohorts"]["baseline"]) == LINE
    assert len(created["cohorts"]["canary"]) == 2
    assert created["progress"]["devices_total"] == 2

    overlap = fleet.admin.post("/api/v1/rollouts", json=spec(target={"devices": ["cam-9", "cam-4"]}))
    assert overlap.status_code == 409, overlap.text
    assert created["id"] in overlap.json()["detail"]
    assert "cam-4" in overlap.json()["detail"]
    # Another workflow's target or devices outside it are fine.
    other = fleet.create(spec(target={"group": "line-2"}))
    assert other["cohorts"]["canary"] == ["cam-9"]

    listed = fleet.admin.get("/api/v1/rollouts", params={"limit": 1}).json()
    assert [item["id"] for item in listed["items"]] == [other["id"]]  # newest first
    rest = fleet.admin.get("/api/v1/rollouts", params={"limit": 1, "cursor": listed["next_cursor"]}).json()
    assert [item["id"] for item in rest["items"]] == [created["id"]]
    assert rest["next_cursor"] is None
    running = fleet.admin.get("/api/v1/rollouts", params={"state": "running", "workflow": WORKFLOW}).json()
    assert {item["id"] for item in running["items"]} == {created["id"], other["id"]}
    assert fleet.admin.get("/api/v1/rollouts", params={"state": "aborted"}).json()["items"] == []

    aborted = fleet.admin.post(f"/api/v1/rollouts/{created['id']}/abort", json={"reason": "wrong model"})
    assert aborted.status_code == 200, aborted.text
    again = fleet.create(spec(target={"devices": ["cam-4"]}))  # the overlap is gone
    assert again["state"] == "running"
    missing = fleet.admin.get("/api/v1/rollouts/r-0000000000")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_yaml_body(sqlite_fleet: Fleet) -> None:
    text = """
workflow: surface_inspection
target: {devices: [cam-1, cam-2]}
bundle: {models: {surface_inspection: 2}, threshold_sets: {surface: 2}}
steps:
  - {kind: shadow, percent: 50, duration_s: 30, min_samples: 10}
  - {kind: pause}
  - {kind: full}
gate: {frames: 50}
"""
    response = sqlite_fleet.admin.post(
        "/api/v1/rollouts", content=text, headers={"content-type": "application/yaml"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["bundle"]["gate"]["frames"] == 50
    assert [t["version"] for t in body["bundle"]["threshold_sets"]] == [2]
    assert len(body["cohorts"]["shadow"]) == 1
    broken = sqlite_fleet.admin.post(
        "/api/v1/rollouts", content="steps: [", headers={"content-type": "application/yaml"}
    )
    assert broken.status_code == 400
    assert "YAML" in broken.json()["detail"]


def test_viewers_read_operators_act(sqlite_fleet: Fleet) -> None:
    live = sqlite_fleet.live
    viewer = live.client(live.token("viewer", name="vera"))
    operator = live.client(live.token("operator", name="otto"))
    assert viewer.post("/api/v1/rollouts", json=spec()).status_code == 403
    created = operator.post("/api/v1/rollouts", json=spec())
    assert created.status_code == 201, created.text
    rollout_id = created.json()["id"]
    assert created.json()["created_by"] == "operator:otto"
    assert viewer.get(f"/api/v1/rollouts/{rollout_id}").status_code == 200
    assert viewer.get("/api/v1/rollouts").status_code == 200
    assert viewer.get(f"/api/v1/rollouts/{rollout_id}/decisions").status_code == 200
    for action in ("pause", "resume", "promote", "abort"):
        denied = viewer.post(f"/api/v1/rollouts/{rollout_id}/{action}", json={"reason": "x"})
        assert denied.status_code == 403, action
    assert operator.post(f"/api/v1/rollouts/{rollout_id}/pause", json={}).status_code == 200


# ---- the desired state, step by step -----------------------------------------------------------


def _refs(items: Any) -> list[dict[str, Any]]:
    return [{"name": a.name, "version": a.version, "sha256": a.sha256} for a in items]


def _check_bundle(fleet: Fleet, assignment: sync_pb2.WorkflowAssignment, rollout: dict[str, Any]) -> None:
    """The candidate assignment carries the signed bundle, and its artifacts are the bundle's."""
    key = load_public_key(fleet.live.services.signer.public_key_pem())
    manifest = verify_manifest(assignment.bundle_manifest, key)
    assert (manifest.kind, manifest.name, manifest.version) == ("bundle", rollout["id"], 1)
    verify_digest(manifest, hashlib.sha256(assignment.bundle).hexdigest(), len(assignment.bundle))
    document = json.loads(assignment.bundle)
    assert assignment.bundle == json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")
    assert document["rollout_id"] == rollout["id"]
    assert document == rollout["bundle"]
    assert hashlib.sha256(assignment.bundle).hexdigest() == rollout["bundle_sha256"]
    assert _refs([assignment.workflow]) == [document["workflow"]]
    assert _refs(assignment.models) == document["models"]
    assert _refs(assignment.threshold_sets) == document["threshold_sets"]
    for artifact in [assignment.workflow, *assignment.models, *assignment.threshold_sets]:
        verify_manifest(artifact.signed_manifest, key)


def _roles(state: sync_pb2.DesiredState) -> list[tuple[str, int, str, str]]:
    return [(w.role, w.workflow.version, w.rollout_id, w.models[0].name) for w in state.workflows]


def test_desired_state_through_the_steps(fleet: Fleet) -> None:
    before = {device: fleet.desired(device).generation for device in [*LINE, "cam-9"]}
    rollout = fleet.create(
        spec(
            {"kind": "shadow", "devices": 2, "duration_s": 10, "min_samples": 10},
            {"kind": "canary", "percent": 50, "duration_s": 10, "min_samples": 10},
            {"kind": "pause"},
            {"kind": "full"},
        )
    )
    rid = rollout["id"]
    shadow = set(rollout["cohorts"]["shadow"])
    assert len(shadow) == 2
    for device in LINE:
        state = fleet.desired(device)
        assert state.generation == before[device] + 1
        if device in shadow:
            assert [(w.role, w.workflow.version, w.rollout_id) for w in state.workflows] == [
                ("baseline", 1, rid),
                ("shadow", 2, rid),
            ]
            assert state.workflows[0].bundle == b""
            assert [m.version for m in state.workflows[0].models] == [1]
            _check_bundle(fleet, state.workflows[1], rollout)
        else:
            assert [(w.role, w.workflow.version, w.rollout_id) for w in state.workflows] == [
                ("baseline", 1, rid)
            ]
    outside = fleet.desired("cam-9")
    assert outside.generation == before["cam-9"]
    assert [(w.role, w.rollout_id) for w in outside.workflows] == [("", "")]

    # Recomputing without a change keeps every generation.
    with fleet.live.services.db.write() as conn:
        assert desired.refresh(conn, fleet.live.url) == []

    canary_step = fleet.admin.post(f"/api/v1/rollouts/{rid}/promote", json={"reason": "looks fine"}).json()
    canary = set(canary_step["cohorts"]["canary"])
    assert len(canary) == 3
    assert shadow <= canary
    for device in LINE:
        [assignment] = fleet.desired(device).workflows
        if device in canary:
            assert (assignment.role, assignment.workflow.version) == ("canary", 2)
            _check_bundle(fleet, assignment, rollout)
        else:
            assert (assignment.role, assignment.workflow.version, assignment.bundle) == ("baseline", 1, b"")
        assert assignment.rollout_id == rid

    paused = fleet.admin.post(f"/api/v1/rollouts/{rid}/promote", json={}).json()
    assert (paused["state"], paused["step_index"], paused["step"]) == ("paused", 2, {"kind": "pause"})
    assert "waiting for approval" in paused["paused_reason"]
    for device in LINE:  # as in the step before the pause
        [assignment] = fleet.desired(device).workflows
        assert assignment.role == ("canary" if device in canary else "baseline")

    full = fleet.admin.post(f"/api/v1/rollouts/{rid}/resume", json={"reason": "approved by QA"}).json()
    assert (full["state"], full["step_index"]) == ("running", 3)
    assert sorted(full["cohorts"]["canary"]) == LINE
    assert full["cohorts"]["baseline"] == []
    for device in LINE:
        [assignment] = fleet.desired(device).workflows
        assert (assignment.role, assignment.workflow.version, assignment.rollout_id) == ("canary", 2, rid)

    done = fleet.admin.post(f"/api/v1/rollouts/{rid}/promote", json={"reason": "ship it"}).json()
    assert done["state"] == "promoted"
    assert done["finished_at"] is not None
    for device in LINE:  # the candidate for good, outside any rollout
        [assignment] = fleet.desired(device).workflows
        assert (assignment.role, assignment.rollout_id, assignment.bundle) == ("", "", b"")
        assert (assignment.workflow.version, [m.version for m in assignment.models]) == (2, [2])
        assert [t.version for t in assignment.threshold_sets] == [1]
    with fleet.live.services.db.read() as conn:
        rows = (
            conn.execute(sa.select(workflow_assignments).where(workflow_assignments.c.target == "line-1"))
            .mappings()
            .all()
        )
    assert [(r["version"], r["assigned_by"], r["pins"]["models"]) for r in rows] == [
        (2, f"rollout:{rid}", {WORKFLOW: 2})
    ]
    assert [(w.workflow.version, w.rollout_id) for w in fleet.desired("cam-9").workflows] == [(1, "")]

    actions = [(d["action"], d["step_index"], d["actor"]) for d in fleet.decisions(rid)]
    assert actions == [
        ("start", 0, "operator:root"),
        ("promote", 0, "operator:root"),
        ("promote", 1, "operator:root"),
        ("pause", 2, "controller"),
        ("resume", 2, "operator:root"),
        ("promote", 2, "operator:root"),
        ("promote", 3, "operator:root"),
    ]
    entries = fleet.audit_ok()
    rollout_actions = [e["action"] for e in entries if e["resource"] == f"rollouts/{rid}"]
    assert sorted(rollout_actions) == sorted(
        [
            "rollout.create",
            "rollout.promote",
            "rollout.promote",
            "rollout.pause",
            "rollout.resume",
            "rollout.promote",
            "rollout.promote",
        ]
    )
    assert any(e["action"] == "workflow.assign" and e["resource"].endswith("/group/line-1") for e in entries)


def test_a_later_assignment_drops_the_pins(sqlite_fleet: Fleet) -> None:
    fleet = sqlite_fleet
    rollout = fleet.create(spec({"kind": "full"}, bundle={"threshold_sets": {"surface": 2}}))
    fleet.admin.post(f"/api/v1/rollouts/{rollout['id']}/promote", json={}).raise_for_status()
    [assignment] = fleet.desired("cam-0").workflows
    assert [t.version for t in assignment.threshold_sets] == [2]  # pinned (line-1 is assigned v1)
    fleet.admin.put(
        f"/api/v1/workflows/{WORKFLOW}/assignments/group/line-1", json={"version": 2}
    ).raise_for_status()
    [assignment] = fleet.desired("cam-0").workflows
    assert [t.version for t in assignment.threshold_sets] == [1]  # an operator's assignment: no pins


def test_abort_puts_every_device_back(fleet: Fleet) -> None:
    rollout = fleet.create(spec({"kind": "canary", "percent": 50}, {"kind": "full"}))
    rid = rollout["id"]
    generations = {device: fleet.desired(device).generation for device in LINE}
    no_reason = fleet.admin.post(f"/api/v1/rollouts/{rid}/abort", json={})
    assert _fields(no_reason) == {"body.reason"}
    aborted = fleet.admin.post(f"/api/v1/rollouts/{rid}/abort", json={"reason": "scratches on line 1"})
    assert aborted.status_code == 200
    body = aborted.json()
    assert (body["state"], body["reason"]) == ("aborted", "scratches on line 1")
    for device in LINE:
        state = fleet.desired(device)
        assert state.generation == generations[device] + 1
        [assignment] = state.workflows
        assert (assignment.role, assignment.rollout_id, assignment.workflow.version) == ("", "", 1)
    for action in ("pause", "resume", "promote", "abort"):
        refused = fleet.admin.post(f"/api/v1/rollouts/{rid}/{action}", json={"reason": "again"})
        assert refused.status_code == 409, action
        assert "is aborted" in refused.json()["detail"]
    [*_, last] = fleet.decisions(rid)
    assert (last["action"], last["actor"], last["reason"]) == (
        "abort",
        "operator:root",
        "scratches on line 1",
    )
