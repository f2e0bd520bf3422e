"""Canary bundles on a real agent, against a live control plane: pinned model versions, the
downgrade rule, refused bundles, warm-up, the health gate's rollback and results stamped with
their lineage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from agent.manifest import Manifest
from agent.nodes.inference import ModelInference
from agent.sync.reconciler import HttpFetcher, Reconciler
from agent.sync.telemetry import TelemetryCollector
from agent.workflow import Plan
from protos import sync_pb2
from tests.rollout.helpers import SwitchableTransport, bundle_document, candidate, sign_bundle
from tests.rollout.models import failing_model, nan_model, plain_model
from tests.sync.fleet import MODEL_V0, WORKFLOW_ID, Agents, Fleet, tamper_signature, wait_for

CONVERGED = sync_pb2.ReportedState.CONVERGED
Kind = sync_pb2.RolloutFailure


def reconciler_for(fleet: Fleet, agents: Agents, agent: object, transport: SwitchableTransport) -> Reconciler:
    return Reconciler(
        agent,  # type: ignore[arg-type]
        HttpFetcher(fleet.cp.url, fleet.credential, transport=transport),
        fleet.public_key,
        agents.root / "agent",
        device_id=fleet.device_id,
        agent_version="test",
        profile="x86-cpu",
    )


def running_plan(agent: Any) -> Plan:
    plan: Plan = agent.plans()[WORKFLOW_ID]
    return plan


def served_version(plan: Plan) -> str:
    (node,) = [n.impl for n in plan.nodes if isinstance(n.impl, ModelInference)]
    return node.served.record.version


def lineages(agents: Agents) -> list[dict[str, Any]]:
    return [result["lineage"] for result in agents.results()]


def failures(report: sync_pb2.ReportedState) -> list[tuple[str, int]]:
    return [(f.rollout_id, f.kind) for f in report.rollout_failures]


def canary_state(
    fleet: Fleet, generation: int, model_version: int, rollout_id: str, **gate: Any
) -> tuple[sync_pb2.DesiredState, str]:
    desired = fleet.desired(generation, model_version=model_version)
    sha = candidate(fleet, desired.workflows[0], rollout_id, gate=gate)
    return desired, sha


def test_a_canary_then_its_abort_runs_each_bundle_with_its_own_pinned_model_and_stamps_results(
    fleet: Fleet, agents: Agents, transport: SwitchableTransport
) -> None:
    agent = agents.start()
    reconciler = reconciler_for(fleet, agents, agent, transport)
    baseline = fleet.desired(1)
    assert reconciler.apply(baseline).phase == CONVERGED
    v1_sha = baseline.workflows[0].models[0].sha256
    wait_for(lambda: len(lineages(agents)) >= 3)

    fleet.upload_model(MODEL_V0, version=2)
    desired, bundle_sha = canary_state(fleet, 2, 2, "r-canary")
    report = reconciler.apply(desired)
    assert (report.phase, report.error, failures(report)) == (CONVERGED, "", [])
    (status,) = report.workflows
    assert (status.rollout_id, status.role, status.bundle_sha256) == ("r-canary", "canary", bundle_sha)
    assert served_version(running_plan(agent)) == "2"
    v2_sha = desired.workflows[0].models[0].sha256
    canary_stamp = {
        "workflow_id": WORKFLOW_ID,
        "workflow_version": 1,
        "model_sha256": v2_sha,
        "threshold_set": "surface",
        "threshold_version": 1,
        "rollout_id": "r-canary",
        "cohort": "canary",
        "bundle_sha256": bundle_sha,
    }
    wait_for(lambda: canary_stamp in lineages(agents))

    # the abort: the baseline again, a new generation; model 2 stays installed (and is the newest)
    report = reconciler.apply(fleet.desired(3))
    assert (report.phase, report.error) == (CONVERGED, "")
    assert agent.model_store.versions(WORKFLOW_ID) == ["1", "2"]
    plan = running_plan(agent)
    assert served_version(plan) == "1"  # pinned, not "the newest installed"
    (status,) = report.workflows
    assert (status.rollout_id, status.role, status.bundle_sha256) == ("", "", "")
    seen = len(lineages(agents))
    wait_for(lambda: len(lineages(agents)) >= seen + 3)
    after = lineages(agents)[seen + 1 :]
    assert {(s["model_sha256"], s["cohort"], s["bundle_sha256"]) for s in after} == {(v1_sha, "", "")}
    assert {s["model_sha256"] for s in lineages(agents)} == {v1_sha, v2_sha}

    # a restart runs the pinned baseline again from the data dir
    agents.stop(agent)
    agent = agents.start()
    reconciler = reconciler_for(fleet, agents, agent, transport)
    assert reconciler.restore() == []
    assert served_version(running_plan(agent)) == "1"


def test_the_downgrade_rule_accepts_only_the_exact_older_artifact_the_store_holds(
    fleet: Fleet, agents: Agents, transport: SwitchableTransport
) -> None:
    agent = agents.start()
    reconciler = reconciler_for(fleet, agents, agent, transport)
    assert reconciler.apply(fleet.desired(1)).phase == CONVERGED
    fleet.upload_model(MODEL_V0, version=2)
    assert reconciler.apply(fleet.desired(2, model_version=2)).phase == CONVERGED
    assert served_version(running_plan(agent)) == "2"

    # an authentic manifest of an older version 1 whose bytes are not the installed version 1's:
    # a rollback attack, refused
    attack = fleet.desired(3, model_version=1)
    ref = attack.workflows[0].models[0]
    other = fleet.ref("model", WORKFLOW_ID, 2)
    manifest = Manifest.parse(
        {**json.loads(ref.signed_manifest)["manifest"], "sha256": other.sha256, "size": other.size}
    )
    ref.signed_manifest, ref.sha256, ref.size, ref.url = (
        fleet.signed(manifest),
        other.sha256,
        other.size,
        other.url,
    )
    report = reconciler.apply(attack)
    assert report.phase == sync_pb2.ReportedState.FAILED
    assert "downgrade refused: refusing downgrade: installed version 2, offered version 1" in report.error
    assert served_version(running_plan(agent)) == "2"

    # the exact version 1 the store holds: a rollback, accepted with nothing fetched
    before = len(transport.requests)
    report = reconciler.apply(fleet.desired(4, model_version=1))
    assert (report.phase, report.error) == (CONVERGED, "")
    assert served_version(running_plan(agent)) == "1"
    assert len(transport.requests) == before


def test_refused_bundles_are_reported_never_fetched_nor_retried_and_the_baseline_keeps_running(
    fleet: Fleet, agents: Agents, transport: SwitchableTransport, tmp_path: Path
) -> None:
    agent = agents.start()
    reconciler = reconciler_for(fleet, agents, agent, transport)
    assert reconciler.apply(fleet.desired(1)).phase == CONVERGED
    baseline = running_plan(agent)
    fleet.upload_model(MODEL_V0, version=2)
    fleet.upload_model(plain_model(tmp_path / "plain.onnx"), version=3)
    generation = 1

    def refused(
        desired: sync_pb2.DesiredState, *expected: str, fetched: bool = False
    ) -> sync_pb2.RolloutFailure:
        before = len(transport.requests)
        report = reconciler.apply(desired)
        assert (report.phase, report.generation) == (CONVERGED, desired.generation)  # the rest applied
        failure: sync_pb2.RolloutFailure = report.rollout_failures[-1]
        assert (failure.kind, failure.workflow_id) == (Kind.REFUSED, WORKFLOW_ID)
        assert failure.bundle_sha256 == hashlib.sha256(desired.workflows[0].bundle).hexdigest()
        for text in expected:
            assert text in failure.reason, failure.reason
        assert running_plan(agent) is baseline
        assert (len(transport.requests) > before) == fetched
        assert "2" not in agent.model_store.versions(WORKFLOW_ID)  # nothing installed
        return failure

    def next_state(model_version: int, rollout_id: str) -> sync_pb2.DesiredState:
        nonlocal generation
        generation += 1
        desired, _ = canary_state(fleet, generation, model_version, rollout_id)
        return desired

    # a bad signature on the bundle manifest
    desired = next_state(2, "r-badsig")
    desired.workflows[0].bundle_manifest = tamper_signature(desired.workflows[0].bundle_manifest)
    refused(desired, "bundle of rollout 'r-badsig'", "bad", "signature does not verify")

    # bundle bytes that are not the ones signed
    desired = next_state(2, "r-digest")
    desired.workflows[0].bundle = desired.workflows[0].bundle.replace(b'"frames":5', b'"frames":9')
    refused(desired, "digest mismatch")

    # artifacts not the bundle's: the bundle (signed) names model 3, the assignment model 2
    desired = next_state(2, "r-mixed")
    assignment = desired.workflows[0]
    other = sync_pb2.WorkflowAssignment()
    other.CopyFrom(assignment)
    other.models[0].CopyFrom(fleet.ref("model", WORKFLOW_ID, 3))
    sign_bundle(fleet, assignment, bundle_document(other, "r-mixed", {"frames": 5}), "r-mixed")
    refused(
        desired,
        "the assignment's artifacts are not the bundle's",
        "models: assigned 'surface_inspection' version 2",
    )

    # a bad signature on an artifact of the bundle
    desired = next_state(2, "r-artifact-sig")
    desired.workflows[0].models[0].signed_manifest = tamper_signature(
        desired.workflows[0].models[0].signed_manifest
    )
    refused(desired, "model 'surface_inspection' version 2", "bad signature")

    # a corrupt artifact: the bytes served are another model's (fetched, never installed)
    desired = next_state(2, "r-corrupt")
    desired.workflows[0].models[0].url = fleet.ref("model", WORKFLOW_ID, 3).url
    sign_bundle(
        fleet, desired.workflows[0], bundle_document(desired.workflows[0], "r-corrupt", {}), "r-corrupt"
    )
    corrupt = refused(desired, "digest mismatch", "content does not match the manifest", fetched=True)

    # the same bundle under a new generation: not retried, reported again
    generation += 1
    desired.generation = generation
    before = len(transport.requests)
    report = reconciler.apply(desired)
    assert len(transport.requests) == before
    assert [f.bundle_sha256 for f in report.rollout_failures] == [
        corrupt.bundle_sha256
    ]  # older ones forgotten
    assert reconciler.report().rollout_failures[0].reason == corrupt.reason

    # older than what runs: model 3 runs, then a bundle of model 1, which left the store
    generation += 1
    assert reconciler.apply(fleet.desired(generation, model_version=3)).phase == CONVERGED
    baseline = running_plan(agent)
    agent.model_store.remove(WORKFLOW_ID, "1")
    desired = next_state(1, "r-old")
    report = reconciler.apply(desired)
    assert failures(report) == [("r-old", Kind.REFUSED)]
    assert "downgrade refused" in report.rollout_failures[0].reason
    assert running_plan(agent) is baseline

    # once the desired state no longer names a failed bundle, it is no longer reported
    generation += 1
    assert failures(reconciler.apply(fleet.desired(generation, model_version=3))) == []


def test_a_candidate_whose_warm_up_fails_is_never_switched_to(
    fleet: Fleet, agents: Agents, transport: SwitchableTransport, tmp_path: Path
) -> None:
    agent = agents.start()
    reconciler = reconciler_for(fleet, agents, agent, transport)
    assert reconciler.apply(fleet.desired(1)).phase == CONVERGED
    baseline = running_plan(agent)
    wait_for(lambda: len(lineages(agents)) >= 2)  # frames to warm up on
    fleet.upload_model(failing_model(tmp_path / "failing.onnx"), version=2)
    service = agent.service(WORKFLOW_ID)
    assert service is not None
    swaps = service.plan_swaps

    desired, sha = canary_state(fleet, 2, 2, "r-warmup", warmup_frames=3)
    report = reconciler.apply(desired)
    assert report.phase == CONVERGED
    (failure,) = report.rollout_failures
    assert (failure.kind, failure.rollout_id, failure.bundle_sha256) == (Kind.WARMUP, "r-warmup", sha)
    assert "3 of 3 warm-up runs failed" in failure.reason
    assert "node 'infer'" in failure.reason
    assert running_plan(agent) is baseline
    assert service.plan_swaps == swaps
    assert all(s["cohort"] == "" for s in lineages(agents))  # no canary result was ever produced
    state = json.loads((agents.root / "agent" / "sync" / "state.json").read_text())
    assert state["workflows"][WORKFLOW_ID]["bundle_sha256"] == ""


@pytest.mark.parametrize(
    ("model", "gate", "expected"),
    [
        (nan_model, {"warmup_frames": 0}, "holds NaN or Inf"),
        (failing_model, {"warmup_frames": 0, "max_errors": 2}, "3 failed run(s)"),
        (plain_model, {"max_latency_ms": 0.5}, "over the gate's 0.5 ms"),
    ],
    ids=["nan-outputs", "failing-model", "latency"],
)
def test_the_health_gate_rolls_back_by_itself_offline_between_two_frames(
    fleet: Fleet,
    agents: Agents,
    transport: SwitchableTransport,
    tmp_path: Path,
    model: Any,
    gate: dict[str, Any],
    expected: str,
) -> None:
    agent = agents.start()
    reconciler = reconciler_for(fleet, agents, agent, transport)
    collector = TelemetryCollector(interval_s=60)
    reconciler.telemetry = collector
    changed: list[sync_pb2.ReportedState] = []
    reconciler.on_changed = changed.append
    baseline_state = fleet.desired(1)
    assert reconciler.apply(baseline_state).phase == CONVERGED
    baseline = running_plan(agent)
    wait_for(lambda: len(lineages(agents)) >= 2)
    fleet.upload_model(model(tmp_path / "candidate.onnx"), version=2)

    desired, sha = canary_state(fleet, 2, 2, "r-gate", **gate)
    report = reconciler.apply(desired)
    assert (report.phase, list(report.rollout_failures)) == (CONVERGED, [])
    transport.offline = True  # from here on the control plane is unreachable

    wait_for(lambda: bool(changed))
    assert running_plan(agent) is baseline  # by itself
    (failure,) = changed[-1].rollout_failures
    assert (failure.kind, failure.rollout_id, failure.bundle_sha256) == (Kind.HEALTH_GATE, "r-gate", sha)
    assert expected in failure.reason, failure.reason
    assert [t[2] for t in transport.requests if t[2] == 0] == []  # no network was needed
    state = json.loads((agents.root / "agent" / "sync" / "state.json").read_text())
    assert state["workflows"][WORKFLOW_ID]["bundle_sha256"] == ""
    assert state["workflows"][WORKFLOW_ID]["models"] == {WORKFLOW_ID: 1}

    (event,) = [e for e in collector.take_events() if e.kind == "rollback"]
    assert event.severity == "error"
    assert (event.lineage.rollout_id, event.lineage.cohort) == ("r-gate", "canary")
    assert event.lineage.model_sha256 == desired.workflows[0].models[0].sha256

    # results: the baseline's, then the canary's (at most the gate's frames), then the baseline's
    stamps = lineages(agents)
    cohorts = [s["cohort"] for s in stamps]
    first = cohorts.index("canary")
    last = len(cohorts) - 1 - cohorts[::-1].index("canary")
    assert set(cohorts[first : last + 1]) == {"canary"}
    seen = len(stamps)
    wait_for(lambda: len(lineages(agents)) >= seen + 2)
    assert {s["cohort"] for s in lineages(agents)[last + 1 :]} == {""}
    assert {s["model_sha256"] for s in stamps if s["cohort"] == "canary"} == {
        desired.workflows[0].models[0].sha256
    }

    # the same desired state again (a reconnect, a new generation): not retried
    desired.generation = 3
    report = reconciler.apply(desired)
    assert running_plan(agent) is baseline
    assert failures(report) == [("r-gate", Kind.HEALTH_GATE)]


def test_a_health_gate_rollback_keeps_a_local_threshold_override_marked_local(
    fleet: Fleet, agents: Agents, transport: SwitchableTransport, tmp_path: Path
) -> None:
    agent = agents.start()
    reconciler = reconciler_for(fleet, agents, agent, transport)
    changed: list[sync_pb2.ReportedState] = []
    reconciler.on_changed = changed.append
    assert reconciler.apply(fleet.desired(1)).phase == CONVERGED
    baseline = running_plan(agent)
    override = agent.thresholds.set_one("surface", "default", 0.9)  # a line engineer's SetThreshold
    assert override.local_base == 1
    fleet.upload_model(nan_model(tmp_path / "candidate.onnx"), version=2)

    desired, _ = canary_state(fleet, 2, 2, "r-local", warmup_frames=0)
    assert reconciler.apply(desired).phase == CONVERGED
    wait_for(lambda: bool(changed))
    assert running_plan(agent) is baseline
    live = agent.thresholds.get("surface")
    assert (live.version, dict(live.values), live.local_base) == (override.version, {"default": 0.9}, 1)
