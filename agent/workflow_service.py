"""One workflow inside the agent: its frame queue, its sources and its run workers.

A :class:`WorkflowService` runs every frame its sources queue on the workflow's current plan
(swapped atomically between two frames), and hands each finished run to what the agent attached
to it, never letting one of them fail or stop a run: the workflow's :class:`WorkflowStats`, the
results file, telemetry (a managed agent), the device API's event bus, Prometheus metrics, the
health gate of a rollout and a shadow plan.

Each run worker reports through a :class:`agent.service.watchdog.WorkerBeat` (:attr:`beats`):
busy from taking a frame's plan until the frame is handed on, idle while it waits for the next
frame, so systemd's watchdog sees a worker stuck in a run.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from agent.config import WorkflowBinding
from agent.rollout.slots import FrameGate
from agent.service.watchdog import WorkerBeat
from agent.sources.frames import FrameQueue
from agent.sources.readers import Source, make_source
from agent.workflow import Executor, Plan, RunResult
from agent.workflow.result import json_default

if TYPE_CHECKING:
    from agent.device_api.events import EventBus
    from agent.metrics import AgentMetrics
    from agent.rollout.shadow import ShadowRunner
    from agent.sources.frames import Frame
    from agent.sync.telemetry import Lineage, TelemetryCollector

__all__ = ["DEFAULT_MAX_RUN_S", "RECENT_FRAMES", "WorkflowService", "WorkflowStats"]

log = logging.getLogger(__name__)

DEFAULT_MAX_RUN_S = 60.0
"""One run longer than this makes the worker's liveness check fail (the watchdog's limit)."""

RECENT_FRAMES = 8
"""Frames each workflow keeps (the most recent ones) for warming a candidate up."""


@dataclass
class WorkflowStats:
    """Counters of one workflow's runs, for the summary, logs and (later) metrics."""

    runs: int = 0
    failed: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    first: float | None = None
    last: float | None = None

    def record(self, result: RunResult, seconds: float) -> None:
        now = time.monotonic()
        self.first = self.first or now
        self.last = now
        self.runs += 1
        self.failed += not result.ok
        decisions = {
            output.get("decision") for output in result.outputs.values() if isinstance(output, dict)
        } & {"accept", "reject"}
        if decisions:  # a run that rejects anywhere rejects the part
            self.decisions["reject" if "reject" in decisions else "accept"] += 1
        if len(self.latencies) < 100_000:
            self.latencies.append(seconds)

    def summary(self) -> dict[str, Any]:
        span = (self.last - self.first) if self.first and self.last and self.runs > 1 else None
        ordered = sorted(self.latencies)
        return {
            "runs": self.runs,
            "failed": self.failed,
            "accepted": self.decisions.get("accept", 0),
            "rejected": self.decisions.get("reject", 0),
            "throughput_per_s": round((self.runs - 1) / span, 2) if span else None,
            "latency_ms_p50": round(statistics.median(ordered) * 1000, 2) if ordered else None,
            "latency_ms_p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2)
            if ordered
            else None,
        }


class WorkflowService:
    """One workflow, its queue, its sources and its run workers."""

    def __init__(
        self,
        plan: Plan,
        binding: WorkflowBinding,
        executor: Executor,
        results: TextIO | None,
        *,
        max_run_s: float = DEFAULT_MAX_RUN_S,
    ) -> None:
        self._current: tuple[Plan, Lineage | None] = (plan, None)
        self._plan_lock = threading.Lock()
        self.plan_swaps = 0
        self.binding = binding
        self.executor = executor
        self.queue = FrameQueue(binding.queue.size, binding.queue.policy)
        self.sources: list[Source] = [
            make_source(f"{plan.workflow_id}.{i}.{spec.type}", spec, self.queue)
            for i, spec in enumerate(binding.sources)
        ]
        self.stats = WorkflowStats()
        self.telemetry: TelemetryCollector | None = None
        """Counts every run (a managed agent's telemetry); ``None``: runs are not reported."""
        self._telemetry_failures = 0
        self.events: EventBus | None = None
        """Where each run's decision and events are published (the device API's ``WatchEvents``);
        ``None``: not published."""
        self.metrics: AgentMetrics | None = None
        """Counts every run for Prometheus; ``None``: not counted."""
        self._publish_failures = 0
        self.recent: deque[Frame] = deque(maxlen=RECENT_FRAMES)
        """The most recent frames the service ran (warm-up input for a candidate)."""
        self._watch: tuple[Plan, Callable[[RunResult, float], object]] | None = None
        self.frame_gate = FrameGate()
        """Held by each frame while it runs; a switch of plan and thresholds waits for it."""
        self.shadow: ShadowRunner | None = None
        """A shadow plan fed every frame after the active run; ``None``: none."""
        self._started = False
        self._results = results
        self._results_lock = threading.Lock()
        self._workers = [
            threading.Thread(
                target=self._work, args=(i,), name=f"edgefleet-run-{plan.workflow_id}-{i}", daemon=True
            )
            for i in range(binding.workers)
        ]
        self.beats = [
            WorkerBeat(f"workflow {plan.workflow_id} worker {i}", max_run_s=max_run_s, thread=thread)
            for i, thread in enumerate(self._workers)
        ]
        """One liveness check per run worker (``beats[i]`` is worker ``i``), for the watchdog."""

    @property
    def plan(self) -> Plan:
        """The plan the next frame runs."""
        return self._current[0]

    @property
    def lineage(self) -> Lineage | None:
        """What the next frame's results will be attributed to (``None`` without telemetry)."""
        return self._current[1]

    def replace_plan(self, plan: Plan, lineage: Lineage | None = None) -> Plan:
        """Swap in a new compiled plan of the same workflow, with its lineage; returns the old one.

        The swap is atomic and happens between frames: each frame reads the plan (and its
        lineage) once when it starts, so runs in flight finish on the old plan and the next frame
        runs the new one. Sources, queue and workers stay as they are."""
        current = self._current[0]
        if plan.workflow_id != current.workflow_id:
            raise ValueError(
                f"cannot replace workflow '{current.workflow_id}' with workflow '{plan.workflow_id}'"
            )
        with self._plan_lock:
            old = self._current[0]
            self._current = (plan, lineage)
            self.plan_swaps += 1
        return old

    def set_lineage(self, plan: Plan, lineage: Lineage) -> None:
        """Attribute ``plan``'s next runs to ``lineage`` (nothing changes if ``plan`` was swapped
        out meanwhile)."""
        with self._plan_lock:
            if self._current[0] is plan:
                self._current = (plan, lineage)

    def watch(self, plan: Plan, observer: Callable[[RunResult, float], object] | None) -> None:
        """Hand every run of ``plan`` (result, seconds) to ``observer``, on the run worker,
        before its next frame; ``None`` stops watching."""
        self._watch = (plan, observer) if observer is not None else None

    def set_shadow(self, runner: ShadowRunner | None) -> None:
        """Feed ``runner`` from the next frame on (the previous runner is stopped)."""
        old, self.shadow = self.shadow, runner
        if old is not None:
            old.stop()

    def start(self) -> None:
        self._started = True
        for worker in self._workers:
            worker.start()
        for source in self.sources:
            source.start()

    def _work(self, index: int) -> None:
        beat = self.beats[index]
        while (frame := self.queue.get()) is not None:  # waiting for a frame is idle
            with beat.running():
                self._run_frame(frame)

    def _run_frame(self, frame: Frame) -> None:
        with self.frame_gate.frame():  # a switch waits for this frame, or this frame for it
            plan, lineage = self._current  # one plan per frame, even if one is swapped in meanwhile
            self.recent.append(frame)
            document = frame.document(self.binding.input_key)
            started = time.perf_counter()
            result = self.executor.run(plan, document)
            seconds = time.perf_counter() - started
            self.stats.record(result, seconds)
            if self.telemetry is not None:
                facts = {"source": frame.source, "seq": frame.seq, "timestamp": frame.timestamp, **frame.meta}
                self.report_run(result, plan, lineage, seconds, image=frame.data, facts=facts)
            self.count_run(plan, result, seconds, origin=f"{frame.source}#{frame.seq}")
            if self._results is not None:
                self._write_result(frame, plan, lineage, result)
        if result.error is not None:
            log.warning(
                "workflow %s frame %s#%d failed at %s: %s",
                plan.workflow_id,
                frame.source,
                frame.seq,
                result.error.node,
                result.error.message,
            )
        watch = self._watch
        if watch is not None and watch[0] is plan:
            try:
                watch[1](result, seconds)
            except Exception:  # the gate is a guard: its failure must not stop runs
                log.exception("workflow %s: the health gate failed", plan.workflow_id)
        shadow = self.shadow
        if shadow is not None:
            shadow.offer(document, plan, result)

    def count_run(self, plan: Plan, result: RunResult, seconds: float, *, origin: str) -> None:
        """Hand a finished run to the event bus and the metrics, when attached; ``origin`` says
        where its input came from (``source#seq``, or ``device_api``). Never raises: a failure is
        logged (the first, then every 1000th) and the run stands."""
        events, metrics = self.events, self.metrics
        try:
            if events is not None:
                events.publish_run(result, origin=origin)
            if metrics is not None:
                metrics.record_run(plan, result, seconds)
        except Exception:
            self._publish_failures += 1
            if self._publish_failures == 1 or self._publish_failures % 1000 == 0:
                log.exception(
                    "workflow %s: publishing a run to events or metrics failed (%d so far); runs go on",
                    plan.workflow_id,
                    self._publish_failures,
                )

    def _write_result(self, frame: Frame, plan: Plan, lineage: Lineage | None, result: RunResult) -> None:
        from agent.sync.telemetry import Lineage, result_lineage

        stamp = result_lineage(lineage or Lineage(plan.workflow_id, plan.version), result)
        line = json.dumps(
            {"frame": frame.document()["frame"], **result.to_dict(), "lineage": stamp.to_dict()},
            default=json_default,
        )
        results = self._results
        if results is not None:
            with self._results_lock:
                results.write(line + "\n")

    def report_run(
        self,
        result: RunResult,
        plan: Plan,
        lineage: Lineage | None,
        seconds: float,
        *,
        image: Any,
        facts: Mapping[str, Any],
    ) -> None:
        """Hand a run of this workflow to telemetry (runs from its frames and from the device
        API alike): ``image`` for a reject's thumbnail, ``facts`` about where the input came
        from. No-op without telemetry; a telemetry failure never fails or stops a run."""
        telemetry = self.telemetry
        if telemetry is None:
            return
        try:
            if lineage is None:
                from agent.sync.telemetry import Lineage

                lineage = Lineage(plan.workflow_id, plan.version)
            telemetry.record_run(
                result, lineage=lineage, plan=plan, seconds=seconds, image=image, frame=facts
            )
        except Exception:
            self._telemetry_failures += 1
            telemetry.note_record_error()
            if self._telemetry_failures == 1 or self._telemetry_failures % 1000 == 0:
                log.exception(
                    "workflow %s: telemetry could not count a run (%d so far); runs go on",
                    plan.workflow_id,
                    self._telemetry_failures,
                )

    def sources_done(self) -> bool:
        return all(not source.is_alive() for source in self.sources)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the sources, run what is queued, then stop the workers (and the shadow)."""
        self.set_shadow(None)
        if not self._started:
            self.queue.close()
            return
        for source in self.sources:
            source.stop()
        for source in self.sources:
            source.join(timeout)
        self.queue.close()
        for worker in self._workers:
            worker.join(timeout)

    def summary(self) -> dict[str, Any]:
        return {
            "workflow": self.plan.workflow_id,
            "version": self.plan.version,
            "dropped_frames": self.queue.dropped,
            **self.stats.summary(),
        }
