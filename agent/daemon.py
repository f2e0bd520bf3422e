"""The agent process: frame sources feed workflow runs until SIGTERM, then in-flight runs drain.

``Agent.start`` picks the device profile, opens the model store (installing configured model
files), loads the live thresholds, compiles every configured workflow against them (models are
loaded and sessions created here, before any frame), then starts the sources and the run
workers. ``Agent.stop`` stops the sources, lets the workers finish every queued frame and shuts
the runtime down. Later the sync layer and the device API join this same process.
"""

from __future__ import annotations

import json
import logging
import signal
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from agent.config import AgentSettings, WorkflowBinding
from agent.inference.backend import BackendOptions
from agent.inference.backends import make_backends
from agent.inference.runtime import ModelRuntime
from agent.inference.store import ModelStore
from agent.profiles import DeviceFacts, Profile, bundled_profiles_dir, load_profiles, select_profile
from agent.sources.frames import FrameQueue
from agent.sources.readers import Source, make_source
from agent.thresholds import ThresholdStore
from agent.workflow import CompileOptions, Executor, Plan, RunResult, compile_workflow, read_document
from agent.workflow.result import json_default

log = logging.getLogger(__name__)


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
        self, plan: Plan, binding: WorkflowBinding, executor: Executor, results: TextIO | None
    ) -> None:
        self.plan = plan
        self.binding = binding
        self.executor = executor
        self.queue = FrameQueue(binding.queue.size, binding.queue.policy)
        self.sources: list[Source] = [
            make_source(f"{plan.workflow_id}.{i}.{spec.type}", spec, self.queue)
            for i, spec in enumerate(binding.sources)
        ]
        self.stats = WorkflowStats()
        self._results = results
        self._results_lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._work, name=f"edgefleet-run-{plan.workflow_id}-{i}", daemon=True)
            for i in range(binding.workers)
        ]

    def start(self) -> None:
        for worker in self._workers:
            worker.start()
        for source in self.sources:
            source.start()

    def _work(self) -> None:
        while (frame := self.queue.get()) is not None:
            started = time.perf_counter()
            result = self.executor.run(self.plan, frame.document(self.binding.input_key))
            self.stats.record(result, time.perf_counter() - started)
            if result.error is not None:
                log.warning(
                    "workflow %s frame %s#%d failed at %s: %s",
                    self.plan.workflow_id,
                    frame.source,
                    frame.seq,
                    result.error.node,
                    result.error.message,
                )
            if self._results is not None:
                line = json.dumps(
                    {"frame": frame.document()["frame"], **result.to_dict()}, default=json_default
                )
                with self._results_lock:
                    self._results.write(line + "\n")

    def sources_done(self) -> bool:
        return all(not source.is_alive() for source in self.sources)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the sources, run what is queued, then stop the workers."""
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


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.profile: Profile | None = None
        self.profile_reasons: list[str] = []
        self.thresholds = ThresholdStore()
        self.runtime: ModelRuntime | None = None
        self.executor: Executor | None = None
        self.services: list[WorkflowService] = []
        self._results: TextIO | None = None
        self._stop = threading.Event()
        self.started_at: float | None = None

    def start(self) -> None:
        settings = self.settings
        profiles = load_profiles(bundled_profiles_dir(settings.profiles_dir))
        detection = select_profile(profiles, DeviceFacts.probe(), settings.profile)
        self.profile, self.profile_reasons = detection.profile, detection.reasons
        inference = detection.profile.inference
        log.info(
            "device %s: profile %s (%s)",
            settings.device_id,
            detection.profile.name,
            "; ".join(detection.reasons[:1]),
        )
        store = ModelStore(settings.data_dir / "models")
        for model in settings.models:
            store.install(model.file, model.id, model.version)
        options = BackendOptions(
            precision=inference.precision,
            max_batch=inference.max_batch_size,
            workspace_mb=inference.workspace_mb or 1024,
            use_dla=inference.use_dla,
            dla_core=inference.dla_core or 0,
            cpu_threads=inference.cpu_threads,
            cache_dir=settings.data_dir / "engines",
        )
        self.runtime = ModelRuntime(
            store, make_backends(inference.backends), options, max_wait_ms=inference.max_wait_ms
        )
        for name, values in settings.thresholds.items():
            self.thresholds.put(name, values)
        self.executor = Executor(max_workers=max(4, sum(b.workers for b in settings.workflows) * 2))
        compile_options = CompileOptions(
            schema_dirs=tuple(settings.schema_dirs),
            resources={"models": self.runtime, "thresholds": self.thresholds},
        )
        plans = [(compile_workflow(read_document(b.file), compile_options), b) for b in settings.workflows]
        if settings.results_jsonl is not None:
            settings.results_jsonl.parent.mkdir(parents=True, exist_ok=True)
            self._results = settings.results_jsonl.open("a", encoding="utf-8")
        self.services = [
            WorkflowService(plan, binding, self.executor, self._results) for plan, binding in plans
        ]
        self.started_at = time.monotonic()
        for service in self.services:
            service.start()

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def wait(self, poll_s: float = 0.2) -> None:
        """Until a stop is requested, or every source has run out (finite sources)."""
        while not self._stop.wait(poll_s):
            if self.services and all(service.sources_done() for service in self.services):
                return

    def stop(self) -> None:
        for service in self.services:
            service.stop()
        if self.executor is not None:
            self.executor.close()
        if self.runtime is not None:
            self.runtime.close()
        if self._results is not None:
            self._results.close()

    def summary(self) -> list[dict[str, Any]]:
        return [service.summary() for service in self.services]

    def serve(self) -> list[dict[str, Any]]:
        """Run until SIGTERM/SIGINT (or until finite sources run out); drain; return the summary."""
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            self.wait()
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.summary()
