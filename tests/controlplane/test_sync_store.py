"""Desired state from assignments, and idempotent ingest into roll-ups, on SQLite and PostgreSQL
(no broker here: the MQTT path has its own tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import timestamp_pb2

from agent.manifest import load_public_key, verify_manifest
from controlplane import desired
from controlplane.bridge import ingest
from controlplane.telemetry import percentile
from protos import sync_pb2
from tests.controlplane.live import LiveControlPlane

REPO = Path(__file__).resolve().parents[2]
BOUNDS = [1.0, 2.0, 5.0, 10.0]


def setup_fleet(live: LiveControlPlane) -> None:
    admin = live.admin()
    for i, line in enumerate(["3", "3", "4"]):
        live.enroll(f"cam-{i}", labels={"line": line})
    admin.post("/api/v1/groups", json={"name": "line3", "selector": {"line": "3"}}).raise_for_status()
    model = (REPO / "models" / "surface_inspection_v1.onnx").read_bytes()
    admin.post("/api/v1/models/surface_inspection/versions", content=model).raise_for_status()
    graph = (REPO / "examples" / "workflows" / "surface_inspection.json").read_text()
    admin.post(
        "/api/v1/workflows", content=graph, headers={"content-type": "application/json"}
    ).raise_for_status()
    admin.post("/api/v1/thresholds/surface/versions", json={"values": {"default": 0.5}}).raise_for_status()


def state(live: LiveControlPlane, device_id: str) -> sync_pb2.DesiredState | None:
    with live.services.db.read() as conn:
        return desired.load(conn, device_id)


def test_desired_state_follows_assignments(control_plane: LiveControlPlane) -> None:
    live = control_plane
    setup_fleet(live)
    admin = live.admin()
    assert state(live, "cam-0") is not None
    assert list(state(live, "cam-0").workflows) == []  # type: ignore[union-attr]
    before = state(live, "cam-0").generation  # type: ignore[union-attr]

    admin.put("/api/v1/thresholds/surface/assignments/group/line3", json={"version": 1}).raise_for_status()
    assigned = admin.put("/api/v1/workflows/surface_inspection/assignments/group/line3", json={"version": 1})
    assert assigned.status_code == 200, assigned.text
    for device in ("cam-0", "cam-1"):
        current = state(live, device)
        assert current is not None
        assert current.generation > before
        [workflow] = current.workflows
        assert (workflow.workflow.name, workflow.workflow.version) == ("surface_inspection", 1)
        assert [(m.name, m.version) for m in workflow.models] == [("surface_inspection", 1)]
        assert [(t.name, t.version) for t in workflow.threshold_sets] == [("surface", 1)]
        key = load_public_key(live.services.signer.public_key_pem())
        manifest = verify_manifest(workflow.models[0].signed_manifest, key)
        assert manifest.sha256 == workflow.models[0].sha256
        assert workflow.models[0].url.startswith(live.url)
    assert list(state(live, "cam-2").workflows) == []  # type: ignore[union-attr]

    # Recomputing an unchanged state keeps its generation.
    generation = state(live, "cam-0").generation  # type: ignore[union-attr]
    with live.services.db.write() as conn:
        assert desired.refresh(conn, live.url) == []
    assert state(live, "cam-0").generation == generation  # type: ignore[union-attr]

    # A device's own assignment beats its group's.
    admin.post("/api/v1/thresholds/surface/versions", json={"values": {"default": 0.4}}).raise_for_status()
    admin.put("/api/v1/thresholds/surface/assignments/device/cam-1", json={"version": 2}).raise_for_status()
    assert [t.version for t in state(live, "cam-1").workflows[0].threshold_sets] == [2]  # type: ignore[union-attr]
    assert [t.version for t in state(live, "cam-0").workflows[0].threshold_sets] == [1]  # type: ignore[union-attr]

    # Relabelling moves a device in or out of the group's workflows.
    etag = admin.get("/api/v1/devices/cam-2").headers["etag"]
    admin.patch(
        "/api/v1/devices/cam-2", json={"labels": {"line": "3"}}, headers={"If-Match": etag}
    ).raise_for_status()
    assert [w.workflow.name for w in state(live, "cam-2").workflows] == ["surface_inspection"]  # type: ignore[union-attr]


def histogram(values: list[float]) -> sync_pb2.Histogram:
    counts = [0] * (len(BOUNDS) + 1)
    for value in values:
        counts[next((i for i, b in enumerate(BOUNDS) if value <= b), len(BOUNDS))] += 1
    return sync_pb2.Histogram(bounds=BOUNDS, counts=counts, sum=sum(values), count=len(values))


def telemetry_record(seq: int, at: datetime, runs: int, rejected: int) -> sync_pb2.Record:
    stamp = timestamp_pb2.Timestamp(seconds=int(at.timestamp()))
    record = sync_pb2.Record(seq=seq, created_at=stamp)
    record.telemetry.window_end.CopyFrom(stamp)
    workflow = record.telemetry.workflows.add(
        workflow_id="surface_inspection", runs=runs, passed=runs - rejected, failed=rejected
    )
    workflow.lineage.workflow_version = 1
    workflow.lineage.model_sha256 = "ab" * 32
    workflow.latency_ms.CopyFrom(histogram([1.5] * (runs - 1) + [8.0]))
    workflow.node_latency_ms["infer"].CopyFrom(histogram([1.0] * runs))
    record.telemetry.system.cpu_percent = 12.5
    return record


def event_record(seq: int, at: datetime) -> sync_pb2.Record:
    record = sync_pb2.Record(seq=seq, created_at=timestamp_pb2.Timestamp(seconds=int(at.timestamp())))
    record.event.at.CopyFrom(record.created_at)
    record.event.kind = "part_rejected"
    record.event.workflow_id = "surface_inspection"
    record.event.attributes_json = '{"score": 0.91}'
    record.event.lineage.cohort = "canary"
    return record


def test_ingest_is_idempotent_and_rolls_up(control_plane: LiveControlPlane) -> None:
    live = control_plane
    live.enroll("cam-1")
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    records = [telemetry_record(1, now, 10, 2), event_record(2, now), telemetry_record(3, now, 20, 1)]
    with live.services.db.write() as conn:
        assert ingest.ingest_records(conn, "cam-1", records) == [1, 2, 3]
    with live.services.db.write() as conn:  # the same batch again: a lost ack
        assert ingest.ingest_records(conn, "cam-1", records[1:]) == [2, 3]
    admin = live.admin()
    params = {
        "from": (now - timedelta(minutes=5)).isoformat(),
        "to": (now + timedelta(minutes=5)).isoformat(),
    }
    points = admin.get("/api/v1/devices/cam-1/telemetry", params=params).json()["points"]
    assert len(points) == 1
    [point] = points
    assert (point["runs"], point["passed"], point["failed"]) == (30, 27, 3)
    assert 1.0 <= point["latency_ms"]["p50"] <= 2.0
    assert 5.0 <= point["latency_ms"]["p99"] <= 10.0
    listed = admin.get("/api/v1/events", params={"device": "cam-1"}).json()["items"]
    assert [(e["seq"], e["kind"], e["attributes"], e["lineage"]["cohort"]) for e in listed] == [
        (2, "part_rejected", {"score": 0.91}, "canary")
    ]
    admin.post("/api/v1/groups", json={"name": "all", "selector": {}}).raise_for_status()
    group = admin.get("/api/v1/groups/all/telemetry", params=params).json()["points"]
    assert group[0]["runs"] == 30
    assert group[0]["devices"] == 1


def test_reported_state_and_status(control_plane: LiveControlPlane) -> None:
    live = control_plane
    live.enroll("cam-1")
    reported = sync_pb2.ReportedState(
        device_id="cam-1", generation=4, attempted_generation=5, phase=sync_pb2.ReportedState.FAILED
    )
    reported.error = "model 'm' v2: signature by an unknown key"
    with live.services.db.write() as conn:
        ingest.ingest_reported(conn, "cam-1", reported)
        ingest.ingest_status(conn, "cam-1", sync_pb2.Status(state=sync_pb2.Status.ONLINE))
    device = live.admin().get("/api/v1/devices/cam-1").json()
    assert device["reported_state"]["phase"] == "FAILED"
    assert device["reported_state"]["error"].startswith("model 'm' v2")
    assert device["reported_state"]["generation"] == "4"  # int64 as JSON text, per the protobuf JSON mapping


@pytest.mark.parametrize(
    ("values", "q", "low", "high"),
    [([1.5] * 99 + [8.0], 0.5, 1.0, 2.0), ([1.5] * 99 + [8.0], 0.999, 5.0, 10.0), ([20.0], 0.5, 10.0, 10.0)],
)
def test_percentile_from_histogram(values: list[float], q: float, low: float, high: float) -> None:
    h = histogram(values)
    result = percentile({"bounds": list(h.bounds), "counts": list(h.counts), "count": h.count}, q)
    assert result is not None
    assert low <= result <= high


def test_seq_ranges() -> None:
    assert ingest.ranges([3, 1, 2, 7, 8, 8, 10]) == [(1, 3), (7, 8), (10, 10)]
