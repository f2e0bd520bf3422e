"""The reconciler against a real control plane: releases uploaded through the API, desired states
built from their content URLs and signed manifests, applied into a running agent."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from agent.sync.reconciler import HttpFetcher, Reconciler
from agent.workflow import Plan
from protos import sync_pb2
from tests.sync.fleet import (
    MODEL_V0,
    MODEL_V1,
    WORKFLOW_ID,
    Agents,
    Fleet,
    RecordingTransport,
    expired_manifest,
    frames_keep_flowing,
    tamper_signature,
    wait_for,
)

CONVERGED = sync_pb2.ReportedState.CONVERGED
FAILED = sync_pb2.ReportedState.FAILED


@pytest.fixture
def transport() -> Iterator[RecordingTransport]:
    transport = RecordingTransport()
    yield transport
    transport.close()


def reconciler_for(fleet: Fleet, agents: Agents, agent: object, transport: RecordingTransport) -> Reconciler:
    fetcher = HttpFetcher(fleet.cp.url, fleet.credential, transport=transport)
    return Reconciler(
        agent,  # type: ignore[arg-type]
        fetcher,
        fleet.public_key,
        agents.root / "agent",
        device_id=fleet.device_id,
        agent_version="test",
        profile="x86-cpu",
    )


def running_plan(agent: object) -> Plan:
    plans = agent.plans()  # type: ignore[attr-defined]
    plan: Plan = plans[WORKFLOW_ID]
    return plan


def test_converges_then_the_same_desired_state_costs_nothing_even_after_a_restart(
    fleet: Fleet, agents: Agents, transport: RecordingTransport
) -> None:
    agent = agents.start()
    assert agent.service(WORKFLOW_ID) is None  # bound by id: waits for the control plane
    reconciler = reconciler_for(fleet, agents, agent, transport)
    desired = fleet.desired(1)

    report = reconciler.apply(desired)
    assert report.error == ""
    assert (report.phase, report.generation, report.attempted_generation) == (CONVERGED, 1, 1)
    assert report.health.state == sync_pb2.Health.OK
    (status,) = report.workflows
    assert (status.workflow_id, status.active_version) == (WORKFLOW_ID, 1)
    assert status.lineage.model_sha256 == desired.workflows[0].models[0].sha256
    assert (status.lineage.threshold_set, status.lineage.threshold_version) == ("surface", 1)
    assert status.backend.startswith("onnxruntime")

    record = agent.model_store.resolve(WORKFLOW_ID, "1")
    assert record.sha256 == desired.workflows[0].models[0].sha256
    assert agent.model_store.verify(record)
    live = agent.thresholds.get("surface")
    assert live is not None
    assert (live.version, dict(live.values)) == (1, {"default": 0.535})
    plan = running_plan(agent)
    assert plan.version == 1
    assert frames_keep_flowing(agent)  # the config's sources feed the delivered workflow
    fetched = sorted(path for path, _, _ in transport.requests)
    assert fetched == [
        "/api/v1/models/surface_inspection/versions/1/content",
        "/api/v1/thresholds/surface/versions/1/content",
        "/api/v1/workflows/surface_inspection/versions/1/content",
    ]

    # the retained desired state again (a reconnect): nothing fetched, nothing recompiled
    again = reconciler.apply(desired)
    assert (again.phase, again.generation) == (CONVERGED, 1)
    assert len(transport.requests) == 3
    assert running_plan(agent) is plan

    # the same content under a new generation: verified, but nothing fetched or recompiled
    bumped = fleet.desired(2)
    report = reconciler.apply(bumped)
    assert (report.phase, report.generation) == (CONVERGED, 2)
    assert len(transport.requests) == 3
    assert running_plan(agent) is plan
    state = json.loads((agents.root / "agent" / "sync" / "state.json").read_text())
    assert state["generation"] == 2
    assert state["workflows"][WORKFLOW_ID]["models"] == {WORKFLOW_ID: 1}

    # a restart: the applied workflow runs again from the data dir, before any network
    agents.stop(agent)
    agent = agents.start()
    reconciler = reconciler_for(fleet, agents, agent, transport)
    assert reconciler.restore() == []
    assert running_plan(agent).version == 1
    assert frames_keep_flowing(agent)
    report = reconciler.apply(bumped)
    assert (report.phase, report.generation) == (CONVERGED, 2)
    assert len(transport.requests) == 3
    assert reconciler.report().generation == 2


def test_a_threshold_change_reaches_the_running_workflow_within_a_second_without_recompiling(
    fleet: Fleet, agents: Agents, transport: RecordingTransport
) -> None:
    agent = agents.start(fps=50)
    reconciler = reconciler_for(fleet, agents, agent, transport)
    assert reconciler.apply(fleet.desired(1)).phase == CONVERGED
    plan = running_plan(agent)
    service = agent.service(WORKFLOW_ID)
    assert service is not None
    swaps = service.plan_swaps
    fleet.upload_thresholds("surface", {"default": 0.9})

    def decided_by(version: int) -> bool:
        return any(
            (result["outputs"].get("gate") or {}).get("threshold_set")
            == {"name": "surface", "version": version}
            for result in agents.results()
        )

    wait_for(lambda: decided_by(1))
    desired = fleet.desired(2, threshold_version=2)
    started = time.monotonic()
    report = reconciler.apply(desired)
    wait_for(lambda: decided_by(2), timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert (report.phase, report.generation) == (CONVERGED, 2)
    live = agent.thresholds.get("surface")
    assert live is not None
    assert (live.version, dict(live.values)) == (2, {"default": 0.9})
    assert running_plan(agent) is plan  # no recompile, no swap
    assert service.plan_swaps == swaps
    assert transport.requests[-1][0] == "/api/v1/thresholds/surface/versions/2/content"


def test_refused_artifacts_are_reported_precisely_and_the_previous_workflow_keeps_running(
    fleet: Fleet, agents: Agents, transport: RecordingTransport
) -> None:
    agent = agents.start()
    reconciler = reconciler_for(fleet, agents, agent, transport)
    assert reconciler.apply(fleet.desired(1)).phase == CONVERGED

    # an upgrade: model version 2 (other bytes) is installed and the workflow recompiled on it
    fleet.upload_model(MODEL_V0, version=2)
    before = running_plan(agent)
    report = reconciler.apply(fleet.desired(2, model_version=2))
    assert (report.phase, report.generation, report.error) == (CONVERGED, 2, "")
    plan = running_plan(agent)
    assert plan is not before
    assert agent.model_store.versions(WORKFLOW_ID) == ["1", "2"]
    fleet.upload_model(MODEL_V1, version=3)

    def refused(generation: int, desired: sync_pb2.DesiredState, *expected: str) -> str:
        report = reconciler.apply(desired)
        assert report.phase == FAILED, report
        assert (report.generation, report.attempted_generation) == (2, generation)
        assert report.health.state == sync_pb2.Health.DEGRADED
        assert list(report.health.problems) == [report.error]
        for text in expected:
            assert text in report.error, report.error
        assert running_plan(agent) is plan  # untouched
        assert frames_keep_flowing(agent)
        return report.error

    def model(edit_ref: object) -> object:
        def edit(assignment: sync_pb2.WorkflowAssignment) -> None:
            edit_ref(assignment.models[0])  # type: ignore[operator]

        return edit

    def tampered(ref: sync_pb2.ArtifactRef) -> None:
        ref.signed_manifest = tamper_signature(ref.signed_manifest)

    error = refused(
        3,
        fleet.desired(3, model_version=3, edit=model(tampered)),  # type: ignore[arg-type]
        "model 'surface_inspection' version 3",
        "bad signature",
        "signature does not verify",
    )
    assert error.startswith("model 'surface_inspection' version 3 (workflow 'surface_inspection'): ")

    def expired(ref: sync_pb2.ArtifactRef) -> None:
        ref.signed_manifest = fleet.signed(expired_manifest(ref))

    refused(
        4,
        fleet.desired(4, model_version=3, edit=model(expired)),  # type: ignore[arg-type]
        "model 'surface_inspection' version 3",
        "expired manifest",
        "expired at",
    )
    # version 1 is older than the newest installed; going back to it is a rollback only while that
    # very file is still in the store (tests/rollout cover that case): without it, a downgrade
    agent.model_store.remove(WORKFLOW_ID, "1")
    refused(
        5,
        fleet.desired(5, model_version=1),
        "model 'surface_inspection' version 1",
        "downgrade refused",
        "installed version 2, offered version 1",
    )

    def wrong_bytes(ref: sync_pb2.ArtifactRef) -> None:
        ref.url = ref.url.replace("/versions/3/", "/versions/2/")  # another model's content

    refused(
        6,
        fleet.desired(6, model_version=3, edit=model(wrong_bytes)),  # type: ignore[arg-type]
        "model 'surface_inspection' version 3",
        "digest mismatch",
        "content does not match the manifest",
    )

    def missing(ref: sync_pb2.ArtifactRef) -> None:
        ref.url = ref.url.replace("/versions/3/", "/versions/99/")

    refused(
        7,
        fleet.desired(7, model_version=3, edit=model(missing)),  # type: ignore[arg-type]
        "model 'surface_inspection' version 3",
        "download failed",
        "HTTP 404",
        "has no version 99",
    )
    assert not reconciler.retry_advised  # a 404 is not transient

    # a graph the control plane accepts but this device cannot compile (a schema it lacks)
    fleet.upload_workflow(
        {
            "id": "order_check",
            "nodes": [{"id": "check", "type": "data_validation", "config": {"schema": "order_schema_v1"}}],
            "edges": [],
        }
    )
    order_check = sync_pb2.WorkflowAssignment(workflow=fleet.ref("workflow", "order_check", 1))
    refused(
        8,
        fleet.desired(8, model_version=3, extra=[order_check]),
        "workflow 'order_check' version 1: compile error:",
        "order_schema_v1",
    )
    assert agent.model_store.versions(WORKFLOW_ID) == ["2", "3"]  # verified, installed, not yet run
    assert agent.service("order_check") is None

    # the fix arrives: converged on version 3
    report = reconciler.apply(fleet.desired(9, model_version=3))
    assert (report.phase, report.generation, report.error) == (CONVERGED, 9, "")
    assert running_plan(agent) is not plan


def test_an_interrupted_download_resumes_with_a_range_request(
    fleet: Fleet, agents: Agents, transport: RecordingTransport
) -> None:
    agent = agents.start()
    reconciler = reconciler_for(fleet, agents, agent, transport)
    desired = fleet.desired(1)
    ref = desired.workflows[0].models[0]
    data = MODEL_V1.read_bytes()
    part = reconciler.part_path(ref.sha256)
    assert part.parent == agents.root / "agent" / "sync" / "downloads"
    part.write_bytes(data[:100_000])  # what an interrupted download left

    report = reconciler.apply(desired)
    assert (report.phase, report.error) == (CONVERGED, "")
    model_requests = [r for r in transport.requests if r[0].startswith("/api/v1/models/")]
    assert model_requests == [("/api/v1/models/surface_inspection/versions/1/content", "bytes=100000-", 206)]
    assert agent.model_store.verify(agent.model_store.resolve(WORKFLOW_ID, "1"))
    assert not part.exists()


def test_a_corrupt_partial_download_is_fetched_again_whole(
    fleet: Fleet, agents: Agents, transport: RecordingTransport
) -> None:
    agent = agents.start()
    reconciler = reconciler_for(fleet, agents, agent, transport)
    desired = fleet.desired(1)
    part = reconciler.part_path(desired.workflows[0].models[0].sha256)
    part.write_bytes(b"\0" * 50_000)  # not a prefix of the model

    report = reconciler.apply(desired)
    assert (report.phase, report.error) == (CONVERGED, "")
    model_requests = [r for r in transport.requests if r[0].startswith("/api/v1/models/")]
    assert [(rng, status) for _, rng, status in model_requests] == [("bytes=50000-", 206), (None, 200)]


def test_a_desired_state_for_another_device_or_an_older_generation_changes_nothing(
    fleet: Fleet, agents: Agents, transport: RecordingTransport
) -> None:
    agent = agents.start()
    reconciler = reconciler_for(fleet, agents, agent, transport)
    assert reconciler.apply(fleet.desired(2)).phase == CONVERGED
    plan = running_plan(agent)

    stale = reconciler.apply(fleet.desired(1, threshold_version=None))
    assert (stale.phase, stale.generation, stale.attempted_generation) == (CONVERGED, 2, 2)

    other = fleet.desired(3)
    other.device_id = "someone-else"
    report = reconciler.apply(other)
    assert report.phase == FAILED
    assert "for device 'someone-else'" in report.error
    assert running_plan(agent) is plan
