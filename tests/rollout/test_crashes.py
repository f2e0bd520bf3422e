"""Crashes of a real agent process in the middle of a rollout: a candidate that crashes the agent
is quarantined after 3 crashes in a row, and SIGKILLs at random instants of bundle switches never
leave the device on a partial bundle."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.signing import make_manifest
from protos import sync_pb2
from tests.mosquitto import MosquittoBroker
from tests.mqtt_fixtures import mosquitto  # noqa: F401
from tests.rollout.helpers import candidate
from tests.rollout.process import AgentProcess, Operator, crash_plugin, serve_bytes
from tests.sync.fleet import MODEL_V0, WORKFLOW, WORKFLOW_ID, Fleet, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def operator(fleet: Fleet, mosquitto: MosquittoBroker) -> Iterator[Operator]:  # noqa: F811
    operator = Operator(mosquitto, fleet.device_id)
    yield operator
    operator.close()


def stamp(desired: sync_pb2.DesiredState, bundle_sha: str) -> dict[str, Any]:
    assignment = desired.workflows[0]
    return {
        "workflow_id": WORKFLOW_ID,
        "workflow_version": assignment.workflow.version,
        "model_sha256": assignment.models[0].sha256,
        "threshold_set": "surface",
        "threshold_version": assignment.threshold_sets[0].version,
        "rollout_id": assignment.rollout_id,
        "cohort": assignment.role,
        "bundle_sha256": bundle_sha,
    }


def test_a_candidate_that_crashes_the_agent_three_times_in_a_row_is_quarantined(
    fleet: Fleet,
    mosquitto: MosquittoBroker,  # noqa: F811
    operator: Operator,
    tmp_path: Path,
) -> None:
    # the candidate's graph: the reference graph, version 2, plus a node that kills the process
    graph = json.loads(WORKFLOW.read_text())
    graph["version"] = 2
    graph["nodes"].append({"id": "boom", "type": "crash_now", "config": {}})
    graph["edges"].append({"source": "decode", "target": "boom"})
    data = json.dumps(graph).encode()
    agent = AgentProcess(tmp_path, fleet, mosquitto, plugins=crash_plugin(tmp_path / "plugins"))
    with serve_bytes({"/crash.json": data}) as url:
        baseline = fleet.desired(1)
        operator.publish(baseline)
        agent.start()
        try:
            wait_for(lambda: len(agent.lineages()) >= 3, timeout=60)
            desired = fleet.desired(2)
            workflow = desired.workflows[0].workflow
            manifest = make_manifest("workflow", WORKFLOW_ID, 2, hashlib.sha256(data).hexdigest(), len(data))
            workflow.CopyFrom(
                sync_pb2.ArtifactRef(
                    kind="workflow",
                    name=WORKFLOW_ID,
                    version=2,
                    sha256=manifest.sha256,
                    size=manifest.size,
                    url=f"{url}/crash.json",
                    signed_manifest=fleet.signed(manifest),
                )
            )
            sha = candidate(fleet, desired.workflows[0], "r-crash", gate={"warmup_frames": 2})
            operator.publish(desired)
            for crash in range(3):
                assert agent.process is not None
                agent.process.wait(60)  # the candidate kills it while it is warmed up
                assert agent.process.returncode == -9, agent.log_tail()
                runs = len(agent.lineages())
                agent.start()
                if crash < 2:  # it comes back on the baseline, then tries the candidate again
                    continue
            # the fourth start: quarantined, the baseline runs, the failure is reported
            wait_for(lambda: len(agent.lineages()) >= runs + 10, timeout=60)
            assert agent.alive(), agent.log_tail()
            assert {s["bundle_sha256"] for s in agent.lineages()} == {""}
            assert {s["workflow_version"] for s in agent.lineages()} == {1}

            def quarantined() -> bool:
                return any(
                    (f.kind, f.bundle_sha256) == (sync_pb2.RolloutFailure.CRASH_LOOP, sha)
                    for report in operator.reports()
                    for f in report.rollout_failures
                )

            wait_for(quarantined, timeout=30)
            ledger = json.loads((agent.data_dir / "sync" / "rollout.json").read_text())
            assert ledger["failures"][sha]["kind"] == "CRASH_LOOP"
            assert "3 times in a row" in ledger["failures"][sha]["reason"]
        finally:
            agent.stop()


def check_on_disk(agent: AgentProcess, bundles: dict[str, dict[str, Any]]) -> str:
    """What state.json names is one complete bundle whose artifacts verify; returns its sha256."""
    state = json.loads((agent.data_dir / "sync" / "state.json").read_text())
    applied = state["workflows"][WORKFLOW_ID]
    assert applied["bundle_sha256"] in bundles, applied
    expected = bundles[applied["bundle_sha256"]]
    assert applied["model_sha256"] == {WORKFLOW_ID: expected["model_sha256"]}
    assert applied["thresholds"] == {"surface": expected["threshold_version"]}
    blob = agent.data_dir / "models" / "blobs" / "sha256" / f"{expected['model_sha256']}.onnx"
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == expected["model_sha256"]
    stored = agent.data_dir / "sync" / "artifacts"
    graph = (stored / "workflows" / WORKFLOW_ID / f"{applied['version']}.json").read_bytes()
    assert hashlib.sha256(graph).hexdigest() == applied["sha256"]
    sets = (stored / "thresholds" / "surface" / f"{expected['threshold_version']}.json").read_bytes()
    assert hashlib.sha256(sets).hexdigest() == applied["threshold_sha256"]["surface"]
    return str(applied["bundle_sha256"])


@pytest.mark.timeout(300)  # about 100 s on a 2-core machine: 20 agent restarts
def test_sigkills_at_random_instants_of_bundle_switches_never_leave_a_partial_bundle(
    fleet: Fleet,
    mosquitto: MosquittoBroker,  # noqa: F811
    operator: Operator,
    tmp_path: Path,
) -> None:
    fleet.upload_model(MODEL_V0, version=2)
    fleet.upload_thresholds("surface", {"default": 0.6})
    gate = {"warmup_frames": 2, "frames": 3}
    desired_a = fleet.desired(1)
    sha_a = candidate(fleet, desired_a.workflows[0], "r-a", gate=gate)
    desired_b = fleet.desired(2, model_version=2, threshold_version=2)
    sha_b = candidate(fleet, desired_b.workflows[0], "r-b", gate=gate)
    bundles = {sha_a: stamp(desired_a, sha_a), sha_b: stamp(desired_b, sha_b)}
    complete = list(bundles.values())
    rng = random.Random(20261125)

    agent = AgentProcess(tmp_path, fleet, mosquitto)
    operator.publish(desired_a)
    agent.start()
    try:
        wait_for(lambda: bundles[sha_a] in agent.lineages(), timeout=60)
        generation = 2
        for kill in range(20):
            target, sha = (desired_b, sha_b) if kill % 2 == 0 else (desired_a, sha_a)
            generation += 1
            target.generation = generation
            operator.publish(target)
            time.sleep(rng.uniform(0.0, 0.6))  # somewhere in verify, compile, warm-up, switch, commit
            agent.kill()
            check_on_disk(agent, bundles)
            stamps = agent.lineages()
            assert all(s in complete for s in stamps), [s for s in stamps if s not in complete][:3]
            seen = len(stamps)
            agent.start()
            # it comes up on a complete bundle, then converges on the target (its gate passes)
            wait_for(
                lambda: sum(1 for s in agent.lineages()[seen:] if s == bundles[sha]) >= 4,  # noqa: B023
                timeout=60,
            )
        assert all(s in complete for s in agent.lineages())
    finally:
        agent.stop()
