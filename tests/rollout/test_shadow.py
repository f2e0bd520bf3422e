"""Shadow mode on a real agent: the candidate runs on the active plan's frames with its bundle's own
thresholds, is compared and counted under the shadow lineage, and never acts."""

from __future__ import annotations

from agent.nodes.emit import Emit
from agent.sync.telemetry import TelemetryCollector
from protos import sync_pb2
from tests.rollout.helpers import SwitchableTransport, candidate
from tests.rollout.test_canary import lineages, reconciler_for, running_plan
from tests.sync.fleet import MODEL_V0, WORKFLOW_ID, Agents, Fleet, wait_for

CONVERGED = sync_pb2.ReportedState.CONVERGED


def test_a_shadow_candidate_is_compared_and_counted_but_never_acts(
    fleet: Fleet, agents: Agents, transport: SwitchableTransport
) -> None:
    agent = agents.start(fps=30)
    collector = TelemetryCollector(interval_s=60)
    agent.telemetry = collector  # as a managed agent's: the shadow runner counts into it
    reconciler = reconciler_for(fleet, agents, agent, transport)
    assert reconciler.apply(fleet.desired(1)).phase == CONVERGED
    service = agent.service(WORKFLOW_ID)
    assert service is not None
    service.telemetry = collector
    active = running_plan(agent)

    # the candidate: model 2 and a threshold set of its own that rejects every part
    fleet.upload_model(MODEL_V0, version=2)
    fleet.upload_thresholds("surface", {"default": 0.0})
    desired = fleet.desired(2)
    shadow = sync_pb2.WorkflowAssignment(
        workflow=fleet.ref("workflow", WORKFLOW_ID, 1),
        models=[fleet.ref("model", WORKFLOW_ID, 2)],
        threshold_sets=[fleet.ref("thresholds", "surface", 2)],
    )
    bundle_sha = candidate(fleet, shadow, "r-shadow", role="shadow")
    desired.workflows.append(shadow)
    report = reconciler.apply(desired)
    assert (report.phase, report.error) == (CONVERGED, "")
    (status,) = report.workflows
    assert (status.active_version, status.shadow_version) == (1, 1)
    assert running_plan(agent) is active  # the active plan is untouched
    live = agent.thresholds.get("surface")
    assert live is not None
    assert live.version == 1  # the shadow's set never went live

    runner = service.shadow
    assert runner is not None
    wait_for(lambda: runner.compared >= 8)
    record = collector.close_interval()
    (entry,) = [w for w in record.workflows if w.lineage.cohort == "shadow"]
    assert (entry.lineage.rollout_id, entry.lineage.threshold_version) == ("r-shadow", 2)
    assert entry.lineage.model_sha256 == shadow.models[0].sha256
    assert entry.runs >= 8
    assert entry.failed == entry.runs  # every part rejected by the shadow's own threshold 0.0
    assert entry.shadow_compared >= 8
    assert entry.shadow_scored == entry.shadow_compared
    assert entry.shadow_agreed < entry.shadow_compared  # the active plan accepts most parts
    assert entry.shadow_score_drift_sum > 0
    (active_entry,) = [w for w in record.workflows if w.lineage.cohort == ""]
    assert active_entry.shadow_compared == 0

    # never acts: no part_rejected event, no results line, no emitted event under the shadow
    assert all(event.lineage.cohort != "shadow" for event in collector.take_events())
    assert all(stamp["cohort"] == "" and stamp["bundle_sha256"] == "" for stamp in lineages(agents))
    assert bundle_sha not in {stamp["bundle_sha256"] for stamp in lineages(agents)}
    plan = reconciler.candidates[WORKFLOW_ID]
    (emit,) = [node.impl for node in plan.nodes if isinstance(node.impl, Emit)]
    assert emit.emits is False
    frame = service.recent[-1]
    assert agent.executor is not None
    result = agent.executor.run(plan, frame.document(service.binding.input_key))
    assert result.outputs["gate"]["decision"] == "reject"
    assert result.outputs["reject_part"]["type"] == "part_rejected"  # built, not emitted
    assert result.events == []

    # the shadow ends with the rollout: the runner stops
    report = reconciler.apply(fleet.desired(3))
    assert report.workflows[0].shadow_version == 0
    assert service.shadow is None
