"""Reporting local threshold overrides (the device API's ``SetThreshold``) to the control plane.

Each override becomes a ``threshold_override`` event (severity ``warning``) on the telemetry
path — collector → outbox → sender, like a ``rollback`` — and is then marked reported in the
override log, so an override made while the agent was not managed, or not yet handed over when
it stopped, is reported at the next start (:meth:`OverrideReporter.report_backlog`).

"Reported" means handed to the telemetry collector: it reaches the outbox within moments, and
the outbox keeps it until the control plane acks it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agent.device_api.overrides import OverrideLog, ThresholdOverride
from agent.sync.telemetry import Lineage, TelemetryCollector

__all__ = ["THRESHOLD_OVERRIDE_EVENT", "OverrideReporter", "override_attributes"]

log = logging.getLogger(__name__)

THRESHOLD_OVERRIDE_EVENT = "threshold_override"


def override_attributes(override: ThresholdOverride) -> dict[str, Any]:
    """The event's ``attributes_json``: what changed, to which version, by whom and why."""
    return {
        "id": override.id,
        "set": override.threshold_set,
        "key": override.key,
        "value": override.value,
        "previous": override.previous,
        "version": override.version,
        "actor": override.actor,
        "reason": override.reason,
        "origin": override.origin,
    }


class OverrideReporter:
    """Turns overrides into events for ``telemetry`` and marks them reported in ``overrides``.

    ``lineage_of_set(name, version)`` says which workflow the event is filed under (one that
    reads the set) and its lineage at the overridden version. Thread-safe as far as its parts
    are; never raises: a failure is logged and the override stays unreported (sent at the next
    start)."""

    def __init__(
        self,
        overrides: OverrideLog,
        telemetry: TelemetryCollector,
        lineage_of_set: Callable[[str, int], Lineage],
    ) -> None:
        self.overrides = overrides
        self.telemetry = telemetry
        self.lineage_of_set = lineage_of_set

    def report(self, override: ThresholdOverride) -> bool:
        """Hand one override to the telemetry path; whether it was handed over."""
        return self._report([override]) == 1

    def report_backlog(self) -> int:
        """Hand over every override the log has not reported yet; how many."""
        try:
            pending = self.overrides.unreported()
        except OSError as exc:
            log.error("sync: cannot read the threshold override log %s: %s", self.overrides.path, exc)
            return 0
        return self._report(pending)

    def _report(self, overrides: list[ThresholdOverride]) -> int:
        handed: set[str] = set()
        for override in overrides:
            try:
                lineage = self.lineage_of_set(override.threshold_set, override.version)
                self.telemetry.add_event(
                    THRESHOLD_OVERRIDE_EVENT,
                    severity="warning",
                    lineage=lineage,
                    message=(
                        f"threshold {override.threshold_set}.{override.key} set to {override.value:g} "
                        f"on the device (was {override.previous}); version {override.version}"
                    ),
                    attributes=override_attributes(override),
                )
            except Exception:
                log.exception("sync: reporting threshold override %s failed", override.id)
                continue
            handed.add(override.id)
        if handed:
            try:
                self.overrides.mark_reported(handed)
            except OSError as exc:  # it goes again at the next start: a duplicate, not a loss
                log.error(
                    "sync: cannot mark threshold overrides reported in %s: %s", self.overrides.path, exc
                )
        return len(handed)
