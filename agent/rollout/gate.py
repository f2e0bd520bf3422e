"""The device's health gate: the first runs of a freshly switched candidate, watched.

After the switch to a candidate (role ``canary``) the first ``gate.frames`` runs are watched. The
gate trips on the run that makes the failed runs more than ``gate.max_errors`` (a failed run: the
run's status is ``failed``; NaN/Inf model outputs already fail the ``model_inference`` node), or
on a run slower than ``gate.max_latency_ms``. It trips at most once, and once ``frames`` runs have
passed it is satisfied and watches nothing more.

:meth:`HealthGate.observe` is called by the run workers after each run of the watched plan; it
only counts under a lock and calls ``on_trip`` (with the reason) or ``on_pass`` once, on the
worker's thread, so the caller can switch back between two frames.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent.rollout.bundle import Gate
from agent.workflow import RunResult

__all__ = ["HealthGate"]


class HealthGate:
    """Watches a candidate's first runs against a :class:`Gate` policy (see the module docstring)."""

    def __init__(
        self,
        gate: Gate,
        *,
        on_trip: Callable[[str], object],
        on_pass: Callable[[], object] | None = None,
    ) -> None:
        self.gate = gate
        self._on_trip = on_trip
        self._on_pass = on_pass
        self._lock = threading.Lock()
        self.runs = 0
        self.errors = 0
        self.done = gate.frames == 0
        """Tripped or satisfied: nothing more is watched."""
        self.tripped: str | None = None

    def observe(self, result: RunResult, seconds: float) -> None:
        """Count one run of the watched plan (``seconds``: its latency as the worker measured)."""
        with self._lock:
            if self.done:
                return
            self.runs += 1
            reason: str | None = None
            if not result.ok:
                self.errors += 1
                if self.errors > self.gate.max_errors:
                    where = f" at node '{result.error.node}': {result.error.message}" if result.error else ""
                    reason = (
                        f"{self.errors} failed run(s) in the first {self.runs} watched "
                        f"(at most {self.gate.max_errors} allowed); the last failed{where}"
                    )
            latency_ms = seconds * 1000.0
            if reason is None and latency_ms > self.gate.max_latency_ms:
                reason = (
                    f"run {self.runs} took {latency_ms:.1f} ms, over the gate's "
                    f"{self.gate.max_latency_ms:g} ms"
                )
            if reason is not None:
                self.done, self.tripped = True, reason
            elif self.runs >= self.gate.frames:
                self.done = True
            else:
                return
        if reason is not None:
            self._on_trip(reason)
        elif self._on_pass is not None:
            self._on_pass()
