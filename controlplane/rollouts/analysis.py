"""Whether a rollout step promotes, waits or aborts (docs/rollouts.md, "Analysis").

:func:`cohort_stats` sums a cohort's telemetry roll-ups; :func:`evaluate` holds a candidate
cohort against its baseline and returns a :class:`Verdict` with every :class:`Criterion` behind
it. Everything here is pure except :func:`cohort_stats`, which reads ``telemetry_minutes``.

Sample minimums. A criterion is ``insufficient`` while either side has fewer than the step's
``min_samples`` — runs for the error rate and latency, inspected parts (passed + failed) for the
defect rate, compared frames for shadow agreement — unless it already fails decisively:

- **error rate, shadow agreement**: more errors (disagreements) than ``min_samples`` samples
  may hold, so the criterion fails at ``min_samples`` even if every sample still to come is
  clean. Exact, not an estimate.
- **p99 latency ratio**: both sides have at least ``min(min_samples, 50)`` runs, the ratio is
  above the limit, *and* significantly more than 1 % of the candidate's runs are slower than
  ``max_p99_latency_ratio × baseline p99`` (one-sided binomial test, p < 0.001; only runs in
  buckets wholly above that line count). A single slow frame among 50 does not abort.
- **defect-rate shift**: both sides have at least ``min(min_samples, 50)`` parts, the shift is
  above ``max_shift`` and the p-value is below ``significance / 10``. Interim looks repeat every
  tick, so they need stronger evidence (as O'Brien–Fleming boundaries do) to keep false aborts
  rare.

With ``min_samples`` 0 a criterion without any data passes (``value`` None): the operator asked
for no minimum. A latency criterion with enough runs but no histogram stays ``insufficient``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection

from controlplane.rollouts.stats import (
    binomial_tail,
    histogram_quantile,
    merge_latency,
    runs_above,
    two_proportion_test,
)
from controlplane.store.schema import telemetry_minutes

StepKind = Literal["shadow", "canary", "full"]
Status = Literal["pass", "fail", "insufficient"]
Action = Literal["promote", "wait", "abort"]

EARLY_MIN_SAMPLES = 50
"""An early abort on latency or defect rate needs at least min(min_samples, this) per side."""
EARLY_LATENCY_P = 0.001
"""The binomial p-value below which the slow-run count is an early latency abort."""
EARLY_DEFECT_DIVISOR = 10
"""An early defect-rate abort needs p < significance / this."""
P99_TAIL = 0.01


class DefectRateSpec(BaseModel):
    """Abort when the candidate's reject rate moves by more than ``max_shift`` (a fraction) and
    the two-proportion test says the move is real (p < ``significance``)."""

    model_config = ConfigDict(extra="forbid")

    max_shift: float = Field(0.05, gt=0, lt=1)
    significance: float = Field(0.01, gt=0, lt=1)


class AnalysisSpec(BaseModel):
    """The rollout spec's ``analysis:`` section: the limits a step is held to."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate: float = Field(0.02, ge=0, lt=1)
    max_p99_latency_ratio: float = Field(1.5, ge=1)
    defect_rate: DefectRateSpec = Field(default_factory=DefectRateSpec)
    min_shadow_agreement: float = Field(0.9, gt=0, le=1)
    max_unhealthy_devices: int = Field(0, ge=0)
    max_memory_ratio: float = Field(2.0, ge=1)
    """A candidate device whose agent memory (peak RSS in the step) exceeds this multiple of the
    baseline devices' median is unhealthy (shadow and canary steps)."""


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class CohortStats:
    """A cohort's counters summed over its telemetry rows, with the merged latency histogram
    (``latency_counts`` has one count per bound plus the overflow)."""

    devices: int = 0
    runs: int = 0
    errors: int = 0
    passed: int = 0
    failed: int = 0
    latency_bounds: tuple[float, ...] = ()
    latency_counts: tuple[int, ...] = ()
    shadow_compared: int = 0
    shadow_agreed: int = 0
    shadow_scored: int = 0
    shadow_score_drift_sum: float = 0.0

    @property
    def parts(self) -> int:
        """Inspected parts: accepted + rejected."""
        return self.passed + self.failed

    @property
    def error_rate(self) -> float | None:
        return _share(self.errors, self.runs)

    @property
    def defect_rate(self) -> float | None:
        """Rejected parts / inspected parts."""
        return _share(self.failed, self.parts)

    @property
    def p99_ms(self) -> float | None:
        return histogram_quantile(self.latency_bounds, self.latency_counts, 0.99)

    @property
    def agreement(self) -> float | None:
        return _share(self.shadow_agreed, self.shadow_compared)

    @property
    def mean_score_drift(self) -> float | None:
        return _share(self.shadow_score_drift_sum, self.shadow_scored)


@dataclass(frozen=True)
class DeviceHealth:
    """An unhealthy cohort device and what is wrong with it (a rollout failure, FAILING health)."""

    device_id: str
    problem: str


@dataclass(frozen=True)
class Criterion:
    """One check of a step. ``samples`` is the smaller side's count, the one held against
    ``min_samples``; ``value`` is None without data."""

    name: str
    value: float | None
    threshold: float
    comparison: str
    samples: int
    status: Status
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    criteria: tuple[Criterion, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "criteria": [c.to_dict() for c in self.criteria],
        }


# ---- reading the roll-ups ----------------------------------------------------------------------

_SUMMED = ("runs", "errors", "passed", "failed", "shadow_compared", "shadow_agreed", "shadow_scored")


def _floor_minute(at: datetime) -> datetime:
    aware = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return aware.replace(second=0, microsecond=0)


def cohort_stats(
    conn: Connection,
    rollout_id: str,
    cohort: str,
    *,
    since: datetime | None = None,
    device_ids: Collection[str] | None = None,
) -> CohortStats:
    """The rows of ``telemetry_minutes`` with this ``rollout_id`` and ``cohort`` summed: from the
    minute ``since`` falls in (a naive time is UTC), and only ``device_ids`` when given (an empty
    collection gives empty stats). ``devices`` counts the distinct devices with a row."""
    if device_ids is not None and not device_ids:
        return CohortStats()
    t = telemetry_minutes.c
    where = [t.rollout_id == rollout_id, t.cohort == cohort]
    if since is not None:
        where.append(t.minute >= _floor_minute(since))
    if device_ids is not None:
        where.append(t.device_id.in_(sorted(device_ids)))
    totals = (
        conn.execute(
            sa.select(
                sa.func.count(sa.distinct(t.device_id)).label("devices"),
                *(sa.func.coalesce(sa.func.sum(t[name]), 0).label(name) for name in _SUMMED),
                sa.func.coalesce(sa.func.sum(t["shadow_score_drift_sum"]), 0.0).label("drift"),
            ).where(*where)
        )
        .mappings()
        .one()
    )
    bounds, counts = merge_latency(conn.execute(sa.select(t.latency_ms).where(*where)).scalars())
    return CohortStats(
        devices=int(totals["devices"]),
        runs=int(totals["runs"]),
        errors=int(totals["errors"]),
        passed=int(totals["passed"]),
        failed=int(totals["failed"]),
        latency_bounds=bounds,
        latency_counts=counts,
        shadow_compared=int(totals["shadow_compared"]),
        shadow_agreed=int(totals["shadow_agreed"]),
        shadow_scored=int(totals["shadow_scored"]),
        shadow_score_drift_sum=float(totals["drift"]),
    )


# ---- criteria ----------------------------------------------------------------------------------

_Check = tuple[Criterion, tuple[str, ...]]
"""A criterion, and when it is insufficient what it still needs ("candidate 80/300 samples")."""


def _needs(min_samples: int, what: str = "samples", **sides: tuple[int, int]) -> tuple[str, ...]:
    """What each side still lacks: ``candidate 80/300 samples`` while its runs are short, else
    ``candidate 250/300 parts`` (``what``) while the criterion's own count is short. Sides map to
    ``(runs, count)``."""
    out = []
    for side, (runs, count) in sides.items():
        if runs < min_samples:
            out.append(f"{side} {runs}/{min_samples} samples")
        elif count < min_samples:
            out.append(f"{side} {count}/{min_samples} {what}")
    return tuple(out)


def _no_data(name: str, threshold: float, comparison: str, detail: str) -> _Check:
    """A criterion without data when min_samples is 0: nothing was asked for, so it passes."""
    return Criterion(
        name, None, threshold, comparison, 0, "pass", f"no data ({detail}); min_samples is 0"
    ), ()


def _error_rate(policy: AnalysisSpec, candidate: CohortStats, min_samples: int) -> _Check:
    limit, runs, errors = policy.max_error_rate, candidate.runs, candidate.errors
    rate = candidate.error_rate
    detail = f"{errors} errors in {runs} candidate runs"
    if rate is None and min_samples == 0:
        return _no_data("error_rate", limit, "<=", detail)
    status: Status
    if runs >= min_samples:
        status = "pass" if rate is not None and rate <= limit else "fail"
    elif errors / min_samples > limit:  # as the final check would
        status = "fail"
        detail += f": above {limit:g} of {min_samples} runs even if every further run succeeds"
    else:
        status = "insufficient"
    needs = _needs(min_samples, candidate=(runs, runs)) if status == "insufficient" else ()
    return Criterion("error_rate", rate, limit, "<=", runs, status, detail), needs


def _latency_early_abort(candidate: CohortStats, line: float) -> tuple[bool, str]:
    """Whether the candidate's runs slower than ``line`` are too many for a 1 % tail (p < 0.001)."""
    slow = runs_above(candidate.latency_bounds, candidate.latency_counts, line)
    total = sum(candidate.latency_counts)
    p = binomial_tail(slow, total, P99_TAIL)
    return p < EARLY_LATENCY_P, f"{slow} of {total} candidate runs above {line:.1f} ms (binomial p = {p:.2g})"


def _latency(policy: AnalysisSpec, candidate: CohortStats, baseline: CohortStats, min_samples: int) -> _Check:
    name, limit = "p99_latency_ratio", policy.max_p99_latency_ratio
    samples = min(candidate.runs, baseline.runs)
    c99, b99 = candidate.p99_ms, baseline.p99_ms
    detail = f"p99 {_ms(c99)} candidate ({candidate.runs} runs) vs {_ms(b99)} baseline ({baseline.runs} runs)"
    runs_short = _needs(min_samples, candidate=(candidate.runs,) * 2, baseline=(baseline.runs,) * 2)
    if c99 is None or b99 is None or b99 <= 0:
        if samples == 0 and min_samples == 0:
            return _no_data(name, limit, "<=", detail)
        missing = runs_short or ("latency histograms from both cohorts",)
        return Criterion(name, None, limit, "<=", samples, "insufficient", detail), missing
    ratio = c99 / b99
    if samples >= min_samples:
        return Criterion(name, ratio, limit, "<=", samples, "pass" if ratio <= limit else "fail", detail), ()
    if ratio > limit and samples >= min(min_samples, EARLY_MIN_SAMPLES):
        significant, why = _latency_early_abort(candidate, limit * b99)
        detail += f"; {why}"
        if significant:
            return Criterion(name, ratio, limit, "<=", samples, "fail", detail), ()
    return Criterion(name, ratio, limit, "<=", samples, "insufficient", detail), runs_short


def _defect_rate(
    policy: AnalysisSpec, candidate: CohortStats, baseline: CohortStats, min_samples: int
) -> _Check:
    name, spec = "defect_rate_shift", policy.defect_rate
    limit = spec.max_shift * 100
    samples = min(candidate.parts, baseline.parts)
    c_rate, b_rate = candidate.defect_rate, baseline.defect_rate
    _z, p = two_proportion_test(candidate.failed, candidate.parts, baseline.failed, baseline.parts)
    detail = (
        f"reject rate {_pct(c_rate)} candidate ({candidate.failed}/{candidate.parts}) vs "
        f"{_pct(b_rate)} baseline ({baseline.failed}/{baseline.parts}), p = {p:.2g}"
    )
    needs = _needs(
        min_samples,
        "parts",
        candidate=(candidate.runs, candidate.parts),
        baseline=(baseline.runs, baseline.parts),
    )
    if c_rate is None or b_rate is None:
        if min_samples == 0:
            return _no_data(name, limit, "|x| <=", detail)
        return Criterion(name, None, limit, "|x| <=", samples, "insufficient", detail), needs
    shift = (c_rate - b_rate) * 100
    shifted = abs(shift) > limit
    early_p = spec.significance / EARLY_DEFECT_DIVISOR
    status: Status
    if samples >= min_samples:
        status = "fail" if shifted and p < spec.significance else "pass"
    elif shifted and samples >= min(min_samples, EARLY_MIN_SAMPLES) and p < early_p:
        status = "fail"
        detail += f" (early: below {early_p:g})"
    else:
        return Criterion(name, shift, limit, "|x| <=", samples, "insufficient", detail), needs
    return Criterion(name, shift, limit, "|x| <=", samples, status, detail), ()


def _shadow_agreement(policy: AnalysisSpec, candidate: CohortStats, min_samples: int) -> _Check:
    name, minimum = "shadow_agreement", policy.min_shadow_agreement
    compared, agreed = candidate.shadow_compared, candidate.shadow_agreed
    drift = candidate.mean_score_drift
    detail = f"{agreed}/{compared} shadow decisions match the active bundle; mean score drift " + (
        f"{drift:.4f} over {candidate.shadow_scored} scored frames" if drift is not None else "n/a"
    )
    agreement = candidate.agreement
    if agreement is None and min_samples == 0:
        return _no_data(name, minimum, ">=", detail)
    status: Status
    if compared >= min_samples:
        status = "pass" if agreement is not None and agreement >= minimum else "fail"
    elif (min_samples - (compared - agreed)) / min_samples < minimum:  # as the final check would
        status = "fail"
        detail += f": below {minimum:g} of {min_samples} frames even if every further frame agrees"
    else:
        status = "insufficient"
    needs = (
        _needs(min_samples, "compared frames", candidate=(candidate.runs, compared))
        if status == "insufficient"
        else ()
    )
    return Criterion(name, agreement, minimum, ">=", compared, status, detail), needs


def _unhealthy(policy: AnalysisSpec, unhealthy: Sequence[DeviceHealth]) -> _Check:
    count, limit = len(unhealthy), policy.max_unhealthy_devices
    detail = "; ".join(f"{d.device_id}: {d.problem}" for d in unhealthy) or "no unhealthy devices"
    status: Status = "pass" if count <= limit else "fail"
    return Criterion("unhealthy_devices", float(count), float(limit), "<=", count, status, detail), ()


def _checks(
    kind: StepKind,
    policy: AnalysisSpec,
    candidate: CohortStats,
    baseline: CohortStats,
    unhealthy: Sequence[DeviceHealth],
    min_samples: int,
) -> list[_Check]:
    checks = [_error_rate(policy, candidate, min_samples)]
    if kind != "full":
        checks.append(_latency(policy, candidate, baseline, min_samples))
        checks.append(_defect_rate(policy, candidate, baseline, min_samples))
    if kind == "shadow":
        checks.append(_shadow_agreement(policy, candidate, min_samples))
    checks.append(_unhealthy(policy, unhealthy))
    return checks


def evaluate(
    kind: StepKind,
    policy: AnalysisSpec,
    *,
    candidate: CohortStats,
    baseline: CohortStats,
    unhealthy: Sequence[DeviceHealth],
    elapsed_s: float,
    duration_s: float,
    min_samples: int,
) -> Verdict:
    """The step's verdict: ``abort`` when any criterion fails (the reason names each with its
    value and limit), else ``wait`` while a criterion is insufficient or the step has run less
    than ``duration_s`` (the reason says what is missing), else ``promote``. A ``full`` step has
    no baseline: only ``error_rate`` and ``unhealthy_devices`` apply and ``baseline`` is ignored."""
    if kind not in ("shadow", "canary", "full"):
        raise ValueError(f"steps of kind {kind!r} are not analysed")
    checks = _checks(kind, policy, candidate, baseline, unhealthy, min_samples)
    criteria = tuple(criterion for criterion, _ in checks)
    failed = [c for c in criteria if c.status == "fail"]
    if failed:
        return Verdict("abort", "; ".join(map(_failure, failed)), criteria)
    missing = list(dict.fromkeys(need for _, needs in checks for need in needs))
    if any(c.status == "insufficient" for c in criteria) and not missing:
        missing.append("more samples")
    if elapsed_s < duration_s:
        missing.append(f"{math.floor(elapsed_s)} s of {math.ceil(duration_s)} s")
    if missing:
        return Verdict("wait", "waiting for " + ", ".join(missing), criteria)
    seen = f"candidate {candidate.runs} samples" + ("" if kind == "full" else f", baseline {baseline.runs}")
    return Verdict(
        "promote", f"all {len(criteria)} criteria pass ({seen}, {math.floor(elapsed_s)} s)", criteria
    )


# ---- formatting --------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _failure(criterion: Criterion) -> str:
    """``error_rate 0.05 (limit <= 0.02): 15 errors in 300 candidate runs``; the defect-rate shift
    in signed points (``+11.2 points``)."""
    if criterion.value is None:
        value = "n/a"
    elif criterion.name == "defect_rate_shift":
        value = f"{criterion.value:+.1f} points"
    else:
        value = f"{criterion.value:.4g}"
    return (
        f"{criterion.name} {value} (limit {criterion.comparison} {criterion.threshold:g}): {criterion.detail}"
    )
