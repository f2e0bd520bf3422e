"""What the controller and the status route read about a rollout's devices: reported health,
who runs the candidate, and the analysis of the current step.

A cohort device is **unhealthy** when its reported state lists a ``rollout_failures`` entry for
this rollout, or its health is ``FAILING``, or (shadow and canary steps) its agent's peak memory
since the step began is above ``max_memory_ratio`` × the baseline devices' median
(:func:`memory_outliers`, from the system metrics the devices send). A device **runs the
candidate** when its reported state shows the rollout's bundle active for the workflow
(``bundle_sha256``), or, in a shadow step, the candidate's workflow version beside it
(``shadow_version``).
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controlplane.rollouts.analysis import (
    AnalysisSpec,
    CohortStats,
    Criterion,
    DeviceHealth,
    Verdict,
    cohort_stats,
    evaluate,
)
from controlplane.rollouts.cohorts import Cohorts
from controlplane.rollouts.spec import StepSpec
from controlplane.store import as_utc
from controlplane.store.schema import devices, system_minutes


def reported_states(conn: Connection, device_ids: Collection[str]) -> dict[str, Mapping[str, Any]]:
    """device id → its last reported state (``{}`` when it never reported)."""
    if not device_ids:
        return {}
    rows = conn.execute(
        sa.select(devices.c.id, devices.c.reported_state).where(devices.c.id.in_(sorted(device_ids)))
    ).all()
    return {row.id: row.reported_state or {} for row in rows}


def unhealthy(conn: Connection, rollout_id: str, device_ids: Collection[str]) -> list[DeviceHealth]:
    """The devices of ``device_ids`` that report a failure of this rollout or FAILING health."""
    found = []
    for device_id, state in sorted(reported_states(conn, device_ids).items()):
        failures = [f for f in state.get("rollout_failures") or [] if f.get("rollout_id") == rollout_id]
        if failures:
            first = failures[0]
            found.append(
                DeviceHealth(
                    device_id,
                    f"rollout failure {first.get('kind', 'KIND_UNSPECIFIED')}: "
                    f"{first.get('reason') or 'no reason given'}",
                )
            )
            continue
        health = state.get("health") or {}
        if health.get("state") == "FAILING":
            problems = "; ".join(health.get("problems") or []) or "no problems listed"
            found.append(DeviceHealth(device_id, f"health FAILING: {problems}"))
    return found


def on_candidate(
    conn: Connection, row: Mapping[str, Any], device_ids: Collection[str], *, shadow: bool = False
) -> list[str]:
    """The devices of ``device_ids`` that report running the rollout's candidate (in shadow, with
    ``shadow``)."""
    version = int(row["bundle"]["workflow"]["version"])
    running = []
    for device_id, state in sorted(reported_states(conn, device_ids).items()):
        for workflow in state.get("workflows") or []:
            if workflow.get("workflow_id") != row["workflow"]:
                continue
            if shadow:
                hit = (
                    workflow.get("rollout_id") == row["id"]
                    and int(workflow.get("shadow_version", 0)) == version
                )
            else:
                hit = workflow.get("bundle_sha256") == row["bundle_sha256"]
            if hit:
                running.append(device_id)
                break
    return running


def _stats(
    conn: Connection, rollout_id: str, cohort: str, since: datetime, device_ids: Collection[str]
) -> CohortStats:
    return cohort_stats(conn, rollout_id, cohort, since=since, device_ids=device_ids)


def analyse(
    conn: Connection,
    row: Mapping[str, Any],
    step: StepSpec,
    cohorts: Cohorts,
    now: datetime,
) -> tuple[Verdict, dict[str, Any]]:
    """The verdict on the current (shadow, canary or full) step, and the analysis document
    stored on the rollout (verdict, reason, criteria, samples, when).

    Shadow: the candidate is the shadow devices' ``shadow`` runs, the baseline every target
    device's ``baseline`` runs (the shadow devices run the baseline too). Canary: ``canary`` runs
    of the canary devices against ``baseline`` runs of the others. Full: ``canary`` runs of every
    device, and the step only promotes once every target device reports the candidate bundle."""
    if step.kind not in ("shadow", "canary", "full"):
        raise ValueError(f"a {step.kind} step is not analysed")
    policy = AnalysisSpec.model_validate(row["spec"]["analysis"])
    started = as_utc(row["step_started_at"])
    assert started is not None
    elapsed = max(0.0, (now - started).total_seconds())
    watched = cohorts.candidate
    candidate = _stats(conn, row["id"], "shadow" if step.kind == "shadow" else "canary", started, watched)
    if step.kind == "shadow":
        baseline = _stats(conn, row["id"], "baseline", started, cohorts.devices)
    elif step.kind == "canary":
        baseline = _stats(conn, row["id"], "baseline", started, cohorts.baseline)
    else:
        baseline = CohortStats()
    sick = unhealthy(conn, row["id"], watched)
    if step.kind != "full":
        listed = {health.device_id for health in sick}
        others = cohorts.devices if step.kind == "shadow" else cohorts.baseline
        sick += [
            health
            for health in memory_outliers(conn, watched, others, started, policy.max_memory_ratio)
            if health.device_id not in listed
        ]
    verdict = evaluate(
        step.kind,
        policy,
        candidate=candidate,
        baseline=baseline,
        unhealthy=sick,
        elapsed_s=elapsed,
        duration_s=float(step.duration_s or 0.0),
        min_samples=int(step.min_samples or 0),
    )
    if step.kind == "full" and verdict.action != "abort":
        verdict = _all_on_candidate(verdict, len(on_candidate(conn, row, watched)), len(watched))
    analysis = {
        "verdict": verdict.action,
        "reason": verdict.reason,
        "at": now.isoformat(),
        "step_index": row["step_index"],
        "step": step.kind,
        "candidate_samples": candidate.runs,
        "baseline_samples": baseline.runs,
        "criteria": [c.to_dict() for c in verdict.criteria],
    }
    return verdict, analysis


def _peak_rss(conn: Connection, device_ids: Collection[str], since: datetime) -> dict[str, int]:
    """device id → the highest agent RSS it reported from ``since``'s minute on (devices that sent
    none are left out)."""
    if not device_ids:
        return {}
    rows = conn.execute(
        sa.select(system_minutes.c.device_id, system_minutes.c.metrics).where(
            system_minutes.c.device_id.in_(sorted(device_ids)),
            system_minutes.c.minute >= since.replace(second=0, microsecond=0),
        )
    ).all()
    peaks: dict[str, int] = {}
    for row in rows:
        rss = int((row.metrics or {}).get("process_rss_bytes") or 0)  # uint64: a string in JSON
        if rss > 0:
            peaks[row.device_id] = max(rss, peaks.get(row.device_id, 0))
    return peaks


def memory_outliers(
    conn: Connection,
    candidate_ids: Collection[str],
    baseline_ids: Collection[str],
    since: datetime,
    max_ratio: float,
) -> list[DeviceHealth]:
    """Candidate devices whose agent memory peaked above ``max_ratio`` × the median peak of the
    baseline devices since ``since`` (none without baseline data)."""
    baseline = list(_peak_rss(conn, baseline_ids, since).values())
    if not baseline:
        return []
    median = statistics.median(baseline)
    found = []
    for device_id, peak in sorted(_peak_rss(conn, candidate_ids, since).items()):
        if peak > max_ratio * median:
            found.append(
                DeviceHealth(
                    device_id,
                    f"agent memory {peak / 2**20:.0f} MiB, {peak / median:.1f} × the baseline median "
                    f"{median / 2**20:.0f} MiB (limit {max_ratio:g} ×)",
                )
            )
    return found


def _all_on_candidate(verdict: Verdict, running: int, total: int) -> Verdict:
    done = running >= total
    criterion = Criterion(
        name="devices_on_candidate",
        value=float(running),
        threshold=float(total),
        comparison=">=",
        samples=total,
        status="pass" if done else "insufficient",
        detail=f"{running} of {total} target devices report the candidate bundle",
    )
    criteria = (*verdict.criteria, criterion)
    if verdict.action == "promote" and not done:
        return Verdict(
            "wait",
            f"waiting for {total - running} of {total} devices to report the candidate bundle",
            criteria,
        )
    return Verdict(verdict.action, verdict.reason, criteria)


def progress(conn: Connection, row: Mapping[str, Any], cohorts: Cohorts) -> dict[str, int]:
    """devices_total: the current candidate cohort; devices_on_candidate: those of it that report
    running the candidate; samples from the latest analysis; target_devices: the whole target."""
    watched = cohorts.candidate
    analysis = row.get("analysis") or {}
    current = analysis.get("step_index") == row["step_index"]
    return {
        "target_devices": len(cohorts.devices),
        "devices_total": len(watched),
        "devices_on_candidate": len(on_candidate(conn, row, watched, shadow=cohorts.kind == "shadow")),
        "candidate_samples": int(analysis.get("candidate_samples", 0)) if current else 0,
        "baseline_samples": int(analysis.get("baseline_samples", 0)) if current else 0,
    }
