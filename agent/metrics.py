"""Prometheus metrics of one agent process, served on localhost (docs/metrics.md).

Two kinds of metric, so the run path stays cheap:

- **counted on the run path** by :meth:`AgentMetrics.record_run` (a few label lookups per run):
  runs by workflow and outcome, run, node and inference latency histograms (inference by model
  and the backend that served it);
- **read at scrape time** from :class:`MetricSources` (the agent implements it): queue depths and
  capacities, dropped frames, batches and samples per model, engine builds by state, outbox
  pending and dropped records, and the device (CPU, memory, disk, temperatures, GPUs) through
  :class:`agent.sync.telemetry.SystemProbe`. The process collector adds ``process_*``.

Names follow Prometheus conventions: ``edgefleet_`` prefix, base units (seconds, bytes),
``_total`` on counters, ``_ratio`` for 0–1 values. ``promtool check metrics`` reports nothing on
the exposition (tests/test_metrics.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from agent.inference.runtime import ServedModel
    from agent.sync.outbox import OutboxStats
    from agent.sync.telemetry import SystemProbe
    from agent.workflow import Plan, RunResult

__all__ = ["RUN_BUCKETS_S", "AgentMetrics", "MetricSources", "QueueStats"]

RUN_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Latency buckets in seconds: an inspection run takes milliseconds to a few hundred."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One workflow's frame queue: frames waiting, the bound, and frames dropped so far."""

    workflow: str
    depth: int
    capacity: int
    dropped: int


class MetricSources(Protocol):
    """What the agent tells the scrape: every method is cheap and never raises."""

    def queues(self) -> Iterable[QueueStats]: ...

    def served_models(self) -> Iterable[Mapping[str, Any]]:
        """``ServedModel.status()`` of every loaded model (model_id, version, backend, builds,
        batches, samples)."""
        ...

    def backend_fallbacks(self) -> Mapping[str, int]:
        """Model loads that skipped each backend of the profile's order (``ModelRuntime.fallbacks``)."""
        ...

    def outbox_stats(self) -> OutboxStats | None: ...


class AgentMetrics:
    """The agent's registry. ``record_run`` on the run path; :meth:`serve` starts the HTTP
    endpoint (``/metrics``) on ``host:port`` (localhost by default: the device's metrics are not
    for the plant network unless the operator says so)."""

    def __init__(
        self,
        sources: MetricSources | None = None,
        *,
        probe: SystemProbe | None = None,
        registry: CollectorRegistry | None = None,
        backend_of: Callable[[str], str] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._backend_of = backend_of
        self._runs = Counter(
            "edgefleet_workflow_runs",
            "Workflow runs by outcome: passed (accepted), failed (rejected), error, skipped (no decision).",
            ["workflow", "outcome"],
            registry=self.registry,
        )
        self._run_seconds = Histogram(
            "edgefleet_workflow_run_duration_seconds",
            "Wall time of one workflow run.",
            ["workflow"],
            buckets=RUN_BUCKETS_S,
            registry=self.registry,
        )
        self._node_seconds = Histogram(
            "edgefleet_node_duration_seconds",
            "Wall time of one node in a run (succeeded, failed or timed out).",
            ["workflow", "node"],
            buckets=RUN_BUCKETS_S,
            registry=self.registry,
        )
        self._inference_seconds = Histogram(
            "edgefleet_inference_duration_seconds",
            "Wall time of one model_inference node, by model and the backend serving it.",
            ["model", "backend"],
            buckets=RUN_BUCKETS_S,
            registry=self.registry,
        )
        self._plans: dict[str, tuple[Plan, tuple[tuple[str, str, ServedModel], ...]]] = {}
        self._children: dict[str, _WorkflowChildren] = {}
        self._lock = threading.Lock()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        if sources is not None or probe is not None:
            self.registry.register(_ScrapeCollector(sources, probe))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def record_run(self, plan: Plan, result: RunResult, seconds: float) -> None:
        """Count one finished run of ``plan``; never raises for an odd result. The inference
        histogram's ``backend`` is ``backend_of(model)`` when given, else the backend serving
        the node's model right now (read without waiting on the model runtime's lock)."""
        from agent.sync.telemetry import run_outcome

        outcome = run_outcome(result)[0]
        workflow = plan.workflow_id
        children = self._children.get(workflow)
        if children is None:
            children = self._children.setdefault(workflow, _WorkflowChildren(workflow))
        runs = children.runs.get(outcome)
        if runs is None:
            runs = children.runs.setdefault(outcome, self._runs.labels(workflow, outcome))
        runs.inc()
        if children.seconds is None:
            children.seconds = self._run_seconds.labels(workflow)
        children.seconds.observe(seconds)
        for node_id, run in result.nodes.items():
            if run.status in ("succeeded", "failed", "timed_out"):
                node = children.nodes.get(node_id)
                if node is None:
                    node = children.nodes.setdefault(node_id, self._node_seconds.labels(workflow, node_id))
                node.observe(run.duration_s)
        for node_id, model, served in self._model_nodes(plan):
            model_run = result.nodes.get(node_id)
            if model_run is not None and model_run.status == "succeeded":
                backend = self._backend_of(model) if self._backend_of is not None else served.backend
                self._inference_seconds.labels(model, backend).observe(model_run.duration_s)

    def _model_nodes(self, plan: Plan) -> tuple[tuple[str, str, ServedModel], ...]:
        """``(node id, model id, served model)`` of the plan's model_inference nodes, cached per
        plan."""
        cached = self._plans.get(plan.workflow_id)
        if cached is not None and cached[0] is plan:
            return cached[1]
        from agent.nodes.inference import ModelInference

        nodes = tuple(
            (node.id, node.impl.served.record.model_id, node.impl.served)
            for node in plan.nodes
            if isinstance(node.impl, ModelInference)
        )
        with self._lock:
            self._plans[plan.workflow_id] = (plan, nodes)
        return nodes

    def serve(self, host: str = "127.0.0.1", port: int = 9464) -> int:
        """Serve ``/metrics`` on ``host:port`` (0: a free port) in a daemon thread; returns the
        port. ``OSError`` when the address is taken."""
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
        self._server, self._thread = server, thread
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class _WorkflowChildren:
    """One workflow's labelled metric children, looked up once instead of on every run."""

    __slots__ = ("nodes", "runs", "seconds", "workflow")

    def __init__(self, workflow: str) -> None:
        self.workflow = workflow
        self.runs: dict[str, Any] = {}
        self.seconds: Any = None
        self.nodes: dict[str, Any] = {}


class _ScrapeCollector(Collector):
    """Reads the agent's queues, models, outbox and the device at scrape time."""

    def __init__(self, sources: MetricSources | None, probe: SystemProbe | None) -> None:
        self._sources = sources
        self._probe = probe
        self._probe_lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        if self._sources is not None:
            yield from self._queues(self._sources)
            yield from self._models(self._sources)
            yield from self._outbox(self._sources)
        if self._probe is not None:
            yield from self._system(self._probe)

    @staticmethod
    def _queues(sources: MetricSources) -> Iterator[Any]:
        depth = GaugeMetricFamily(
            "edgefleet_queue_depth_frames", "Frames waiting in a workflow's queue.", labels=["workflow"]
        )
        capacity = GaugeMetricFamily(
            "edgefleet_queue_capacity_frames", "The bound of a workflow's frame queue.", labels=["workflow"]
        )
        dropped = CounterMetricFamily(
            "edgefleet_frames_dropped",
            "Frames a workflow's queue dropped (drop-oldest or full).",
            labels=["workflow"],
        )
        for queue in sources.queues():
            depth.add_metric([queue.workflow], queue.depth)
            capacity.add_metric([queue.workflow], queue.capacity)
            dropped.add_metric([queue.workflow], queue.dropped)
        yield from (depth, capacity, dropped)

    @staticmethod
    def _models(sources: MetricSources) -> Iterator[Any]:
        batches = CounterMetricFamily(
            "edgefleet_inference_batches",
            "Batches a model ran (dynamic batching).",
            labels=["model", "version", "backend"],
        )
        samples = CounterMetricFamily(
            "edgefleet_inference_samples",
            "Samples a model ran; samples / batches is the mean batch size.",
            labels=["model", "version", "backend"],
        )
        builds = GaugeMetricFamily(
            "edgefleet_engine_builds",
            "Engine builds of a model by backend and state.",
            labels=["model", "backend", "state"],
        )
        for status in sources.served_models():
            labels = [str(status["model_id"]), str(status["version"]), str(status["backend"])]
            batches.add_metric(labels, status.get("batches", 0))
            samples.add_metric(labels, status.get("samples", 0))
            counts: dict[tuple[str, str], int] = {}
            for build in status.get("builds", ()):
                key = (str(build["backend"]), str(build["state"]))
                counts[key] = counts.get(key, 0) + 1
            for (backend, state), count in sorted(counts.items()):
                builds.add_metric([str(status["model_id"]), backend, state], count)
        fallbacks = CounterMetricFamily(
            "edgefleet_backend_fallbacks",
            "Model loads that skipped this backend of the profile's order: it cannot run on this "
            "device or failed to load (the log says why).",
            labels=["backend"],
        )
        for backend, count in sorted(sources.backend_fallbacks().items()):
            fallbacks.add_metric([backend], count)
        yield from (batches, samples, builds, fallbacks)

    @staticmethod
    def _outbox(sources: MetricSources) -> Iterator[Any]:
        stats = sources.outbox_stats()
        if stats is None:
            return
        yield GaugeMetricFamily(
            "edgefleet_outbox_pending_records",
            "Records waiting in the outbox for the control plane's ack.",
            value=stats.pending_records,
        )
        yield GaugeMetricFamily(
            "edgefleet_outbox_pending_bytes", "Bytes waiting in the outbox.", value=stats.pending_bytes
        )
        yield CounterMetricFamily(
            "edgefleet_outbox_dropped_records",
            "Records the outbox lost (bound reached, oversize, storage fault).",
            value=stats.dropped_records,
        )
        if stats.oldest_pending_age_s is not None:
            yield GaugeMetricFamily(
                "edgefleet_outbox_oldest_pending_age_seconds",
                "Age of the oldest record not yet acked.",
                value=stats.oldest_pending_age_s,
            )

    def _system(self, probe: SystemProbe) -> Iterator[Any]:
        with self._probe_lock:  # the probe's CPU figure is "since the previous sample"
            system = probe.sample()
        yield GaugeMetricFamily(
            "edgefleet_system_cpu_ratio",
            "CPU in use since the previous scrape (0–1).",
            value=system.cpu_percent / 100,
        )
        yield GaugeMetricFamily(
            "edgefleet_system_memory_used_bytes",
            "Memory in use (total − available).",
            value=system.memory_used_bytes,
        )
        yield GaugeMetricFamily(
            "edgefleet_system_memory_bytes", "Memory installed.", value=system.memory_total_bytes
        )
        yield GaugeMetricFamily(
            "edgefleet_system_disk_used_bytes",
            "Used bytes on the disk holding the data directory.",
            value=system.disk_used_bytes,
        )
        yield GaugeMetricFamily(
            "edgefleet_system_disk_bytes",
            "Size of the disk holding the data directory.",
            value=system.disk_total_bytes,
        )
        temperatures = GaugeMetricFamily(
            "edgefleet_system_temperature_celsius", "Temperature sensors.", labels=["sensor"]
        )
        for sensor, value in sorted(system.temperatures_c.items()):
            temperatures.add_metric([sensor], value)
        yield temperatures
        utilisation = GaugeMetricFamily(
            "edgefleet_gpu_utilization_ratio", "GPU busy time (0–1).", labels=["gpu"]
        )
        used = GaugeMetricFamily("edgefleet_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"])
        total = GaugeMetricFamily("edgefleet_gpu_memory_bytes", "GPU memory installed.", labels=["gpu"])
        temperature = GaugeMetricFamily(
            "edgefleet_gpu_temperature_celsius", "GPU temperature.", labels=["gpu"]
        )
        for gpu in system.gpus:
            utilisation.add_metric([gpu.name], gpu.utilization_percent / 100)
            used.add_metric([gpu.name], gpu.memory_used_bytes)
            total.add_metric([gpu.name], gpu.memory_total_bytes)
            temperature.add_metric([gpu.name], gpu.temperature_c)
        yield from (utilisation, used, total, temperature)
