"""The agent's Prometheus endpoint: what a run counts, what a scrape reads, and promtool's verdict."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.inference.backend import BackendOptions
from agent.inference.onnxruntime_backend import OnnxRuntimeBackend
from agent.inference.runtime import ModelRuntime
from agent.inference.store import ModelStore
from agent.metrics import AgentMetrics, QueueStats
from agent.sync.outbox import OutboxStats
from agent.sync.telemetry import SystemProbe
from agent.workflow import CompileOptions, Executor, builtin_registry, compile_workflow, read_document
from tests.conftest import EXAMPLES

REPO = Path(__file__).resolve().parents[1]


class Sources:
    """The agent's side of a scrape, as plain values (the real agent reads its services)."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime

    def queues(self) -> Iterable[QueueStats]:
        return [QueueStats("order_processing", depth=3, capacity=8, dropped=5)]

    def served_models(self) -> Iterable[Mapping[str, Any]]:
        return [served.status() for served in self.runtime.loaded()]

    def backend_fallbacks(self) -> Mapping[str, int]:
        return self.runtime.fallbacks

    def outbox_stats(self) -> OutboxStats:
        return OutboxStats(
            pending_records=7, pending_bytes=1234, dropped_records=2, last_seq=9, oldest_pending_age_s=1.5
        )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[AgentMetrics, Any, Executor]]:
    store = ModelStore(tmp_path / "models")
    store.install(EXAMPLES / "models" / "pricing_model_v3.onnx", "pricing_model_v3", "3")
    # the CUDA provider first: skipped and counted where this onnxruntime build lacks it
    backends = [OnnxRuntimeBackend("onnxruntime-cuda"), OnnxRuntimeBackend()]
    runtime = ModelRuntime(store, backends, BackendOptions(max_batch=1))
    options = CompileOptions(
        registry=builtin_registry(), schema_dirs=(EXAMPLES / "schemas",), resources={"models": runtime}
    )
    plan = compile_workflow(read_document(EXAMPLES / "workflows" / "order_processing.json"), options)
    probe = SystemProbe(tmp_path, gpus=False)

    def backend_of(model: str) -> str:
        return next((s.backend for s in runtime.loaded() if s.record.model_id == model), "")

    metrics = AgentMetrics(Sources(runtime), probe=probe, backend_of=backend_of)
    with Executor() as executor:
        for quantity in (3, 1, 0):  # quantity 0 fails validation: an error outcome
            result = executor.run(plan, {"product": {"id": "P1001"}, "quantity": quantity})
            metrics.record_run(plan, result, result.duration_s)
        yield metrics, plan, executor
    metrics.close()
    probe.close()
    runtime.close()


def scrape(metrics: AgentMetrics) -> str:
    port = metrics.serve("127.0.0.1", 0)
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_runs_are_counted_by_workflow_and_outcome_with_latency_by_node_and_model(
    served: tuple[AgentMetrics, Any, Executor],
) -> None:
    metrics, _, _ = served
    values = samples(scrape(metrics))
    runs = {
        dict(labels)["outcome"]: value
        for (name, labels), value in values.items()
        if name == "edgefleet_workflow_runs_total"
    }
    assert runs == {"skipped": 2.0, "error": 1.0}  # order_processing decides nothing: no accept/reject
    assert values[("edgefleet_workflow_run_duration_seconds_count", (("workflow", "order_processing"),))] == 3
    assert (
        values[
            (
                "edgefleet_inference_duration_seconds_count",
                (("backend", "onnxruntime-cpu"), ("model", "pricing_model_v3")),
            )
        ]
        == 2
    )
    nodes = {
        dict(labels)["node"] for (name, labels) in values if name == "edgefleet_node_duration_seconds_count"
    }
    assert {"input_validator", "price_calculator"} <= nodes


def test_a_scrape_reads_queues_models_outbox_and_the_device(
    served: tuple[AgentMetrics, Any, Executor],
) -> None:
    metrics, _, _ = served
    values = samples(scrape(metrics))
    workflow = (("workflow", "order_processing"),)
    assert values[("edgefleet_queue_depth_frames", workflow)] == 3
    assert values[("edgefleet_queue_capacity_frames", workflow)] == 8
    assert values[("edgefleet_frames_dropped_total", workflow)] == 5
    assert values[("edgefleet_outbox_pending_records", ())] == 7
    assert values[("edgefleet_outbox_dropped_records_total", ())] == 2
    cuda_missing = OnnxRuntimeBackend("onnxruntime-cuda").unavailable_reason() is not None
    backend = "onnxruntime-cpu" if cuda_missing else "onnxruntime-cuda"
    model = (("backend", backend), ("model", "pricing_model_v3"), ("version", "3"))
    assert values[("edgefleet_inference_samples_total", model)] == 2
    if cuda_missing:
        assert values[("edgefleet_backend_fallbacks_total", (("backend", "onnxruntime-cuda"),))] == 1
    assert values[("edgefleet_system_memory_bytes", ())] > 0
    assert 0 <= values[("edgefleet_system_cpu_ratio", ())] <= 1
    assert values[("process_resident_memory_bytes", ())] > 0


def test_promtool_finds_nothing_to_report(served: tuple[AgentMetrics, Any, Executor]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (./scripts/setup installs the Debian package prometheus)")
    metrics, _, _ = served
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=scrape(metrics), capture_output=True, text=True, check=False
    )
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_a_taken_port_is_an_error_naming_it(served: tuple[AgentMetrics, Any, Executor]) -> None:
    metrics, _, _ = served
    port = metrics.serve("127.0.0.1", 0)
    other = AgentMetrics()
    with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
        other.serve("127.0.0.1", port)


def exposed_names(text: str) -> set[str]:
    """Every series name the exposition can hold, from its ``# TYPE`` lines (families without
    samples too, e.g. GPUs on a machine without one)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            # a counter's TYPE line already names it ..._total
            suffixes = {"histogram": ("_bucket", "_count", "_sum")}.get(kind, ("",))
            names.update(name + suffix for suffix in suffixes)
    return names


@pytest.mark.parametrize(
    "dashboard", sorted((REPO / "deploy" / "grafana").glob("*.json")), ids=lambda p: p.name
)
def test_grafana_dashboards_query_only_metrics_the_agent_exposes(
    served: tuple[AgentMetrics, Any, Executor], dashboard: Path
) -> None:
    metrics, _, _ = served
    exposed = exposed_names(scrape(metrics))
    document = json.loads(dashboard.read_text())
    expressions = [target["expr"] for panel in document["panels"] for target in panel["targets"]]
    assert expressions
    used = {name for expr in expressions for name in re.findall(r"\b(?:edgefleet|process)_[a-z_]+", expr)}
    assert used - exposed == set()
