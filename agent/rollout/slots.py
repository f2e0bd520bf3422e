"""A/B slots: what runs (B), what it replaced (A), and where a plan's results come from.

A canary switch keeps slot A — the replaced plan, compiled, with the applied record and the
threshold values it ran with — in memory (and its record in ``state.json``'s ``previous``), so the
health gate or a crash loop can go back to it between two frames with no network and no compile.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from agent.sync.state import AppliedWorkflow
from agent.thresholds import ThresholdSet
from agent.workflow import Plan

if TYPE_CHECKING:
    from agent.sync.telemetry import Lineage
    from agent.thresholds import ThresholdStore

__all__ = ["FrameGate", "Origin", "Slot", "lineage_of"]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a running plan came from, beyond what the plan itself says (its rollout, cohort and
    bundle, and the threshold set it was applied with when its nodes name none)."""

    rollout_id: str = ""
    cohort: str = ""
    bundle_sha256: str = ""
    threshold_set: str = ""
    threshold_version: int = 0

    @classmethod
    def of(cls, applied: AppliedWorkflow) -> Origin:
        name = sorted(applied.thresholds)[0] if applied.thresholds else ""
        return cls(
            rollout_id=applied.rollout_id,
            cohort=applied.role,
            bundle_sha256=applied.bundle_sha256,
            threshold_set=name,
            threshold_version=applied.thresholds.get(name, 0),
        )


def lineage_of(plan: Plan, thresholds: ThresholdStore | None, origin: Origin | None) -> Lineage:
    """What ``plan``'s results are stamped with: what the plan says (workflow, model sha256, its
    threshold set at the version ``thresholds`` holds) plus ``origin``'s rollout, cohort and bundle
    (and threshold set, when the plan's nodes name none)."""
    from agent.sync.telemetry import plan_lineage

    lineage = plan_lineage(plan, thresholds)
    if origin is None:
        return lineage
    lineage = replace(
        lineage, rollout_id=origin.rollout_id, cohort=origin.cohort, bundle_sha256=origin.bundle_sha256
    )
    if not lineage.threshold_set and origin.threshold_set:
        lineage = replace(
            lineage, threshold_set=origin.threshold_set, threshold_version=origin.threshold_version
        )
    return lineage


@dataclass
class Slot:
    """A compiled plan ready to run again, with what it was applied with."""

    plan: Plan
    applied: AppliedWorkflow
    thresholds: dict[str, ThresholdSet] = field(default_factory=dict)
    """Threshold set name → the set the plan ran with, a local override's mark included."""


class FrameGate:
    """A writer-preferring readers-writer lock around frames: each run holds :meth:`frame` while
    it runs and stamps its result; :meth:`between_frames` waits until no frame is in flight and
    keeps new ones from starting, so a plan and the thresholds it reads change together, between
    two frames (a frame never runs one bundle's plan with another bundle's thresholds)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._writers = 0
        self._writing = False

    @contextmanager
    def frame(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and not self._writers)
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                if not self._running:
                    self._cond.notify_all()

    @contextmanager
    def between_frames(self) -> Iterator[None]:
        with self._cond:
            self._writers += 1
            self._cond.wait_for(lambda: not self._writing and not self._running)
            self._writers -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
