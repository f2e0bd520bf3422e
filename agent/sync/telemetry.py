"""The agent's telemetry: what its workflows did, interval by interval, and the parts they rejected.

:class:`TelemetryCollector` is fed by the workflow service after every run
(:meth:`TelemetryCollector.record_run`) and produces, every ``interval_s`` (the sync settings'
``telemetry_interval_s``, 10 s by default), one ``TelemetryRecord`` (``protos/sync.proto``) for
the outbox:

- one ``WorkflowTelemetry`` per workflow **and lineage** (model sha256, workflow version,
  threshold set and version, rollout id, cohort): a plan swap or a new threshold version in the
  middle of an interval splits the workflow's counts in two, so a canary's figures never mix
  with the baseline's;
- run counts by outcome (:func:`run_outcome`): ``passed`` (accepted), ``failed`` (rejected),
  ``errors`` (the run failed) and ``skipped`` (the run reached no accept/reject decision);
- fixed-bound histograms in milliseconds (:data:`LATENCY_BOUNDS_MS`, 0.5 ms … 10 s, about 1.5×
  apart) of the run latency, of each node's latency and of each model's inference latency (the
  ``model_inference`` node's duration: waiting for a batch slot included), and a histogram of
  the dynamic batcher's batch sizes (:data:`BATCH_SIZE_BOUNDS`);
- frames the workflow's queue dropped;
- system metrics (:class:`SystemProbe`): CPU, memory, disk of the data directory, temperatures,
  the agent's RSS, GPUs through NVML or Jetson's ``tegrastats``; and ``outbox_dropped``.

A rejected part becomes an ``Event(kind="part_rejected")`` with the run's lineage, run id, the
deciding node's score, threshold and class as JSON, and a JPEG thumbnail when the device's
thumbnail budget (a token bucket in bytes per second) allows; otherwise the event goes without
its thumbnail and :attr:`CollectorStatus.thumbnails_skipped` counts it. At most
``max_events_per_interval`` events are made per interval: the excess is counted
(``events_suppressed``) and logged once per interval, never queued.

Threads: :meth:`record_run` is called by the run workers and only updates counters under a lock
(tens of µs): decoding and encoding thumbnails, building messages and writing to the outbox happen
on the collector's own thread (:meth:`start`, :meth:`stop`).
"""

from __future__ import annotations

import bisect
import contextlib
import importlib
import json
import logging
import math
import re
import shutil
import subprocess
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import psutil

from agent.sync.outbox import OutboxStats, RecordKind
from agent.workflow.result import RunResult, json_default
from protos import sync_pb2

if TYPE_CHECKING:
    from agent.inference.runtime import ServedModel
    from agent.thresholds import ThresholdStore
    from agent.workflow import Plan

__all__ = [
    "BATCH_SIZE_BOUNDS",
    "LATENCY_BOUNDS_MS",
    "CollectorStatus",
    "Histogram",
    "Lineage",
    "Outcome",
    "SystemProbe",
    "TelemetryCollector",
    "TokenBucket",
    "make_thumbnail",
    "parse_tegrastats",
    "plan_lineage",
    "result_lineage",
    "run_outcome",
]

log = logging.getLogger(__name__)

LATENCY_BOUNDS_MS: Final[tuple[float, ...]] = (
    0.5, 0.75,
    1.0, 1.5, 2.0, 3.0, 5.0, 7.5,
    10.0, 15.0, 20.0, 30.0, 50.0, 75.0,
    100.0, 150.0, 200.0, 300.0, 500.0, 750.0,
    1000.0, 1500.0, 2000.0, 3000.0, 5000.0, 7500.0,
    10000.0,
)  # fmt: skip
"""Upper bounds (ms) of the latency buckets: 1, 1.5, 2, 3, 5, 7.5 per decade, 0.5 ms to 10 s. A
value lands in the first bucket whose bound is >= the value; the 28th bucket counts what is over
10 s. About 1.5× between bounds: a percentile read from them is within ~25 % of the truth."""

BATCH_SIZE_BOUNDS: Final[tuple[float, ...]] = (1, 2, 4, 8, 16, 32, 64, 128)
"""Upper bounds of the batch-size buckets (samples per model call)."""

Outcome = Literal["passed", "failed", "error", "skipped"]

DEFAULT_THUMBNAIL_BYTES_PER_S: Final = 20_000
DEFAULT_MAX_EVENTS_PER_INTERVAL: Final = 100
THUMBNAIL_WIDTH: Final = 160
THUMBNAIL_QUALITY: Final = 70
MAX_PENDING_IMAGES: Final = 4
"""Frames kept for thumbnails not encoded yet: a burst of rejects cannot hold many full frames."""
_TEGRASTATS_TIMEOUT_S: Final = 3.0


# ---- building blocks -----------------------------------------------------------------------------


class Histogram:
    """A fixed-bound histogram: ``counts[i]`` counts values <= ``bounds[i]`` (and above the bound
    before it); the last count is the overflow. Not thread-safe (the collector locks)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BOUNDS_MS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def add(self, value: float, n: int = 1) -> None:
        """Count ``value`` ``n`` times (NaN is ignored)."""
        if math.isnan(value) or n <= 0:
            return
        self.counts[bisect.bisect_left(self.bounds, value)] += n
        self.sum += value * n
        self.count += n

    def to_proto(self, out: sync_pb2.Histogram) -> None:
        out.bounds.extend(self.bounds)
        out.counts.extend(self.counts)
        out.sum = self.sum
        out.count = self.count


@dataclass(frozen=True, slots=True)
class Lineage:
    """What produced a result (``sync_pb2.Lineage``): hashable, so it keys the aggregates."""

    workflow_id: str
    workflow_version: int = 0
    model_sha256: str = ""
    threshold_set: str = ""
    threshold_version: int = 0
    rollout_id: str = ""
    cohort: str = ""
    bundle_sha256: str = ""
    """The rollout bundle the plan came from (not in ``sync_pb2.Lineage``: results lines carry it,
    and it keeps a bundle's counts apart from another's of the same rollout)."""

    def to_dict(self) -> dict[str, Any]:
        """Every field, for a results line."""
        return {
            "workflow_id": self.workflow_id,
            "workflow_version": self.workflow_version,
            "model_sha256": self.model_sha256,
            "threshold_set": self.threshold_set,
            "threshold_version": self.threshold_version,
            "rollout_id": self.rollout_id,
            "cohort": self.cohort,
            "bundle_sha256": self.bundle_sha256,
        }

    def to_proto(self, out: sync_pb2.Lineage | None = None) -> sync_pb2.Lineage:
        message = out if out is not None else sync_pb2.Lineage()
        message.workflow_id = self.workflow_id
        message.workflow_version = self.workflow_version
        message.model_sha256 = self.model_sha256
        message.threshold_set = self.threshold_set
        message.threshold_version = self.threshold_version
        message.rollout_id = self.rollout_id
        message.cohort = self.cohort
        return message


def plan_lineage(plan: Plan, thresholds: ThresholdStore | None = None) -> Lineage:
    """The lineage a compiled plan carries by itself: workflow id and version, the sha256 of its
    model (the first by model id, as the reported state names it) and its threshold set (the
    first by name) at its live version. Rollout id and cohort are the reconciler's to add."""
    from agent.nodes.inference import ModelInference
    from agent.nodes.threshold import Threshold

    models = sorted(
        (node.impl.served.record.model_id, node.impl.served.record.sha256)
        for node in plan.nodes
        if isinstance(node.impl, ModelInference)
    )
    sets = sorted(
        {
            node.impl.config.threshold_set
            for node in plan.nodes
            if isinstance(node.impl, Threshold) and node.impl.config.threshold_set
        }
    )
    threshold_set = sets[0] if sets else ""
    live = thresholds.get(threshold_set) if thresholds is not None and threshold_set else None
    return Lineage(
        workflow_id=plan.workflow_id,
        workflow_version=plan.version,
        model_sha256=models[0][1] if models else "",
        threshold_set=threshold_set,
        threshold_version=live.version if live is not None else 0,
    )


def result_lineage(lineage: Lineage, result: RunResult) -> Lineage:
    """``lineage`` as it produced ``result``: with the threshold set and version that decided it."""
    _, _, decided = run_outcome(result)
    return _with_threshold(lineage, decided) if decided is not None else lineage


def run_outcome(result: RunResult) -> tuple[Outcome, str | None, Mapping[str, Any] | None]:
    """How a run ended, with the node output that decided it (``None`` without a decision).

    ``error``: the run failed. ``failed``: a node output ``decision: reject`` (a run that rejects
    anywhere rejects the part). ``passed``: a node accepted and none rejected. ``skipped``: the
    run succeeded without an accept/reject decision (its gate was on a branch not taken, or the
    workflow has no gate)."""
    if not result.ok:
        return "error", None, None
    accepted: tuple[str, Mapping[str, Any]] | None = None
    for node_id, output in result.outputs.items():
        if not isinstance(output, dict):
            continue
        decision = output.get("decision")
        if decision == "reject":
            return "failed", node_id, output
        if decision == "accept" and accepted is None:
            accepted = (node_id, output)
    if accepted is not None:
        return "passed", accepted[0], accepted[1]
    return "skipped", None, None


class TokenBucket:
    """A token bucket of ``rate`` bytes per second holding at most ``capacity`` bytes (default:
    one second's worth). Thread-safe."""

    def __init__(
        self, rate: float, capacity: float | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else rate)
        self._clock = clock
        self._level = self.capacity
        self._at = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now

    def level(self) -> float:
        with self._lock:
            self._refill()
            return self._level

    def take(self, amount: float) -> bool:
        """Take ``amount`` if the bucket holds it; False (nothing taken) otherwise."""
        with self._lock:
            self._refill()
            if amount > self._level:
                return False
            self._level -= amount
            return True


def make_thumbnail(
    image: Any, width: int = THUMBNAIL_WIDTH, quality: int = THUMBNAIL_QUALITY
) -> bytes | None:
    """A JPEG of ``image`` (encoded bytes, or a decoded 8-bit BGR/gray array) at most ``width``
    pixels wide; ``None`` when it is not an image this can read."""
    import cv2
    import numpy as np

    if isinstance(image, bytes | bytearray | memoryview):
        decoded = cv2.imdecode(np.frombuffer(image, dtype=np.uint8), cv2.IMREAD_COLOR)
    elif isinstance(image, np.ndarray):
        decoded = image
    else:
        return None
    if (
        decoded is None
        or decoded.dtype != np.uint8
        or decoded.ndim not in (2, 3)
        or (decoded.ndim == 3 and decoded.shape[2] not in (1, 3))
        or decoded.shape[0] == 0
        or decoded.shape[1] == 0
    ):
        return None
    height, current = decoded.shape[:2]
    if current > width:
        size = (width, max(1, round(height * width / current)))
        decoded = cv2.resize(decoded, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", decoded, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return encoded.tobytes() if ok else None


# ---- system metrics ------------------------------------------------------------------------------

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%")
_GPU_TEMP = re.compile(r"\bGPU@(-?\d+(?:\.\d+)?)C", re.IGNORECASE)
_MB: Final = 1024 * 1024


def parse_tegrastats(line: str, name: str = "jetson") -> sync_pb2.GpuMetrics | None:
    """The GPU figures of one ``tegrastats`` line (``None`` when it has none): utilization from
    ``GR3D_FREQ``, memory from ``RAM`` (a Jetson's GPU shares it), temperature from ``GPU@…C``
    (a reading of -256 °C means the sensor is off and is left out)."""
    gr3d = _GR3D.search(line)
    ram = _RAM.search(line)
    if gr3d is None and ram is None:
        return None
    gpu = sync_pb2.GpuMetrics(name=name)
    if gr3d is not None:
        gpu.utilization_percent = float(gr3d.group(1))
    if ram is not None:
        gpu.memory_used_bytes = int(ram.group(1)) * _MB
        gpu.memory_total_bytes = int(ram.group(2)) * _MB
    temperature = _GPU_TEMP.search(line)
    if temperature is not None and float(temperature.group(1)) > -200:
        gpu.temperature_c = float(temperature.group(1))
    return gpu


def _tegrastats_line(path: str, timeout: float = _TEGRASTATS_TIMEOUT_S) -> str | None:
    """The first line ``tegrastats`` prints (it prints one per interval until killed)."""
    with subprocess.Popen(
        [path, "--interval", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
        finally:
            timer.cancel()
            process.kill()
            process.wait()
    return line.strip() or None


class _Nvml:
    """NVIDIA GPUs through NVML (``pynvml``, from the ``nvidia-ml-py`` package)."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        nvml.nvmlInit()
        self.count = int(nvml.nvmlDeviceGetCount())

    @classmethod
    def open(cls) -> _Nvml | None:
        try:
            module = importlib.import_module("pynvml")
        except ImportError:
            return None
        try:
            return cls(module)
        except Exception as exc:  # noqa: BLE001 - pynvml's NVMLError: no driver, no GPU
            log.info("telemetry: no NVIDIA GPU metrics (%s)", exc)
            return None

    def sample(self) -> list[sync_pb2.GpuMetrics]:
        nvml = self._nvml
        gpus = []
        for index in range(self.count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                sync_pb2.GpuMetrics(
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    utilization_percent=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                    memory_used_bytes=int(memory.used),
                    memory_total_bytes=int(memory.total),
                    temperature_c=float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
                )
            )
        return gpus

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception as exc:  # noqa: BLE001 - NVMLError at shutdown: nothing to do
            log.debug("telemetry: nvmlShutdown failed: %s", exc)


def _jetson_name() -> str:
    try:
        model = Path("/proc/device-tree/model").read_text(errors="replace").strip("\0 \n")
    except OSError:
        return "jetson"
    return model or "jetson"


class SystemProbe:
    """Samples the device: CPU (system-wide, since the previous sample), memory in use (total
    minus available), the disk holding ``data_dir``, temperatures (``psutil.sensors_temperatures``
    where it exists, keyed ``chip/label``), the agent's RSS, and GPUs: NVML when ``pynvml`` is
    importable and finds a driver, else ``tegrastats`` when it is on the ``PATH`` (one line per
    sample), else none. A part that fails is left out; :meth:`sample` never raises."""

    def __init__(self, data_dir: Path | None = None, *, gpus: bool = True) -> None:
        self.data_dir = data_dir
        self._process = psutil.Process()
        self._cpu = psutil.cpu_times()
        self._failed: set[str] = set()
        self._nvml = _Nvml.open() if gpus else None
        self._tegrastats = shutil.which("tegrastats") if gpus and self._nvml is None else None
        self._jetson = _jetson_name() if self._tegrastats else ""

    def _cpu_percent(self) -> float:
        now = psutil.cpu_times()
        before, self._cpu = self._cpu, now
        total = sum(now) - sum(before)
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (before.idle + getattr(before, "iowait", 0.0))
        if total <= 0:
            return 0.0
        return round(max(0.0, min(100.0, 100.0 * (total - idle) / total)), 2)

    def _part(self, name: str, fill: Callable[[], None]) -> None:
        try:
            fill()
        except Exception as exc:  # noqa: BLE001 - a metric that fails is left out, never fatal
            if name not in self._failed:  # once per part, not once per interval
                self._failed.add(name)
                log.warning("telemetry: cannot read %s: %s", name, exc)

    def sample(self, out: sync_pb2.SystemMetrics | None = None) -> sync_pb2.SystemMetrics:
        metrics = out if out is not None else sync_pb2.SystemMetrics()

        def cpu() -> None:
            metrics.cpu_percent = self._cpu_percent()

        def memory() -> None:
            vm = psutil.virtual_memory()
            metrics.memory_total_bytes = vm.total
            metrics.memory_used_bytes = vm.total - vm.available

        def disk() -> None:
            if self.data_dir is not None:
                path = self.data_dir
                while not path.exists() and path != path.parent:
                    path = path.parent
                usage = psutil.disk_usage(str(path))
                metrics.disk_used_bytes = usage.used
                metrics.disk_total_bytes = usage.total

        def temperatures() -> None:
            read = getattr(psutil, "sensors_temperatures", None)
            if read is None:
                return
            for chip, sensors in read().items():
                for index, sensor in enumerate(sensors):
                    key = f"{chip}/{sensor.label or index}"
                    if math.isfinite(sensor.current):
                        metrics.temperatures_c[key] = float(sensor.current)

        def rss() -> None:
            metrics.process_rss_bytes = self._process.memory_info().rss

        def gpus() -> None:
            if self._nvml is not None:
                metrics.gpus.extend(self._nvml.sample())
            elif self._tegrastats is not None:
                line = _tegrastats_line(self._tegrastats)
                gpu = parse_tegrastats(line, self._jetson) if line else None
                if gpu is not None:
                    metrics.gpus.append(gpu)

        for name, fill in (
            ("cpu", cpu),
            ("memory", memory),
            ("disk", disk),
            ("temperatures", temperatures),
            ("process rss", rss),
            ("gpus", gpus),
        ):
            self._part(name, fill)
        return metrics

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.close()
            self._nvml = None


# ---- the collector -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Window:
    """One workflow and lineage within the current interval."""

    lineage: Lineage
    runs: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    dropped_frames: int = 0
    latency: Histogram = field(default_factory=Histogram)
    nodes: dict[str, Histogram] = field(default_factory=dict)
    models: dict[str, Histogram] = field(default_factory=dict)
    batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BOUNDS))
    shadow_compared: int = 0
    shadow_agreed: int = 0
    shadow_scored: int = 0
    shadow_score_drift_sum: float = 0.0

    def to_proto(self, out: sync_pb2.WorkflowTelemetry) -> None:
        out.workflow_id = self.lineage.workflow_id
        self.lineage.to_proto(out.lineage)
        out.runs = self.runs
        out.passed = self.passed
        out.failed = self.failed
        out.errors = self.errors
        out.skipped = self.skipped
        out.dropped_frames = self.dropped_frames
        self.latency.to_proto(out.latency_ms)
        for node_id, histogram in sorted(self.nodes.items()):
            histogram.to_proto(out.node_latency_ms[node_id])
        for model, histogram in sorted(self.models.items()):
            histogram.to_proto(out.model_latency_ms[model])
        if self.batch_size.count:
            self.batch_size.to_proto(out.batch_size)
        out.shadow_compared = self.shadow_compared
        out.shadow_agreed = self.shadow_agreed
        out.shadow_scored = self.shadow_scored
        out.shadow_score_drift_sum = self.shadow_score_drift_sum


@dataclass(frozen=True, slots=True)
class _ModelNode:
    node_id: str
    model: str
    served: ServedModel


@dataclass(slots=True)
class _PendingEvent:
    at: float
    workflow_id: str
    run_id: str
    lineage: Lineage
    message: str
    attributes: dict[str, Any]
    image: Any = None
    kind: str = "part_rejected"
    severity: str = "warning"


@dataclass(frozen=True, slots=True)
class CollectorStatus:
    """The collector's counters since it was made."""

    intervals: int
    runs: int
    events_sent: int
    events_suppressed: int
    """``part_rejected`` events not made because the interval's cap was reached."""
    thumbnails_sent: int
    thumbnails_skipped: int
    """Events sent without their thumbnail: over the bandwidth budget, or the frame unreadable."""
    append_failures: int
    """Records the outbox did not store (full disk, …): they are lost."""
    record_errors: int
    """Runs that could not be counted (a bug: logged)."""


FrameDrops = Callable[[], Iterable[tuple[str, int, Lineage]]]
"""``(workflow id, frames its queue dropped so far, its current lineage)`` for each workflow."""
Sink = Callable[[RecordKind, bytes], int | None]
"""Stores one record (``Outbox.append``): its seq, or ``None`` when it was not stored."""


class TelemetryCollector:
    """Aggregates runs into one ``TelemetryRecord`` per interval and turns rejects into events;
    see the module docstring.

    ``sink`` receives each record (``"telemetry"`` or ``"event"``, the serialized message), from
    the collector's thread; without a sink, :meth:`close_interval` and :meth:`take_events` hand
    the messages to the caller (tests, tools). ``frame_drops`` reports the frame queues'
    cumulative drop counters; ``outbox_stats`` the outbox's (for ``outbox_dropped``).
    """

    def __init__(
        self,
        *,
        interval_s: float = 10.0,
        sink: Sink | None = None,
        data_dir: Path | None = None,
        outbox_stats: Callable[[], OutboxStats] | None = None,
        frame_drops: FrameDrops | None = None,
        thumbnail_bytes_per_s: float = DEFAULT_THUMBNAIL_BYTES_PER_S,
        thumbnail_width: int = THUMBNAIL_WIDTH,
        max_events_per_interval: int = DEFAULT_MAX_EVENTS_PER_INTERVAL,
        system: SystemProbe | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if max_events_per_interval < 0:
            raise ValueError("max_events_per_interval must be >= 0")
        self.interval_s = float(interval_s)
        self.sink = sink
        self.outbox_stats = outbox_stats
        self.frame_drops = frame_drops
        self.thumbnail_width = thumbnail_width
        self.max_events_per_interval = max_events_per_interval
        self.system = system if system is not None else SystemProbe(data_dir)
        self.thumbnails = TokenBucket(thumbnail_bytes_per_s, clock=monotonic)
        self._clock = clock
        self._monotonic = monotonic

        self._lock = threading.Lock()
        # guarded by _lock
        self._windows: dict[Lineage, _Window] = {}
        self._latest: dict[str, Lineage] = {}  # workflow id -> lineage of its latest run
        self._window_start = clock()
        self._events_in_interval = 0
        self._suppressed_in_interval = 0
        self._events: deque[_PendingEvent] = deque()
        self._pending_images = 0
        self._plans: dict[str, tuple[Plan, tuple[_ModelNode, ...]]] = {}
        self._runs = 0
        self._events_suppressed = 0
        self._record_errors = 0
        # the collector's thread (or the caller of close_interval / take_events)
        self._emit_lock = threading.Lock()
        self._batch_lock = threading.Lock()  # held briefly, never across I/O
        self._batch_seen: weakref.WeakKeyDictionary[Any, dict[int, int]] = weakref.WeakKeyDictionary()
        self._drops_seen: dict[str, int] = {}
        self._thumbnail_estimate = 0
        self._intervals = 0
        self._events_sent = 0
        self._thumbnails_sent = 0
        self._thumbnails_skipped = 0
        self._append_failures = 0

        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- feeding (run workers) -----------------------------------------------------------------

    def record_run(
        self,
        result: RunResult,
        *,
        lineage: Lineage,
        plan: Plan | None = None,
        seconds: float | None = None,
        image: Any = None,
        frame: Mapping[str, Any] | None = None,
        events: bool = True,
    ) -> Outcome:
        """Count one finished run of ``plan`` (which produced ``result``) under ``lineage``.

        ``seconds`` is the run's latency as the caller measured it (default: the executor's
        ``duration_s``); ``image`` the frame it ran on (for a reject's thumbnail) and ``frame``
        the frame's facts (source, seq, timestamp), added to a reject's attributes. Without
        ``events`` (a shadow run) a reject is counted but makes no ``part_rejected`` event. Cheap
        and never blocks on I/O; returns the outcome."""
        outcome, node_id, decided = run_outcome(result)
        if decided is not None:
            lineage = _with_threshold(lineage, decided)
        latency_ms = (result.duration_s if seconds is None else seconds) * 1000.0
        models = self._model_nodes(plan) if plan is not None else ()
        with self._lock:
            window = self._window(lineage)
            window.runs += 1
            if outcome == "passed":
                window.passed += 1
            elif outcome == "failed":
                window.failed += 1
            elif outcome == "error":
                window.errors += 1
            else:
                window.skipped += 1
            window.latency.add(latency_ms)
            for nid, run in result.nodes.items():
                if run.status in ("succeeded", "failed", "timed_out"):
                    histogram = window.nodes.get(nid)
                    if histogram is None:
                        histogram = window.nodes[nid] = Histogram()
                    histogram.add(run.duration_s * 1000.0)
            for model_node in models:
                model_run = result.nodes.get(model_node.node_id)
                if model_run is not None and model_run.status == "succeeded":
                    histogram = window.models.get(model_node.model)
                    if histogram is None:
                        histogram = window.models[model_node.model] = Histogram()
                    histogram.add(model_run.duration_s * 1000.0)
            self._runs += 1
            if outcome == "failed" and events:
                self._queue_reject(result, lineage, node_id, decided, image, frame)
        return outcome

    def record_comparison(self, lineage: Lineage, *, agreed: bool, drift: float | None) -> None:
        """Count a shadow run compared with the active run of the same frame: whether their
        decisions agreed, and ``|candidate score - active score|`` when both had a score."""
        with self._lock:
            window = self._window(lineage)
            window.shadow_compared += 1
            window.shadow_agreed += agreed
            if drift is not None and math.isfinite(drift):
                window.shadow_scored += 1
                window.shadow_score_drift_sum += drift

    def count_dropped(self, lineage: Lineage, frames: int = 1) -> None:
        """Count frames dropped before ``lineage``'s plan could run them (a shadow behind)."""
        with self._lock:
            window = self._window(lineage)
            window.dropped_frames += frames

    def add_event(
        self,
        kind: str,
        *,
        severity: str,
        lineage: Lineage,
        message: str,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue an event other than a reject (``rollback``, …) for the outbox; never capped."""
        with self._lock:
            self._events.append(
                _PendingEvent(
                    at=self._clock(),
                    workflow_id=lineage.workflow_id,
                    run_id="",
                    lineage=lineage,
                    message=message,
                    attributes=dict(attributes or {}),
                    kind=kind,
                    severity=severity,
                )
            )
        self._wake.set()

    def note_record_error(self) -> None:
        """Count a run the caller could not hand over (its :meth:`record_run` raised)."""
        with self._lock:
            self._record_errors += 1

    def _window(self, lineage: Lineage) -> _Window:
        window = self._windows.get(lineage)
        if window is None:
            window = self._windows[lineage] = _Window(lineage)
        self._latest[lineage.workflow_id] = lineage
        return window

    def _model_nodes(self, plan: Plan) -> tuple[_ModelNode, ...]:
        cached = self._plans.get(plan.workflow_id)
        if cached is not None and cached[0] is plan:
            return cached[1]
        from agent.nodes.inference import ModelInference

        nodes = tuple(
            _ModelNode(node.id, node.impl.served.record.model_id, node.impl.served)
            for node in plan.nodes
            if isinstance(node.impl, ModelInference)
        )
        with self._batch_lock:  # count the batches of a model not seen before from now on
            for node in nodes:
                batcher = node.served.batcher
                with contextlib.suppress(TypeError):  # (a batcher without weak references: not counted)
                    if batcher not in self._batch_seen:
                        self._batch_seen[batcher] = _batch_sizes(batcher)
        with self._lock:
            self._plans[plan.workflow_id] = (plan, nodes)
        return nodes

    def _queue_reject(
        self,
        result: RunResult,
        lineage: Lineage,
        node_id: str | None,
        decided: Mapping[str, Any] | None,
        image: Any,
        frame: Mapping[str, Any] | None,
    ) -> None:
        """(under _lock) Queue a ``part_rejected`` event, within the interval's cap."""
        if self._events_in_interval >= self.max_events_per_interval:
            self._suppressed_in_interval += 1
            self._events_suppressed += 1
            return
        self._events_in_interval += 1
        attributes: dict[str, Any] = {"node": node_id}
        if decided is not None:
            for key in ("score", "threshold", "class", "threshold_set"):
                if key in decided:
                    attributes[key] = decided[key]
        if frame is not None:
            attributes["frame"] = dict(frame)
        score, threshold = attributes.get("score"), attributes.get("threshold")
        message = f"part rejected by '{node_id}'"
        if isinstance(score, int | float) and isinstance(threshold, int | float):
            message += f": score {score:.4g}, threshold {threshold:.4g}"
        keep = (
            image is not None
            and self.thumbnails.rate > 0
            and self._pending_images < MAX_PENDING_IMAGES
            and self.thumbnails.level() >= max(1, self._thumbnail_estimate)
        )
        if keep:
            self._pending_images += 1
        self._events.append(
            _PendingEvent(
                at=self._clock(),
                workflow_id=result.workflow_id,
                run_id=result.run_id,
                lineage=lineage,
                message=message,
                attributes=attributes,
                image=image if keep else None,
            )
        )
        self._wake.set()

    # ---- producing (the collector's thread) ----------------------------------------------------

    def close_interval(self) -> sync_pb2.TelemetryRecord:
        """End the current interval: its ``TelemetryRecord`` (a workflow per lineage that ran or
        dropped frames in it, system metrics, ``outbox_dropped``); a new interval starts now."""
        with self._emit_lock:
            end = self._clock()
            with self._lock:
                windows, self._windows = self._windows, {}
                start, self._window_start = self._window_start, end
                latest = dict(self._latest)
                served = {wid: nodes for wid, (_, nodes) in self._plans.items()}
                suppressed, self._suppressed_in_interval = self._suppressed_in_interval, 0
                self._events_in_interval = 0
            if suppressed:
                log.warning(
                    "telemetry: %d part_rejected events not sent in the last %.0f s "
                    "(at most %d per interval)",
                    suppressed,
                    self.interval_s,
                    self.max_events_per_interval,
                )
            self._add_frame_drops(windows, latest)
            self._add_batch_sizes(windows, latest, served)
            record = sync_pb2.TelemetryRecord()
            record.window_start.FromNanoseconds(round(start * 1e9))
            record.window_end.FromNanoseconds(round(end * 1e9))
            for lineage in sorted(windows, key=_lineage_order):
                windows[lineage].to_proto(record.workflows.add())
            self.system.sample(record.system)
            if self.outbox_stats is not None:
                try:
                    record.outbox_dropped = self.outbox_stats().dropped_records
                except Exception as exc:  # noqa: BLE001 - the record goes without the counter
                    log.warning("telemetry: cannot read the outbox's counters: %s", exc)
            self._intervals += 1
            return record

    def _add_frame_drops(self, windows: dict[Lineage, _Window], latest: dict[str, Lineage]) -> None:
        if self.frame_drops is None:
            return
        try:
            drops = list(self.frame_drops())
        except Exception as exc:  # noqa: BLE001 - the record goes without the drops
            log.warning("telemetry: cannot read the frame queues' counters: %s", exc)
            return
        for workflow_id, total, lineage in drops:
            before = self._drops_seen.get(workflow_id, 0)
            self._drops_seen[workflow_id] = total
            delta = total - before if total >= before else total  # a new queue starts from 0
            if delta > 0:
                key = latest.get(workflow_id, lineage)
                window = windows.get(key)
                if window is None:
                    window = windows[key] = _Window(key)
                window.dropped_frames += delta

    def _add_batch_sizes(
        self,
        windows: dict[Lineage, _Window],
        latest: dict[str, Lineage],
        served: dict[str, tuple[_ModelNode, ...]],
    ) -> None:
        """The batches each workflow's models ran since the last interval (a model shared by
        several workflows counts under the first, by id, that ran in the interval)."""
        for workflow_id in sorted(served):
            lineage = latest.get(workflow_id)
            window = windows.get(lineage) if lineage is not None else None
            if window is None:
                continue
            for node in served[workflow_id]:
                batcher = node.served.batcher
                now = _batch_sizes(batcher)
                with self._batch_lock:
                    try:
                        before = self._batch_seen.get(batcher, {})
                        self._batch_seen[batcher] = now
                    except TypeError:
                        continue
                for size, count in now.items():
                    window.batch_size.add(float(size), count - before.get(size, 0))

    def take_events(self) -> list[sync_pb2.Event]:
        """The ``part_rejected`` events queued so far, thumbnails encoded within the budget."""
        with self._emit_lock:
            with self._lock:
                pending, self._events = list(self._events), deque()
            events = []
            for item in pending:
                event = sync_pb2.Event(
                    kind=item.kind,
                    severity=item.severity,
                    workflow_id=item.workflow_id,
                    run_id=item.run_id,
                    message=item.message,
                    attributes_json=json.dumps(item.attributes, default=json_default, sort_keys=True),
                )
                event.at.FromNanoseconds(round(item.at * 1e9))
                item.lineage.to_proto(event.lineage)
                if item.image is not None:
                    with self._lock:
                        self._pending_images -= 1
                    thumbnail = self._thumbnail(item.image)
                    if thumbnail is not None:
                        event.thumbnail_jpeg = thumbnail
                        self._thumbnails_sent += 1
                    else:
                        self._thumbnails_skipped += 1
                elif self.thumbnails.rate > 0:
                    self._thumbnails_skipped += 1
                events.append(event)
            return events

    def _thumbnail(self, image: Any) -> bytes | None:
        try:
            thumbnail = make_thumbnail(image, self.thumbnail_width)
        except Exception as exc:  # noqa: BLE001 - the event goes without its thumbnail
            log.warning("telemetry: cannot make a thumbnail: %s", exc)
            return None
        if thumbnail is None:
            return None
        self._thumbnail_estimate = len(thumbnail)
        return thumbnail if self.thumbnails.take(len(thumbnail)) else None

    def flush(self) -> None:
        """Send the queued events and the current (partial) interval to the sink now."""
        self._send_events()
        self._send_interval()

    def _send_events(self) -> None:
        events = self.take_events()
        if events and self.sink is not None:
            for event in events:
                self._store("event", event.SerializeToString())
            self._events_sent += len(events)

    def _send_interval(self) -> None:
        record = self.close_interval()
        if self.sink is not None:
            self._store("telemetry", record.SerializeToString())

    def _store(self, kind: RecordKind, payload: bytes) -> None:
        assert self.sink is not None
        try:
            seq = self.sink(kind, payload)
        except Exception:
            log.exception("telemetry: storing a %s record failed", kind)
            seq = None
        if seq is None:
            self._append_failures += 1

    # ---- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Run the collector's thread: events as they come, a telemetry record per interval."""
        if self._thread is not None:
            raise RuntimeError("the collector is already started")
        with self._lock:
            self._window_start = self._clock()
        self._thread = threading.Thread(target=self._run, name="edgefleet-telemetry", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due = self._monotonic() + self.interval_s
        while not self._stopping.is_set():
            self._wake.wait(max(0.0, due - self._monotonic()))
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._send_events()
                now = self._monotonic()
                if now >= due:
                    self._send_interval()
                    due = max(due + self.interval_s, now + self.interval_s / 2)
            except Exception:  # a bug must not end telemetry for good
                log.exception("telemetry: the collector failed; it carries on")

    def stop(self, *, flush: bool = True, timeout: float = 10.0) -> None:
        """Stop the thread; with ``flush``, send the queued events and the final partial
        interval to the sink. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if flush and self.sink is not None:
            try:
                self.flush()
            except Exception:
                log.exception("telemetry: the final flush failed")
        self.system.close()

    def status(self) -> CollectorStatus:
        with self._lock:
            runs, suppressed, errors = self._runs, self._events_suppressed, self._record_errors
        return CollectorStatus(
            intervals=self._intervals,
            runs=runs,
            events_sent=self._events_sent,
            events_suppressed=suppressed,
            thumbnails_sent=self._thumbnails_sent,
            thumbnails_skipped=self._thumbnails_skipped,
            append_failures=self._append_failures,
            record_errors=errors,
        )


def _with_threshold(lineage: Lineage, decided: Mapping[str, Any]) -> Lineage:
    """``lineage`` with the threshold set and version that decided the run (a threshold node's
    output names them), which can be newer than the plan's: thresholds change without a swap."""
    source = decided.get("threshold_set")
    if not isinstance(source, dict):
        return lineage
    name, version = source.get("name"), source.get("version")
    if not isinstance(name, str) or not isinstance(version, int):
        return lineage
    if name == lineage.threshold_set and version == lineage.threshold_version:
        return lineage
    return replace(lineage, threshold_set=name, threshold_version=version)


def _lineage_order(lineage: Lineage) -> tuple[str, int, str, str, int, str, str, str]:
    return (
        lineage.workflow_id,
        lineage.workflow_version,
        lineage.model_sha256,
        lineage.threshold_set,
        lineage.threshold_version,
        lineage.rollout_id,
        lineage.cohort,
        lineage.bundle_sha256,
    )


def _batch_sizes(batcher: Any) -> dict[int, int]:
    """A copy of a dynamic batcher's ``batch_sizes`` counters (written by its own thread)."""
    sizes = getattr(batcher, "batch_sizes", None)
    if not isinstance(sizes, dict):
        return {}
    for _ in range(3):
        try:
            return {int(size): int(count) for size, count in list(sizes.items())}
        except RuntimeError:  # resized while being copied: try again
            continue
    return {}
