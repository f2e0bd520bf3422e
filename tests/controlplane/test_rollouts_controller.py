"""The rollout controller on SQLite and PostgreSQL, driven by telemetry and reported states that
go through the real ingest path, ticked with the test's own clock: waiting for samples and time,
promoting, aborting on each criterion, pause steps, restarts, and one leader per fleet."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controlplane.rollouts.leader import FileLeadership, PostgresLeadership, leadership_for
from controlplane.settings import ControlPlaneSettings
from controlplane.store import Database, migrate
from tests.controlplane.live import live_control_plane
from tests.controlplane.test_rollouts_fleet import LINE, Clock, Fleet, setup_fleet, spec


@pytest.fixture
def rollout_settings(cp_settings: ControlPlaneSettings) -> ControlPlaneSettings:
    return cp_settings.model_copy(update={"rollout_tick_s": 0})


@pytest.fixture
def fleet(rollout_settings: ControlPlaneSettings) -> Iterator[Fleet]:
    with live_control_plane(rollout_settings) as live:
        yield setup_fleet(live)


def started(rollout: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(rollout["step_started_at"])


def feed(fleet: Fleet, rollout: dict[str, Any], at: datetime, *, runs: int = 60, **candidate: Any) -> None:
    """One minute of telemetry: the candidate cohort's runs (``candidate`` overrides, healthy by
    default: 5 % rejects, 4 ms) and the baseline cohort's (healthy)."""
    rid = rollout["id"]
    shadow_step = rollout["step"]["kind"] == "shadow"
    watched = rollout["cohorts"]["shadow" if shadow_step else "canary"]
    baseline = LINE if shadow_step else rollout["cohorts"]["baseline"]
    options = {"failed": 3, **candidate}
    for device in watched:
        fleet.telemetry(
            device, at, rollout_id=rid, cohort="shadow" if shadow_step else "canary", runs=runs, **options
        )
    for device in baseline:
        fleet.telemetry(
            device, at, rollout_id=rid, cohort="baseline", runs=runs, failed=3, workflow_version=1
        )


def criteria(decision_or_analysis: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in decision_or_analysis["criteria"]}


def test_a_canary_waits_for_samples_and_time_then_promotes(fleet: Fleet) -> None:
    rollout = fleet.create(spec())
    rid = rollout["id"]
    clock = Clock(started(rollout) + timedelta(seconds=5))
    controller = fleet.controller(clock)

    [outcome] = controller.tick()
    assert (outcome.action, outcome.state, outcome.step_index) == ("wait", "running", 0)
    shown = fleet.get(rid)
    assert shown["analysis"]["verdict"] == "wait"
    assert "0/100 samples" in shown["analysis"]["reason"]
    assert criteria(shown["analysis"])["error_rate"]["status"] == "insufficient"
    assert [d["action"] for d in fleet.decisions(rid)] == ["start"]  # waiting is not a decision

    feed(fleet, rollout, clock.advance(seconds=10))
    [outcome] = controller.tick()
    assert outcome.action == "wait"
    assert "of 60 s" in outcome.reason  # enough samples, not enough time
    shown = fleet.get(rid)
    assert shown["progress"]["candidate_samples"] == 120
    assert shown["progress"]["baseline_samples"] == 240

    clock.advance(seconds=60)
    [outcome] = controller.tick()
    assert (outcome.action, outcome.state, outcome.step_index) == ("promote", "running", 1)
    for device in LINE:
        [assignment] = fleet.desired(device).workflows
        assert (assignment.role, assignment.workflow.version) == ("canary", 2)

    # The full step promotes once every device reports the candidate bundle.
    [outcome] = controller.tick()
    assert outcome.action == "wait"
    assert "6 of 6 devices" in outcome.reason
    for device in LINE[:5]:
        fleet.report(device, rollout_id=rid, bundle_sha256=rollout["bundle_sha256"])
    assert fleet.get(rid)["progress"]["devices_on_candidate"] == 5
    [outcome] = controller.tick()
    assert outcome.action == "wait"
    fleet.report(LINE[5], rollout_id=rid, bundle_sha256=rollout["bundle_sha256"])
    [outcome] = controller.tick()
    assert (outcome.action, outcome.state) == ("promote", "promoted")
    assert controller.tick() == []

    decisions = fleet.decisions(rid)
    assert [(d["action"], d["step_index"], d["actor"]) for d in decisions] == [
        ("start", 0, "operator:root"),
        ("promote", 0, "controller"),
        ("promote", 1, "controller"),
    ]
    canary = criteria(decisions[1])
    assert canary["error_rate"] | {"detail": ""} == {
        "name": "error_rate",
        "value": 0.0,
        "threshold": 0.02,
        "comparison": "<=",
        "samples": 120,
        "status": "pass",
        "detail": "",
    }
    assert {c["status"] for c in canary.values()} == {"pass"}
    assert criteria(decisions[2])["devices_on_candidate"]["value"] == 6
    entries = [e for e in fleet.audit_ok() if e["resource"] == f"rollouts/{rid}"]
    assert [(e["action"], e["actor"]) for e in entries][-2:] == [
        ("rollout.promote", "system:rollout-controller"),
        ("rollout.promote", "system:rollout-controller"),
    ]
    for device in LINE:
        [assignment] = fleet.desired(device).workflows
        assert (assignment.role, assignment.rollout_id, assignment.workflow.version) == ("", "", 2)


@pytest.mark.parametrize(
    ("candidate", "criterion"),
    [
        ({"errors": 6}, "error_rate"),
        ({"latency_ms": 40.0}, "p99_latency_ratio"),
        ({"failed": 20}, "defect_rate_shift"),
    ],
)
def test_a_bad_canary_aborts(fleet: Fleet, candidate: dict[str, Any], criterion: str) -> None:
    rollout = fleet.create(spec())
    rid = rollout["id"]
    generations = {device: fleet.desired(device).generation for device in LINE}
    clock = Clock(started(rollout))
    feed(fleet, rollout, clock.advance(seconds=10), **candidate)
    [outcome] = fleet.controller(clock).tick()
    assert (outcome.action, outcome.state) == ("abort", "aborted")
    assert outcome.reason.startswith(criterion)
    shown = fleet.get(rid)
    assert shown["reason"] == outcome.reason
    assert shown["finished_at"] is not None
    [*_, decision] = fleet.decisions(rid)
    assert (decision["action"], decision["actor"], decision["step"]) == ("abort", "controller", "canary")
    failing = criteria(decision)[criterion]
    assert failing["status"] == "fail"
    assert failing["samples"] >= 100
    for device in LINE:  # back on the baseline, in a new generation
        state = fleet.desired(device)
        assert state.generation == generations[device] + 1
        [assignment] = state.workflows
        assert (assignment.role, assignment.rollout_id, assignment.workflow.version) == ("", "", 1)
    [entry] = [e for e in fleet.audit_ok() if e["action"] == "rollout.abort"]
    assert entry["details"]["reason"] == outcome.reason


def test_an_unhealthy_cohort_device_aborts_at_once(fleet: Fleet) -> None:
    rollout = fleet.create(spec())
    rid = rollout["id"]
    canary, baseline = rollout["cohorts"]["canary"], rollout["cohorts"]["baseline"]
    clock = Clock(started(rollout))
    controller = fleet.controller(clock)
    fleet.report(baseline[0], failing=True)  # not in the cohort: not the rollout's problem
    fleet.report(canary[1], rollout_id="r-0123456789", failure="another rollout's bundle")
    [outcome] = controller.tick()
    assert outcome.action == "wait"
    fleet.report(
        canary[0], rollout_id=rid, bundle_sha256=rollout["bundle_sha256"], failure="3 errors in 20 frames"
    )
    [outcome] = controller.tick()  # no samples at all: no minimum applies
    assert (outcome.action, outcome.state) == ("abort", "aborted")
    assert canary[0] in outcome.reason
    assert "HEALTH_GATE" in outcome.reason
    assert criteria(fleet.decisions(rid)[-1])["unhealthy_devices"]["status"] == "fail"


def test_failing_health_in_the_cohort_aborts(fleet: Fleet) -> None:
    rollout = fleet.create(spec())
    fleet.report(rollout["cohorts"]["canary"][1], failing=True)
    [outcome] = fleet.controller(Clock(started(rollout))).tick()
    assert outcome.action == "abort"
    assert "health FAILING" in outcome.reason


@pytest.mark.parametrize(("candidate_mib", "action"), [(150, "wait"), (450, "abort")])
def test_a_canary_agent_using_far_more_memory_than_the_baseline_is_unhealthy(
    fleet: Fleet, candidate_mib: int, action: str
) -> None:
    rollout = fleet.create(spec())
    rid = rollout["id"]
    clock = Clock(started(rollout))
    at = clock.advance(seconds=5)
    for device in rollout["cohorts"]["baseline"]:
        fleet.telemetry(device, at, rollout_id=rid, cohort="baseline", runs=10, rss_bytes=200 * 2**20)
    fleet.telemetry(
        rollout["cohorts"]["canary"][0],
        at,
        rollout_id=rid,
        cohort="canary",
        runs=10,
        rss_bytes=candidate_mib * 2**20,
    )
    [outcome] = fleet.controller(clock).tick()
    assert outcome.action == action  # the limit is 2 × the baseline median (200 MiB)
    if action == "abort":
        assert "agent memory 450 MiB, 2.2 × the baseline median 200 MiB" in outcome.reason


@pytest.mark.parametrize(("agreed", "action"), [(59, "promote"), (30, "abort")])
def test_shadow_agreement(fleet: Fleet, agreed: int, action: str) -> None:
    rollout = fleet.create(
        spec({"kind": "shadow", "devices": 2, "duration_s": 0, "min_samples": 100}, {"kind": "full"})
    )
    clock = Clock(started(rollout))
    feed(fleet, rollout, clock.advance(seconds=5), compared=60, agreed=agreed)
    [outcome] = fleet.controller(clock).tick()
    assert outcome.action == action
    shadow = criteria(fleet.decisions(rollout["id"])[-1])["shadow_agreement"]
    assert shadow["value"] == pytest.approx(agreed / 60)
    assert shadow["samples"] == 120


def test_pause_step_waits_for_approval(fleet: Fleet) -> None:
    rollout = fleet.create(
        spec(
            {"kind": "canary", "devices": 1, "duration_s": 0, "min_samples": 50},
            {"kind": "pause"},
            {"kind": "full"},
        )
    )
    rid = rollout["id"]
    clock = Clock(started(rollout))
    controller = fleet.controller(clock)
    feed(fleet, rollout, clock.advance(seconds=5))
    [outcome] = controller.tick()
    assert (outcome.action, outcome.state, outcome.step_index) == ("promote", "paused", 1)
    assert controller.tick() == []  # paused: nothing to do until someone approves
    shown = fleet.get(rid)
    assert shown["paused_reason"].startswith("waiting for approval")
    [canary] = rollout["cohorts"]["canary"]
    assert fleet.desired(canary).workflows[0].role == "canary"  # as in the step before the pause

    row = controller.act(rid, "resume", actor="operator:qa", reason="checked the parts")
    assert (row["state"], row["step_index"]) == ("running", 2)
    assert [(d["action"], d["actor"]) for d in fleet.decisions(rid)][1:] == [
        ("promote", "controller"),
        ("pause", "controller"),
        ("resume", "operator:qa"),
        ("promote", "operator:qa"),
    ]


def test_a_manual_pause_holds_the_controller(fleet: Fleet) -> None:
    rollout = fleet.create(spec())
    rid = rollout["id"]
    clock = Clock(started(rollout))
    controller = fleet.controller(clock)
    feed(fleet, rollout, clock.advance(seconds=5))
    clock.advance(minutes=5)
    paused = fleet.admin.post(f"/api/v1/rollouts/{rid}/pause", json={"reason": "shift change"})
    assert paused.json()["paused_reason"] == "shift change"
    assert fleet.admin.post(f"/api/v1/rollouts/{rid}/pause", json={}).status_code == 409
    assert controller.tick() == []
    etag = fleet.admin.get(f"/api/v1/rollouts/{rid}").headers["etag"]
    stale = fleet.admin.post(f"/api/v1/rollouts/{rid}/resume", json={}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    resumed = fleet.admin.post(f"/api/v1/rollouts/{rid}/resume", json={}, headers={"If-Match": etag})
    assert (resumed.json()["state"], resumed.json()["step_index"]) == ("running", 0)
    [outcome] = controller.tick()
    assert (outcome.action, outcome.step_index) == ("promote", 1)


def test_a_restarted_control_plane_continues_the_rollout(rollout_settings: ControlPlaneSettings) -> None:
    with live_control_plane(rollout_settings) as live:
        fleet = setup_fleet(live)
        rollout = fleet.create(
            spec(
                {"kind": "canary", "devices": 2, "duration_s": 30, "min_samples": 100},
                {"kind": "canary", "percent": 50, "duration_s": 30, "min_samples": 100},
                {"kind": "full"},
            )
        )
        clock = Clock(started(rollout))
        feed(fleet, rollout, clock.advance(seconds=40))
        [outcome] = fleet.controller(clock).tick()
        assert (outcome.action, outcome.step_index) == ("promote", 1)
    with live_control_plane(rollout_settings) as live:
        fleet = Fleet(live, seqs=dict.fromkeys([*LINE, "cam-9"], 10))
        shown = fleet.get(rollout["id"])
        assert (shown["state"], shown["step_index"]) == ("running", 1)
        assert len(shown["cohorts"]["canary"]) == 3
        assert set(rollout["cohorts"]["canary"]) <= set(shown["cohorts"]["canary"])
        clock = Clock(started(shown))
        controller = fleet.controller(clock)  # a new instance, nothing in memory
        [outcome] = controller.tick()
        assert outcome.action == "wait"  # the new step's samples start from zero
        feed(fleet, shown, clock.advance(seconds=40))
        [outcome] = controller.tick()
        assert (outcome.action, outcome.step_index) == ("promote", 2)
        assert [d["action"] for d in fleet.decisions(rollout["id"])] == ["start", "promote", "promote"]


def test_only_one_controller_leads(database_url: str, tmp_path: Path) -> None:
    first, second = Database(database_url), Database(database_url)
    migrate.upgrade(first)
    try:
        a, b = leadership_for(first, tmp_path), leadership_for(second, tmp_path)
        expected = PostgresLeadership if first.dialect == "postgresql" else FileLeadership
        assert isinstance(a, expected)
        assert a.acquire()
        assert not b.acquire()
        assert a.acquire()  # still leading
        assert (a.leading, b.leading) == (True, False)
        a.release()
        assert b.acquire()
        assert not a.acquire()
        b.release()
    finally:
        first.dispose()
        second.dispose()


def test_the_background_driver_leads_once_and_drives(cp_settings: ControlPlaneSettings) -> None:
    settings = cp_settings.model_copy(update={"rollout_tick_s": 0.05})
    with live_control_plane(settings) as live, live_control_plane(settings, admin=False) as replica:
        assert live.services.rollout_driver is not None
        assert replica.services.rollout_driver is not None
        assert live.services.rollout_driver.leading
        assert not replica.services.rollout_driver.leading
        fleet = setup_fleet(live)
        rollout = fleet.create(spec({"kind": "full"}))
        for device in LINE:
            fleet.report(device, rollout_id=rollout["id"], bundle_sha256=rollout["bundle_sha256"])
        deadline = time.monotonic() + 60
        while fleet.get(rollout["id"])["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fleet.get(rollout["id"])["state"] == "promoted"
