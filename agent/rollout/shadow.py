"""Shadow mode: a candidate plan runs on the active plan's frames, never acts, and is compared.

The workflow service hands every frame, with the active run's result, to :meth:`ShadowRunner.offer`
after the active run: a non-blocking put on a small bounded queue. When the shadow worker is behind,
the frame is dropped and counted (:attr:`ShadowRunner.dropped`, and ``dropped_frames`` under the
shadow lineage), so the active path never waits for the candidate.

The shadow worker runs the candidate plan (compiled without side effects and with its bundle's own
threshold values: see ``agent.sync.reconciler``) and compares it with the active run of the same
frame: :func:`decision` (``accept``, ``reject``, ``error`` or ``None``: no decision) and the model
score the threshold node used (:func:`score`). The candidate's result is counted by telemetry under
the shadow lineage and then thrown away: no results line, no ``part_rejected`` event.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent.workflow import Executor, Plan, RunResult

if TYPE_CHECKING:
    from agent.sync.telemetry import Lineage, TelemetryCollector

__all__ = ["ShadowRunner", "decision", "score"]

log = logging.getLogger(__name__)

_STOP = object()


def _threshold_outputs(plan: Plan, result: RunResult) -> list[Mapping[str, Any]]:
    """Outputs of the plan's ``threshold`` nodes that ran, in plan order."""
    from agent.nodes.threshold import Threshold

    outputs = []
    for node in plan.nodes:
        if isinstance(node.impl, Threshold):
            output = result.outputs.get(node.id)
            if isinstance(output, Mapping) and output.get("decision") in ("accept", "reject"):
                outputs.append(output)
    return outputs


def _deciding(plan: Plan, result: RunResult) -> Mapping[str, Any] | None:
    """The threshold output that decided the run: the first that rejects, else the first."""
    outputs = _threshold_outputs(plan, result)
    return next((o for o in outputs if o["decision"] == "reject"), outputs[0] if outputs else None)


def decision(plan: Plan, result: RunResult) -> str | None:
    """``error`` for a failed run, else the deciding threshold node's decision (``None``: no
    threshold node decided; any ``decision`` output is used as a fallback)."""
    if not result.ok:
        return "error"
    decided = _deciding(plan, result)
    if decided is not None:
        return str(decided["decision"])
    from agent.sync.telemetry import run_outcome

    outcome, _, _ = run_outcome(result)
    return {"passed": "accept", "failed": "reject"}.get(outcome)


def score(plan: Plan, result: RunResult) -> float | None:
    """The score the deciding threshold node compared (a finite number), else ``None``."""
    if not result.ok:
        return None
    decided = _deciding(plan, result)
    value = decided.get("score") if decided is not None else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class ShadowRunner:
    """Runs one shadow plan beside a workflow's active plan (see the module docstring)."""

    def __init__(
        self,
        plan: Plan,
        lineage: Lineage,
        executor: Executor,
        *,
        telemetry: TelemetryCollector | None = None,
        queue_size: int = 2,
    ) -> None:
        self.plan = plan
        self.lineage = lineage
        self.executor = executor
        self.telemetry = telemetry
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self.compared = 0
        self.agreed = 0
        self.runs = 0
        self._thread = threading.Thread(
            target=self._work, name=f"edgefleet-shadow-{plan.workflow_id}", daemon=True
        )
        self._thread.start()

    def offer(self, document: dict[str, Any], active_plan: Plan, active: RunResult) -> bool:
        """Queue a frame the active plan ran; False (dropped, counted) when the shadow is behind."""
        try:
            self._queue.put_nowait((document, active_plan, active))
        except queue.Full:
            self.dropped += 1
            if self.telemetry is not None:
                self.telemetry.count_dropped(self.lineage)
            return False
        return True

    def _work(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            document, active_plan, active = item
            try:
                self._run(document, active_plan, active)
            except Exception:  # a shadow failure never touches the active path
                log.exception("shadow %s: a run could not be compared", self.plan.workflow_id)

    def _run(self, document: dict[str, Any], active_plan: Plan, active: RunResult) -> None:
        started = time.perf_counter()
        result = self.executor.run(self.plan, document)
        seconds = time.perf_counter() - started
        self.runs += 1
        ours, theirs = decision(self.plan, result), decision(active_plan, active)
        agreed = ours == theirs
        candidate_score, active_score = score(self.plan, result), score(active_plan, active)
        drift = (
            abs(candidate_score - active_score)
            if candidate_score is not None and active_score is not None
            else None
        )
        self.compared += 1
        self.agreed += agreed
        if self.telemetry is not None:
            self.telemetry.record_run(result, lineage=self.lineage, seconds=seconds, events=False)
            self.telemetry.record_comparison(self.lineage, agreed=agreed, drift=drift)

    def stop(self, timeout: float = 10.0) -> None:
        """Drop what is queued and stop the worker after the run in progress."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
