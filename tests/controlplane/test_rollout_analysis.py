"""Rollout step analysis: the statistics, every criterion, the verdicts, and cohort statistics
read from a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.rollouts.analysis import (
    AnalysisSpec,
    CohortStats,
    Criterion,
    DeviceHealth,
    Verdict,
    cohort_stats,
    evaluate,
)
from controlplane.rollouts.stats import binomial_tail, histogram_quantile, merge_latency, two_proportion_test
from controlplane.store import Database, migrate
from controlplane.store.schema import telemetry_minutes

BOUNDS = (10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
FAST = 1  # the (10, 20] ms bucket
SLOW = 5  # the (200, 500] ms bucket
POLICY = AnalysisSpec()


def cohort(
    runs: int,
    *,
    errors: int = 0,
    failed: int | None = None,
    parts: int | None = None,
    slow: int = 0,
    latency: bool = True,
    compared: int = 0,
    agreed: int = 0,
    devices: int = 1,
) -> CohortStats:
    """``runs`` runs; ``parts`` inspected (default: the runs without errors), ``failed`` of them
    rejected; ``slow`` runs in the (200, 500] ms bucket and the rest in (10, 20] ms."""
    parts = runs - errors if parts is None else parts
    failed = 0 if failed is None else failed
    counts = [0] * (len(BOUNDS) + 1)
    counts[FAST], counts[SLOW] = runs - slow, slow
    return CohortStats(
        devices=devices,
        runs=runs,
        errors=errors,
        passed=parts - failed,
        failed=failed,
        latency_bounds=BOUNDS if latency and runs else (),
        latency_counts=tuple(counts) if latency and runs else (),
        shadow_compared=compared,
        shadow_agreed=agreed,
        shadow_scored=compared,
        shadow_score_drift_sum=0.02 * compared,
    )


def run(
    kind: str = "canary",
    *,
    candidate: CohortStats,
    baseline: CohortStats | None = None,
    unhealthy: tuple[DeviceHealth, ...] = (),
    elapsed_s: float = 600,
    duration_s: float = 120,
    min_samples: int = 300,
    policy: AnalysisSpec = POLICY,
) -> Verdict:
    return evaluate(
        kind,  # type: ignore[arg-type]
        policy,
        candidate=candidate,
        baseline=baseline if baseline is not None else cohort(900, devices=3),
        unhealthy=unhealthy,
        elapsed_s=elapsed_s,
        duration_s=duration_s,
        min_samples=min_samples,
    )


def criterion(verdict: Verdict, name: str) -> Criterion:
    [found] = [c for c in verdict.criteria if c.name == name]
    return found


# ---- statistics --------------------------------------------------------------------------------


def test_two_proportion_test_matches_hand_computed_values() -> None:
    # 30/100 vs 10/100: pooled 0.2, se = sqrt(0.2·0.8·(1/100 + 1/100)) = 0.0565685,
    # z = 0.2 / se = 3.5355339, p = erfc(z/√2) = erfc(2.5) = 4.06952e-4
    z, p = two_proportion_test(30, 100, 10, 100)
    assert z == pytest.approx(3.5355339, abs=1e-6)
    assert p == pytest.approx(4.06952e-4, rel=1e-5)
    # swapped: the same p, z negative
    z, p = two_proportion_test(10, 100, 30, 100)
    assert z == pytest.approx(-3.5355339, abs=1e-6)
    assert p == pytest.approx(4.06952e-4, rel=1e-5)
    # 10/50 vs 5/50: pooled 0.15, se = sqrt(0.15·0.85·0.04) = 0.0714143, z = 1.40028, p = 0.161429
    z, p = two_proportion_test(10, 50, 5, 50)
    assert z == pytest.approx(1.40028, abs=1e-5)
    assert p == pytest.approx(0.161429, abs=1e-6)


def test_two_proportion_test_without_data_or_variance_finds_nothing() -> None:
    assert two_proportion_test(0, 0, 5, 100) == (0.0, 1.0)
    assert two_proportion_test(0, 100, 0, 200) == (0.0, 1.0)
    assert two_proportion_test(100, 100, 50, 50) == (0.0, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        two_proportion_test(5, 4, 1, 10)


def test_binomial_tail() -> None:
    assert binomial_tail(1, 50, 0.01) == pytest.approx(1 - 0.99**50)
    assert binomial_tail(0, 50, 0.01) == 1.0
    assert binomial_tail(51, 50, 0.01) == 0.0
    assert binomial_tail(50, 50, 0.5) == pytest.approx(0.5**50)
    # P(X >= 5), X ~ B(50, 0.01) = 1 - Σ_{i<5} C(50,i) 0.01^i 0.99^(50-i)
    assert binomial_tail(5, 50, 0.01) == pytest.approx(1.45689e-4, rel=1e-4)


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    bounds = (10.0, 20.0, 50.0)
    assert histogram_quantile(bounds, (0, 100, 0, 0), 0.5) == pytest.approx(15.0)
    assert histogram_quantile(bounds, (0, 100, 0, 0), 0.99) == pytest.approx(19.9)
    assert histogram_quantile(bounds, (100, 0, 0, 0), 0.5) == pytest.approx(5.0)  # from 0
    # 90 fast, 10 in (20, 50]: p99 is 9/10 of the way through (20, 50]
    assert histogram_quantile(bounds, (0, 90, 10, 0), 0.99) == pytest.approx(47.0)
    # the overflow reads as the last bound (a lower bound of the truth)
    assert histogram_quantile(bounds, (0, 90, 0, 10), 0.99) == 50.0
    assert histogram_quantile(bounds, (0, 0, 0, 0), 0.99) is None
    assert histogram_quantile((), (), 0.99) is None


def test_merge_latency_adds_equal_bounds_and_rebuckets_others_upwards() -> None:
    a = {"bounds": [10, 20], "counts": [1, 2, 3], "sum": 0, "count": 6}
    assert merge_latency([a, a, None, {}]) == ((10.0, 20.0), (2, 4, 6))
    b = {"bounds": [15, 20, 40], "counts": [4, 5, 6, 7], "sum": 0, "count": 22}
    # union (10, 15, 20, 40): a's (10, 20] bucket lands in (15, 20], b's overflow stays overflow
    assert merge_latency([a, b]) == ((10.0, 15.0, 20.0, 40.0), (1, 4, 7, 6, 10))
    assert merge_latency([{"bounds": [10], "counts": [1, 2, 3]}, {"bounds": [], "counts": []}]) == ((), ())
    # no overflow count sent: read as an empty overflow
    assert merge_latency([{"bounds": [10, 20], "counts": [1, 2]}]) == ((10.0, 20.0), (1, 2, 0))


def test_cohort_stats_properties() -> None:
    stats = cohort(200, errors=4, failed=49, compared=100, agreed=90)
    assert stats.parts == 196
    assert stats.error_rate == pytest.approx(0.02)
    assert stats.defect_rate == pytest.approx(0.25)
    assert stats.agreement == pytest.approx(0.9)
    assert stats.mean_score_drift == pytest.approx(0.02)
    assert stats.p99_ms == pytest.approx(19.9)
    empty = CohortStats()
    assert (empty.error_rate, empty.defect_rate, empty.p99_ms, empty.agreement) == (None,) * 4
    assert empty.mean_score_drift is None


# ---- criteria ----------------------------------------------------------------------------------


def test_a_healthy_canary_promotes_with_every_criterion_passing() -> None:
    verdict = run(candidate=cohort(400, errors=2, failed=20), baseline=cohort(900, failed=40))
    assert verdict.action == "promote"
    assert [c.name for c in verdict.criteria] == [
        "error_rate",
        "p99_latency_ratio",
        "defect_rate_shift",
        "unhealthy_devices",
    ]
    assert {c.status for c in verdict.criteria} == {"pass"}
    assert "candidate 400 samples, baseline 900" in verdict.reason
    error_rate = criterion(verdict, "error_rate")
    assert (error_rate.value, error_rate.threshold, error_rate.samples) == (0.005, 0.02, 400)


def test_error_rate_fails_above_the_limit() -> None:
    verdict = run(candidate=cohort(300, errors=7))
    assert verdict.action == "abort"
    assert criterion(verdict, "error_rate").status == "fail"
    assert verdict.reason.startswith("error_rate 0.02333 (limit <= 0.02): 7 errors in 300 candidate runs")


def test_error_rate_aborts_early_only_when_the_minimum_cannot_rescue_it() -> None:
    # 6 errors may still be 2 % of 300 runs; 7 cannot
    assert criterion(run(candidate=cohort(40, errors=6)), "error_rate").status == "insufficient"
    verdict = run(candidate=cohort(40, errors=7))
    assert criterion(verdict, "error_rate").status == "fail"
    assert verdict.action == "abort"
    assert "even if every further run succeeds" in verdict.reason


def test_p99_latency_ratio() -> None:
    baseline = cohort(900)  # p99 19.9 ms
    ok = criterion(run(candidate=cohort(300), baseline=baseline), "p99_latency_ratio")
    assert ok.status == "pass"
    assert ok.value == pytest.approx(1.0)
    # 5 % of the runs in (200, 500]: p99 = 200 + 300·(0.04/0.05) = 440 ms, ratio 22.1
    slow = run(candidate=cohort(300, slow=15), baseline=baseline)
    bad = criterion(slow, "p99_latency_ratio")
    assert bad.status == "fail"
    assert bad.value == pytest.approx(440 / 19.9)
    assert "p99 440.0 ms candidate (300 runs) vs 19.9 ms baseline (900 runs)" in bad.detail
    assert slow.action == "abort"


def test_p99_latency_aborts_early_on_significantly_many_slow_runs() -> None:
    baseline = cohort(900)
    # one slow run in 50 puts p99 in the slow bucket, but a 1 % tail allows it (p = 0.39)
    one = criterion(run(candidate=cohort(50, slow=1), baseline=baseline), "p99_latency_ratio")
    assert one.value is not None
    assert one.value > 1.5
    assert one.status == "insufficient"
    # five in 50 do not happen with a 1 % tail (p = 1.5e-4)
    five = run(candidate=cohort(50, slow=5), baseline=baseline)
    assert criterion(five, "p99_latency_ratio").status == "fail"
    assert "5 of 50 candidate runs above 29.8 ms (binomial p = 0.00015)" in five.reason
    # …but not below min(min_samples, 50) runs on either side
    few = run(candidate=cohort(49, slow=10), baseline=baseline)
    assert criterion(few, "p99_latency_ratio").status == "insufficient"
    thin_baseline = run(candidate=cohort(100, slow=10), baseline=cohort(30))
    assert criterion(thin_baseline, "p99_latency_ratio").status == "insufficient"


def test_p99_latency_without_histograms_is_insufficient() -> None:
    verdict = run(candidate=cohort(300, latency=False))
    latency = criterion(verdict, "p99_latency_ratio")
    assert (latency.status, latency.value) == ("insufficient", None)
    assert verdict.action == "wait"
    assert "latency histograms from both cohorts" in verdict.reason


def test_defect_rate_shift_needs_both_the_shift_and_the_test() -> None:
    baseline = cohort(900, failed=34)  # 3.78 %
    # 15 % vs 3.78 %: +11.2 points, p = 1.1e-11
    verdict = run(candidate=cohort(300, failed=45), baseline=baseline)
    shift = criterion(verdict, "defect_rate_shift")
    assert shift.status == "fail"
    assert shift.value == pytest.approx(11.2222, abs=1e-3)
    assert (shift.threshold, shift.comparison, shift.samples) == (5.0, "|x| <=", 300)
    assert "defect_rate_shift +11.2 points" in verdict.reason
    assert "reject rate 15.00% candidate (45/300) vs 3.78% baseline (34/900), p = 1.1e-11" in verdict.reason
    # 10 % vs 4.67 %: +5.3 points, but p = 0.012 is not below 0.01
    unproven = run(candidate=cohort(300, failed=30), baseline=cohort(300, failed=14))
    assert criterion(unproven, "defect_rate_shift").status == "pass"
    # 6 % vs 5 % on 10,000 parts: significant (p = 0.002) but only +1 point
    small = run(candidate=cohort(10000, failed=600), baseline=cohort(10000, failed=500))
    assert criterion(small, "defect_rate_shift").status == "pass"
    # a drop counts as much as a rise
    drop = run(candidate=cohort(300, failed=0), baseline=cohort(900, failed=90))
    assert criterion(drop, "defect_rate_shift").status == "fail"


def test_defect_rate_counts_inspected_parts_and_aborts_early_only_on_strong_evidence() -> None:
    # 300 runs but only 250 parts (the rest were skipped): not enough parts
    verdict = run(candidate=cohort(300, parts=250), baseline=cohort(900))
    assert criterion(verdict, "defect_rate_shift").status == "insufficient"
    assert verdict.reason == "waiting for candidate 250/300 parts"
    # 100 parts a side, +10 points with p = 0.018: wait
    weak = run(candidate=cohort(100, failed=15), baseline=cohort(100, failed=5))
    assert criterion(weak, "defect_rate_shift").status == "insufficient"
    # +35 points with p = 3e-9 < 0.01/10: abort now
    strong = run(candidate=cohort(100, failed=40), baseline=cohort(100, failed=5))
    assert criterion(strong, "defect_rate_shift").status == "fail"
    assert strong.action == "abort"


def test_shadow_agreement() -> None:
    good = run("shadow", candidate=cohort(300, compared=300, agreed=285))
    agreement = criterion(good, "shadow_agreement")
    assert (agreement.status, agreement.value, agreement.threshold) == ("pass", 0.95, 0.9)
    assert "285/300 shadow decisions match the active bundle" in agreement.detail
    assert "mean score drift 0.0200 over 300 scored frames" in agreement.detail
    assert good.action == "promote"
    bad = run("shadow", candidate=cohort(300, compared=300, agreed=260))
    assert criterion(bad, "shadow_agreement").status == "fail"
    assert bad.action == "abort"
    # 30 disagreements may still be 10 % of 300; 31 cannot
    assert criterion(
        run("shadow", candidate=cohort(300, compared=100, agreed=70)), "shadow_agreement"
    ).status == ("insufficient")
    early = criterion(run("shadow", candidate=cohort(300, compared=100, agreed=69)), "shadow_agreement")
    assert early.status == "fail"
    # only shadow steps have it
    assert "shadow_agreement" not in {c.name for c in run(candidate=cohort(300)).criteria}


def test_unhealthy_devices_fail_without_any_sample_minimum() -> None:
    sick = (DeviceHealth("cam-2", "HEALTH_GATE: p99 1400 ms"), DeviceHealth("cam-5", "health FAILING"))
    verdict = run(candidate=cohort(3), unhealthy=sick, elapsed_s=5)
    unhealthy = criterion(verdict, "unhealthy_devices")
    assert (unhealthy.status, unhealthy.value, unhealthy.threshold) == ("fail", 2.0, 0.0)
    assert unhealthy.detail == "cam-2: HEALTH_GATE: p99 1400 ms; cam-5: health FAILING"
    assert verdict.action == "abort"
    assert "cam-2: HEALTH_GATE" in verdict.reason
    tolerant = AnalysisSpec(max_unhealthy_devices=2)
    assert criterion(
        run(candidate=cohort(3), unhealthy=sick, policy=tolerant), "unhealthy_devices"
    ).status == ("pass")


# ---- verdicts ----------------------------------------------------------------------------------


def test_wait_says_which_samples_and_how_much_time_are_missing() -> None:
    verdict = run(candidate=cohort(80), baseline=cohort(250), elapsed_s=42.7, duration_s=120)
    assert verdict.action == "wait"
    assert verdict.reason == "waiting for candidate 80/300 samples, baseline 250/300 samples, 42 s of 120 s"
    assert {c.status for c in verdict.criteria} == {"insufficient", "pass"}
    time_only = run(candidate=cohort(300), baseline=cohort(300), elapsed_s=42, duration_s=120)
    assert time_only.reason == "waiting for 42 s of 120 s"
    assert {c.status for c in time_only.criteria} == {"pass"}


def test_abort_beats_wait_and_names_every_failing_criterion() -> None:
    verdict = run(
        candidate=cohort(120, errors=30, failed=60),
        unhealthy=(DeviceHealth("cam-2", "CRASH_LOOP"),),
        elapsed_s=10,
    )
    assert verdict.action == "abort"
    failing = [c.name for c in verdict.criteria if c.status == "fail"]
    assert failing == ["error_rate", "defect_rate_shift", "unhealthy_devices"]
    assert [part.split(" ", 1)[0] for part in verdict.reason.split("; ")][:1] == ["error_rate"]
    for name in failing:
        assert name in verdict.reason


def test_full_step_judges_only_error_rate_and_device_health() -> None:
    verdict = run("full", candidate=cohort(300, slow=100, failed=200), baseline=CohortStats())
    assert [c.name for c in verdict.criteria] == ["error_rate", "unhealthy_devices"]
    assert verdict.action == "promote"
    assert "baseline" not in verdict.reason
    waiting = run("full", candidate=cohort(10), baseline=CohortStats())
    assert waiting.reason == "waiting for candidate 10/300 samples"


def test_min_samples_zero_promotes_without_data() -> None:
    verdict = run("full", candidate=CohortStats(), baseline=CohortStats(), min_samples=0, duration_s=0)
    assert verdict.action == "promote"
    assert criterion(verdict, "error_rate").value is None


def test_verdict_to_dict_is_plain_json() -> None:
    import json

    verdict = run(candidate=cohort(80), elapsed_s=1)
    document = verdict.to_dict()
    assert json.loads(json.dumps(document)) == document
    assert document["action"] == "wait"
    assert document["criteria"][0] == {
        "name": "error_rate",
        "value": 0.0,
        "threshold": 0.02,
        "comparison": "<=",
        "samples": 80,
        "status": "insufficient",
        "detail": "0 errors in 80 candidate runs",
    }


def test_analysis_spec_refuses_unknown_fields_and_silly_limits() -> None:
    assert AnalysisSpec.model_validate({}).defect_rate.significance == 0.01
    for bad in (
        {"max_error_rate": 1.5},
        {"defect_rate": {"max_shift": 0}},
        {"defect_rate": {"significance": 1}},
        {"defect_rate": {"max_shift": 0.1, "alpha": 0.05}},
        {"min_shadow_agreement": 0},
        {"max_unhealthy_devices": -1},
        {"max_p99_latency_ratio": 0.5},
        {"typo": 1},
    ):
        with pytest.raises(ValueError, match="validation error"):
            AnalysisSpec.model_validate(bad)


# ---- cohort statistics from the database -------------------------------------------------------

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate.upgrade(database)
    yield database
    database.dispose()


def minute_row(
    device: str, minute: int, *, rollout: str = "r-1", cohort_name: str = "canary", **values: Any
) -> dict[str, Any]:
    lineage = hashlib.sha256(f"{rollout}/{cohort_name}".encode()).hexdigest()
    row: dict[str, Any] = {
        "device_id": device,
        "workflow_id": "surface_inspection",
        "lineage": lineage,
        "minute": T0 + timedelta(minutes=minute),
        "workflow_version": 4,
        "model_sha256": "a" * 64,
        "threshold_set": "surface",
        "threshold_version": 3,
        "rollout_id": rollout,
        "cohort": cohort_name,
        "runs": 0,
        "passed": 0,
        "failed": 0,
        "errors": 0,
        "skipped": 0,
        "dropped_frames": 0,
        "latency_ms": {"bounds": [], "counts": [], "sum": 0.0, "count": 0},
        "node_latency_ms": {},
        "model_latency_ms": {},
        "shadow_compared": 0,
        "shadow_agreed": 0,
        "shadow_scored": 0,
        "shadow_score_drift_sum": 0.0,
    }
    row.update(values)
    return row


def histogram(bounds: list[float], counts: list[int]) -> dict[str, Any]:
    return {"bounds": bounds, "counts": counts, "sum": 0.0, "count": sum(counts)}


def test_cohort_stats_sums_one_cohort_of_one_rollout(db: Database) -> None:
    rows = [
        minute_row(
            "cam-1", 0, runs=10, passed=7, failed=2, errors=1, latency_ms=histogram([10, 20], [1, 8, 1])
        ),
        minute_row("cam-1", 1, runs=5, passed=5, latency_ms=histogram([10, 20], [0, 5, 0])),
        minute_row(
            "cam-2",
            1,
            runs=20,
            passed=18,
            failed=2,
            shadow_compared=20,
            shadow_agreed=19,
            shadow_scored=20,
            shadow_score_drift_sum=0.5,
            latency_ms=histogram([10, 20], [20, 0, 0]),
        ),
        minute_row("cam-3", 5, runs=4, passed=4),  # no histogram
        minute_row("cam-2", 1, cohort_name="baseline", runs=100, passed=100),
        minute_row("cam-1", 1, rollout="r-2", runs=100, errors=100),
    ]
    with db.write() as conn:
        conn.execute(telemetry_minutes.insert(), rows)
    with db.read() as conn:
        canary = cohort_stats(conn, "r-1", "canary")
        baseline = cohort_stats(conn, "r-1", "baseline")
        nothing = cohort_stats(conn, "r-9", "canary")
    assert canary == CohortStats(
        devices=3,
        runs=39,
        errors=1,
        passed=34,
        failed=4,
        latency_bounds=(10.0, 20.0),
        latency_counts=(21, 13, 1),
        shadow_compared=20,
        shadow_agreed=19,
        shadow_scored=20,
        shadow_score_drift_sum=0.5,
    )
    assert (baseline.devices, baseline.runs, baseline.passed) == (1, 100, 100)
    assert nothing == CohortStats()


def test_cohort_stats_filters_by_minute_and_device(db: Database) -> None:
    rows = [minute_row(f"cam-{m}", m, runs=1 + m, passed=1 + m) for m in range(4)]
    with db.write() as conn:
        conn.execute(telemetry_minutes.insert(), rows)
    with db.read() as conn:
        # a time inside minute 2 counts all of minute 2
        since = cohort_stats(conn, "r-1", "canary", since=T0 + timedelta(minutes=2, seconds=35))
        naive = cohort_stats(conn, "r-1", "canary", since=(T0 + timedelta(minutes=3)).replace(tzinfo=None))
        some = cohort_stats(conn, "r-1", "canary", device_ids={"cam-0", "cam-3", "cam-9"})
        none = cohort_stats(conn, "r-1", "canary", device_ids=[])
    assert (since.devices, since.runs) == (2, 3 + 4)
    assert (naive.devices, naive.runs) == (1, 4)
    assert (some.devices, some.runs) == (2, 1 + 4)
    assert none == CohortStats()


def test_cohort_stats_merges_histograms_with_different_bounds(db: Database) -> None:
    rows = [
        minute_row("cam-1", 0, runs=6, passed=6, latency_ms=histogram([10, 20], [1, 2, 3])),
        minute_row("cam-2", 0, runs=22, passed=22, latency_ms=histogram([15, 20, 40], [4, 5, 6, 7])),
    ]
    with db.write() as conn:
        conn.execute(telemetry_minutes.insert(), rows)
    with db.read() as conn:
        stats = cohort_stats(conn, "r-1", "canary")
    assert stats.latency_bounds == (10.0, 15.0, 20.0, 40.0)
    assert stats.latency_counts == (1, 4, 7, 6, 10)
    assert stats.p99_ms == 40.0  # in the overflow: read as the last bound
