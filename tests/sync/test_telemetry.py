"""The agent's telemetry collector: outcomes, histograms, lineage, intervals, events, system metrics."""

from __future__ import annotations

import itertools
import json
import os
import stat
import sys
import threading
import types
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pytest

from agent.nodes.inference import ModelInference
from agent.nodes.threshold import Threshold
from agent.sync.outbox import OutboxStats
from agent.sync.telemetry import (
    BATCH_SIZE_BOUNDS,
    LATENCY_BOUNDS_MS,
    Histogram,
    Lineage,
    SystemProbe,
    TelemetryCollector,
    TokenBucket,
    make_thumbnail,
    parse_tegrastats,
    plan_lineage,
    run_outcome,
)
from agent.thresholds import ThresholdStore
from agent.workflow import Plan
from agent.workflow.result import ErrorInfo, NodeRun, RunResult
from protos import sync_pb2

WF = "surface_inspection"
BASE = Lineage(WF, 1, "ab" * 32, "surface", 1)


class Clock:
    """A settable clock (wall and monotonic alike)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(
    decision: str | None = "accept",
    *,
    ok: bool = True,
    ms: float = 4.0,
    nodes: dict[str, float] | None = None,
    threshold_set: dict[str, Any] | None = None,
    run_id: str = "r1",
) -> RunResult:
    outputs: dict[str, Any] = {}
    if decision is not None:
        outputs["gate"] = {
            "decision": decision,
            "score": 0.9 if decision == "reject" else 0.1,
            "threshold": 0.5,
            "class": None,
            "threshold_set": threshold_set,
        }
    node_runs = {k: NodeRun("succeeded", v / 1000) for k, v in (nodes or {"infer": 2.0, "gate": 0.1}).items()}
    node_runs["skipped_branch"] = NodeRun("skipped")
    return RunResult(
        run_id=run_id,
        workflow_id=WF,
        workflow_version=1,
        status="succeeded" if ok else "failed",
        outputs=outputs,
        nodes=node_runs,
        branches={},
        error=None if ok else ErrorInfo("infer", "model_inference", "NodeError", "boom"),
        duration_s=ms / 1000,
    )


class NoSystem(SystemProbe):
    """System metrics without the GPU probes (fast, deterministic)."""

    def __init__(self) -> None:
        super().__init__(None, gpus=False)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def collector(clock: Clock) -> TelemetryCollector:
    return TelemetryCollector(interval_s=10, clock=clock, monotonic=clock, system=NoSystem())


def bucket_of(histogram: sync_pb2.Histogram, value: float) -> int:
    for index, bound in enumerate(histogram.bounds):
        if value <= bound:
            return index
    return len(histogram.bounds)


def test_histogram_buckets_by_upper_bound_with_overflow() -> None:
    histogram = Histogram((1.0, 2.0))
    for value in (0.2, 1.0, 1.5, 2.0, 3.0, float("nan")):
        histogram.add(value)
    assert histogram.counts == [2, 2, 1]
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(7.7)
    out = sync_pb2.Histogram()
    histogram.to_proto(out)
    assert list(out.bounds) == [1.0, 2.0]
    assert len(out.counts) == len(out.bounds) + 1
    assert LATENCY_BOUNDS_MS[0] == 0.5
    assert LATENCY_BOUNDS_MS[-1] == 10_000
    assert list(LATENCY_BOUNDS_MS) == sorted(LATENCY_BOUNDS_MS)
    assert all(1.3 <= b / a <= 1.7 for a, b in itertools.pairwise(LATENCY_BOUNDS_MS))


def test_outcomes() -> None:
    assert run_outcome(run("accept"))[0] == "passed"
    outcome, node, output = run_outcome(run("reject"))
    assert (outcome, node) == ("failed", "gate")
    assert output is not None
    assert output["score"] == 0.9
    assert run_outcome(run(None))[0] == "skipped"
    assert run_outcome(run("reject", ok=False))[0] == "error"


def test_counts_per_outcome_and_latency_histograms(collector: TelemetryCollector) -> None:
    for decision, ok, ms in [
        ("accept", True, 3.0),
        ("accept", True, 4.0),
        ("reject", True, 12.0),
        (None, True, 0.3),
        ("accept", False, 20_000.0),
    ]:
        collector.record_run(run(decision, ok=ok, ms=ms), lineage=BASE)
    collector.record_run(run("accept"), lineage=BASE, seconds=0.006)  # the caller's latency wins

    record = collector.close_interval()
    (workflow,) = record.workflows
    assert workflow.workflow_id == WF
    assert (workflow.runs, workflow.passed, workflow.failed, workflow.skipped, workflow.errors) == (
        6,
        3,
        1,
        1,
        1,
    )
    latency = workflow.latency_ms
    assert latency.count == 6
    assert latency.sum == pytest.approx(3 + 4 + 12 + 0.3 + 20_000 + 6)
    assert latency.counts[bucket_of(latency, 3.0)] == 1  # 3 ms: the "<= 3" bucket
    assert latency.counts[bucket_of(latency, 0.3)] == 1
    assert latency.counts[-1] == 1  # 20 s: overflow
    assert sum(latency.counts) == 6
    assert set(workflow.node_latency_ms) == {"infer", "gate"}  # skipped nodes have no latency
    assert workflow.node_latency_ms["infer"].count == 6
    assert workflow.node_latency_ms["infer"].sum == pytest.approx(12.0)
    assert not workflow.HasField("batch_size")  # no model batches seen


def test_one_workflow_telemetry_per_lineage_and_the_threshold_that_decided(
    collector: TelemetryCollector,
) -> None:
    canary = Lineage(WF, 2, "cd" * 32, "surface", 1, rollout_id="r-7", cohort="canary")
    collector.record_run(run("accept"), lineage=BASE)
    collector.record_run(run("reject"), lineage=canary)
    collector.record_run(run("accept"), lineage=canary)
    # the gate read a newer threshold version than the plan's lineage names: the run says which
    newer = run("reject", threshold_set={"name": "surface", "version": 2})
    collector.record_run(newer, lineage=BASE)

    record = collector.close_interval()
    by_lineage = {
        (w.lineage.workflow_version, w.lineage.cohort, w.lineage.threshold_version): w
        for w in record.workflows
    }
    assert set(by_lineage) == {(1, "", 1), (2, "canary", 1), (1, "", 2)}
    assert (by_lineage[2, "canary", 1].runs, by_lineage[2, "canary", 1].failed) == (2, 1)
    assert by_lineage[2, "canary", 1].lineage.rollout_id == "r-7"
    assert by_lineage[2, "canary", 1].lineage.model_sha256 == "cd" * 32
    assert by_lineage[2, "canary", 1].lineage.workflow_id == WF
    assert (by_lineage[1, "", 1].runs, by_lineage[1, "", 2].runs) == (1, 1)


def test_intervals_roll_over(collector: TelemetryCollector, clock: Clock) -> None:
    start = clock.now
    collector.record_run(run("accept"), lineage=BASE)
    clock.now += 10
    first = collector.close_interval()
    collector.record_run(run("reject"), lineage=BASE)
    collector.record_run(run("reject"), lineage=BASE)
    clock.now += 10
    second = collector.close_interval()
    clock.now += 10
    third = collector.close_interval()
    assert first.window_start.ToNanoseconds() == round(start * 1e9)
    assert first.window_end == second.window_start
    assert second.window_end.ToNanoseconds() == round((start + 20) * 1e9)
    assert [w.runs for w in first.workflows] == [1]
    assert [(w.runs, w.failed) for w in second.workflows] == [(2, 2)]
    assert list(third.workflows) == []  # nothing ran: system metrics only
    assert third.HasField("system")
    assert collector.status().intervals == 3


class FakeBatcher:
    def __init__(self, batch_sizes: dict[int, int]) -> None:
        self.batch_sizes = batch_sizes


def test_models_batches_and_lineage_from_the_plan(clock: Clock) -> None:
    batcher = FakeBatcher({1: 5, 4: 2})  # batches before the collector saw the model
    served = types.SimpleNamespace(
        record=types.SimpleNamespace(model_id="surface_inspection", sha256="ee" * 32), batcher=batcher
    )
    infer = ModelInference.__new__(ModelInference)
    infer.served = cast(Any, served)
    gate = Threshold.__new__(Threshold)
    gate.config = cast(Any, types.SimpleNamespace(threshold_set="surface"))
    plan = cast(
        Plan,
        types.SimpleNamespace(
            workflow_id=WF,
            version=3,
            nodes=(
                types.SimpleNamespace(id="infer", type="model_inference", impl=infer),
                types.SimpleNamespace(id="gate", type="threshold", impl=gate),
            ),
        ),
    )
    thresholds = ThresholdStore()
    thresholds.put("surface", {"default": 0.5}, 4)
    assert plan_lineage(plan, thresholds) == Lineage(WF, 3, "ee" * 32, "surface", 4)

    collector = TelemetryCollector(interval_s=10, clock=clock, monotonic=clock, system=NoSystem())
    lineage = plan_lineage(plan, thresholds)
    collector.record_run(run("accept", nodes={"infer": 7.0, "gate": 0.1}), lineage=lineage, plan=plan)
    batcher.batch_sizes[4] += 3  # the batcher ran three more batches of 4 and one of 2
    batcher.batch_sizes[2] = 1
    collector.record_run(run("accept", nodes={"infer": 9.0, "gate": 0.1}), lineage=lineage, plan=plan)
    (workflow,) = collector.close_interval().workflows
    model = workflow.model_latency_ms["surface_inspection"]
    assert (model.count, model.sum) == (2, pytest.approx(16.0))
    assert list(workflow.batch_size.bounds) == list(BATCH_SIZE_BOUNDS)
    assert workflow.batch_size.count == 4  # only what ran since the model was first seen
    assert workflow.batch_size.counts[bucket_of(workflow.batch_size, 4)] == 3
    assert workflow.batch_size.counts[bucket_of(workflow.batch_size, 2)] == 1


def test_dropped_frames_per_interval(clock: Clock) -> None:
    dropped = {"count": 0}
    collector = TelemetryCollector(
        interval_s=10,
        clock=clock,
        monotonic=clock,
        system=NoSystem(),
        frame_drops=lambda: [(WF, dropped["count"], BASE)],
    )
    dropped["count"] = 7
    (workflow,) = collector.close_interval().workflows  # no run, but frames were dropped
    assert (workflow.runs, workflow.dropped_frames) == (0, 7)
    dropped["count"] = 10
    collector.record_run(run("accept"), lineage=BASE)
    (workflow,) = collector.close_interval().workflows
    assert (workflow.runs, workflow.dropped_frames) == (1, 3)
    dropped["count"] = 2  # a new queue (the workflow was restarted) counts from 0 again
    (workflow,) = collector.close_interval().workflows
    assert workflow.dropped_frames == 2


def gradient(width: int = 640, height: int = 480) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    return np.ascontiguousarray(np.broadcast_to(x[None, :, None], (height, width, 3)))


def test_thumbnails_are_small_jpegs() -> None:
    thumbnail = make_thumbnail(gradient())
    assert thumbnail is not None
    decoded = cv2.imdecode(np.frombuffer(thumbnail, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (120, 160, 3)
    ok, png = cv2.imencode(".png", gradient(1280, 720))
    assert ok
    from_bytes = make_thumbnail(png.tobytes())
    assert from_bytes is not None
    assert cv2.imdecode(np.frombuffer(from_bytes, np.uint8), cv2.IMREAD_COLOR).shape == (90, 160, 3)
    assert make_thumbnail(b"not an image") is None
    assert make_thumbnail(np.zeros((4, 4), np.float32)) is None  # not 8-bit pixels
    assert make_thumbnail({"not": "an image"}) is None


def test_token_bucket(clock: Clock) -> None:
    bucket = TokenBucket(1000, clock=clock)
    assert bucket.take(600)
    assert not bucket.take(600)  # 400 left: nothing taken
    assert bucket.level() == pytest.approx(400)
    clock.now += 0.3
    assert bucket.take(600)
    clock.now += 100
    assert bucket.level() == pytest.approx(1000)  # capped at one second's worth


def test_rejects_become_events_with_thumbnails_within_the_budget(clock: Clock) -> None:
    size = len(make_thumbnail(gradient()) or b"")
    assert 200 < size < 5000
    collector = TelemetryCollector(
        interval_s=10,
        clock=clock,
        monotonic=clock,
        system=NoSystem(),
        thumbnail_bytes_per_s=size * 1.5,  # one thumbnail now, then one per ~0.7 s
    )
    lineage = Lineage(WF, 2, "cd" * 32, "surface", 1, rollout_id="r-7", cohort="canary")
    frame = {"source": "cam0", "seq": 41, "timestamp": 1.5}
    for index in range(3):
        collector.record_run(
            run("reject", run_id=f"run-{index}"), lineage=lineage, image=gradient(), frame=frame
        )
    collector.record_run(run("accept"), lineage=lineage, image=gradient())  # no event
    first = collector.take_events()
    assert [e.run_id for e in first] == ["run-0", "run-1", "run-2"]
    assert [bool(e.thumbnail_jpeg) for e in first] == [True, False, False]
    event = first[0]
    assert (event.kind, event.severity, event.workflow_id) == ("part_rejected", "warning", WF)
    assert event.lineage == lineage.to_proto()
    attributes = json.loads(event.attributes_json)
    assert attributes == {
        "node": "gate",
        "score": 0.9,
        "threshold": 0.5,
        "class": None,
        "threshold_set": None,
        "frame": frame,
    }
    assert "0.9" in event.message
    assert event.at.ToNanoseconds() == round(clock.now * 1e9)

    clock.now += 1  # the bucket refills
    collector.record_run(run("reject", run_id="run-3"), lineage=lineage, image=gradient())
    (later,) = collector.take_events()
    assert later.thumbnail_jpeg
    status = collector.status()
    assert (status.thumbnails_sent, status.thumbnails_skipped) == (2, 2)


def test_events_are_capped_per_interval_and_the_excess_counted(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    collector = TelemetryCollector(
        interval_s=10, clock=clock, monotonic=clock, system=NoSystem(), max_events_per_interval=3
    )
    for _ in range(10):
        collector.record_run(run("reject"), lineage=BASE)
    assert len(collector.take_events()) == 3
    assert collector.status().events_suppressed == 7
    (workflow,) = collector.close_interval().workflows
    assert workflow.failed == 10  # telemetry still counts every reject
    assert "7 part_rejected events not sent" in caplog.text
    for _ in range(2):
        collector.record_run(run("reject"), lineage=BASE)
    assert len(collector.take_events()) == 2  # a new interval, a new allowance
    assert collector.status().events_suppressed == 7


def test_system_metrics_and_outbox_dropped(tmp_path: Path, clock: Clock) -> None:
    stats = OutboxStats(
        pending_records=0, pending_bytes=0, dropped_records=12, last_seq=3, oldest_pending_age_s=None
    )
    collector = TelemetryCollector(
        interval_s=10,
        clock=clock,
        monotonic=clock,
        system=SystemProbe(tmp_path / "not-made-yet", gpus=False),
        outbox_stats=lambda: stats,
    )
    record = collector.close_interval()
    system = record.system
    assert 0.0 <= system.cpu_percent <= 100.0
    assert 0 < system.memory_used_bytes < system.memory_total_bytes
    assert 0 < system.disk_used_bytes < system.disk_total_bytes  # the disk holding tmp_path
    assert system.process_rss_bytes > 10 * 1024 * 1024
    assert all(-50 < value < 150 for value in system.temperatures_c.values())
    assert list(system.gpus) == []
    assert record.outbox_dropped == 12


class FakeNvml(types.ModuleType):
    NVML_TEMPERATURE_GPU = 0

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.shut = False

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA H100"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return types.SimpleNamespace(gpu=37, memory=5)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return types.SimpleNamespace(used=2 * 2**30, total=80 * 2**30, free=78 * 2**30)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 41


def test_gpu_metrics_from_nvml_when_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    probe = SystemProbe(None)
    (gpu,) = probe.sample().gpus
    assert (gpu.name, gpu.utilization_percent, gpu.temperature_c) == ("NVIDIA H100", 37.0, 41.0)
    assert (gpu.memory_used_bytes, gpu.memory_total_bytes) == (2 * 2**30, 80 * 2**30)
    probe.close()
    assert fake.shut


ORIN = (
    "11-25-2026 10:01:12 RAM 2285/30536MB (lfb 6893x4MB) SWAP 0/15268MB (cached 0MB) "
    "CPU [0%@729,1%@729] EMC_FREQ 0%@2133 GR3D_FREQ 61%@[305,305] VIC_FREQ 729 APE 174 "
    "CPU@47.593C SOC2@43.906C GPU@44.5C tj@47.593C VDD_GPU_SOC 2761mW/2761mW"
)
NANO = (
    "RAM 1516/3964MB (lfb 87x4MB) SWAP 0/1982MB (cached 0MB) CPU [5%@102,4%@102] "
    "EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 PLL@24C CPU@26.5C GPU@-256C thermal@25.75C"
)


def test_tegrastats_lines() -> None:
    orin = parse_tegrastats(ORIN, "orin")
    assert orin is not None
    assert (orin.name, orin.utilization_percent, orin.temperature_c) == ("orin", 61.0, 44.5)
    assert (orin.memory_used_bytes, orin.memory_total_bytes) == (2285 * 2**20, 30536 * 2**20)
    nano = parse_tegrastats(NANO)
    assert nano is not None
    assert nano.utilization_percent == 0.0
    assert nano.temperature_c == 0.0  # -256 °C: the sensor is off, left out
    assert parse_tegrastats("nothing useful here") is None


@pytest.fixture
def fake_tegrastats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``tegrastats`` on the PATH that prints a line every 100 ms until killed, like the real one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "tegrastats"
    script.write_text(f"#!/bin/sh\nwhile true; do echo '{ORIN}'; sleep 0.1; done\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # importing it raises ImportError
    return script


def test_gpu_metrics_from_tegrastats_on_a_jetson(fake_tegrastats: Path) -> None:
    before = {thread.ident for thread in threading.enumerate()}
    probe = SystemProbe(None)
    for _ in range(5):
        (gpu,) = probe.sample().gpus
    assert (gpu.utilization_percent, gpu.temperature_c) == (61.0, 44.5)
    left = [t.name for t in threading.enumerate() if t.ident not in before]
    assert left == []  # the tegrastats reader does not leave threads behind


def test_no_gpu_probe_without_nvml_or_tegrastats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert list(SystemProbe(None).sample().gpus) == []


def test_the_thread_sends_events_at_once_and_a_record_per_interval() -> None:
    stored: list[tuple[str, bytes]] = []
    arrived = threading.Condition()

    def sink(kind: str, payload: bytes) -> int | None:
        with arrived:
            stored.append((kind, payload))
            arrived.notify_all()
        return len(stored) if kind == "event" else None  # the telemetry record "did not fit"

    collector = TelemetryCollector(interval_s=0.2, sink=sink, system=NoSystem())  # type: ignore[arg-type]
    collector.start()
    try:
        collector.record_run(run("reject"), lineage=BASE)
        with arrived:
            assert arrived.wait_for(lambda: any(k == "telemetry" for k, _ in stored), timeout=10)
        kinds = [k for k, _ in stored]
        assert kinds[0] == "event"  # sent before the interval closed
        record = sync_pb2.TelemetryRecord.FromString(next(p for k, p in stored if k == "telemetry"))
        assert record.workflows[0].failed == 1
    finally:
        collector.stop(flush=True)
    final = sync_pb2.TelemetryRecord.FromString(stored[-1][1])  # the final partial interval
    assert stored[-1][0] == "telemetry"
    assert final.window_end.ToNanoseconds() >= record.window_end.ToNanoseconds()
    status = collector.status()
    assert status.events_sent == 1
    assert status.append_failures == sum(1 for k, _ in stored if k == "telemetry")
