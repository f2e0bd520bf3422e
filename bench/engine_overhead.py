"""What the workflow engine itself costs, against the same node functions in a plain loop.

Graphs (trivial nodes, so that what is measured is the engine):

- ``linear``: five nodes in a chain;
- ``branch_parallel``: a source, a parallel pair, a routing node choosing the last node.

Each run is timed alone; baseline and engine runs alternate in batches so that drift on a noisy
machine hits both alike. Overhead = engine − baseline, at the median and at p99.

Also shown: the cost of a per-node timeout (the node then runs on the worker pool), and that
two GIL-releasing nodes (hashlib over 16 MB each) overlap.

Run: ``.venv/bin/python bench/engine_overhead.py [--runs N]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agent.workflow import (
    CompileOptions,
    Executor,
    Node,
    NodeSetup,
    Route,
    RunContext,
    builtin_registry,
    compile_workflow,
)


def f_source(doc: dict[str, Any]) -> dict[str, Any]:
    return {"v": doc["v"] + 1}


def f_step(doc: dict[str, Any]) -> dict[str, Any]:
    return {"v": doc["v"] * 2}


def f_decide(doc: dict[str, Any]) -> bool:
    return bool(doc["v"] >= 0)


FUNCTIONS: dict[str, Callable[[dict[str, Any]], Any]] = {"source": f_source, "step": f_step}


class StepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fn: str
    reads: str | None = None


class Step(Node[StepConfig]):
    """Calls one of the trivial functions on the input or on one upstream output."""

    type_name = "bench_step"
    config_model = StepConfig

    def __init__(self, config: StepConfig, setup: NodeSetup) -> None:
        super().__init__(config, setup)
        self.fn = FUNCTIONS[config.fn]
        self.reads = config.reads

    def run(self, ctx: RunContext) -> Any:
        return self.fn(ctx.outputs[self.reads] if self.reads else ctx.input)


class DecideConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reads: str
    then: str


class Decide(Node[DecideConfig]):
    type_name = "bench_decide"
    config_model = DecideConfig

    def run(self, ctx: RunContext) -> Route:
        taken = f_decide(ctx.outputs[self.config.reads])
        return Route(self.config.then if taken else None, taken)

    def branch_targets(self) -> list[tuple[str, str]]:
        return [(self.config.then, "then")]


class HashConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size_mb: int = 16


class Hash(Node[HashConfig]):
    """sha256 over a large buffer: CPU work that releases the GIL."""

    type_name = "bench_hash"
    config_model = HashConfig
    concurrent = True
    buffers: ClassVar[dict[int, bytes]] = {}

    def run(self, ctx: RunContext) -> str:
        data = self.buffers.setdefault(self.config.size_mb, b"x" * (self.config.size_mb << 20))
        return hashlib.sha256(data).hexdigest()


def registry() -> Any:
    reg = builtin_registry()
    for cls in (Step, Decide, Hash):
        reg.register(cls)
    return reg


def step(node_id: str, fn: str, reads: str | None = None, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"fn": fn}
    if reads:
        config["reads"] = reads
    return {"id": node_id, "type": "bench_step", "config": config, **extra}


def linear_graph(**extra: Any) -> dict[str, Any]:
    nodes = [step("n1", "source", **extra)] + [
        step(f"n{i}", "step", f"n{i - 1}", **extra) for i in range(2, 6)
    ]
    edges = [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(1, 5)]
    return {"id": "linear", "nodes": nodes, "edges": edges}


def linear_baseline(doc: dict[str, Any]) -> Any:
    v = f_source(doc)
    for _ in range(4):
        v = f_step(v)
    return v


def branch_graph() -> dict[str, Any]:
    nodes = [
        step("src", "source"),
        step("left", "step", "src"),
        step("right", "step", "src"),
        {"id": "decide", "type": "bench_decide", "config": {"reads": "left", "then": "last"}},
        step("last", "step", "right"),
    ]
    pairs = [("src", "left"), ("src", "right"), ("left", "decide"), ("right", "decide"), ("decide", "last")]
    return {"id": "branch_parallel", "nodes": nodes, "edges": [{"source": s, "target": t} for s, t in pairs]}


def branch_baseline(doc: dict[str, Any]) -> Any:
    src = f_source(doc)
    left = f_step(src)
    right = f_step(src)
    if f_decide(left):
        return f_step(right)
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(
    fn: Callable[[], Any], baseline: Callable[[], Any], runs: int, batch: int = 500
) -> dict[str, float]:
    engine_t: list[float] = []
    base_t: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(200):  # warm up
        fn()
        baseline()
    done = 0
    while done < runs:
        for _ in range(batch):
            t0 = clock()
            baseline()
            base_t.append(clock() - t0)
        for _ in range(batch):
            t0 = clock()
            fn()
            engine_t.append(clock() - t0)
        done += batch
    us = 1e-3
    return {
        "baseline_median_us": statistics.median(base_t) * us,
        "baseline_p99_us": percentile(base_t, 0.99) * us,
        "engine_median_us": statistics.median(engine_t) * us,
        "engine_p99_us": percentile(engine_t, 0.99) * us,
        "overhead_median_us": (statistics.median(engine_t) - statistics.median(base_t)) * us,
        "overhead_p99_us": (percentile(engine_t, 0.99) - percentile(base_t, 0.99)) * us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/engine_overhead.json"))
    args = parser.parse_args()

    options = CompileOptions(registry=registry())
    doc = {"v": 1}
    report: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''} "
        f"Python {platform.python_version()}",
        "runs": args.runs,
    }
    with Executor(max_workers=4) as executor:
        cases = {
            "linear_5": (compile_workflow(linear_graph(), options), linear_baseline),
            "branch_parallel_5": (compile_workflow(branch_graph(), options), branch_baseline),
        }
        for name, (plan, baseline) in cases.items():
            result = executor.run(plan, doc)
            assert result.ok, result.error
            stats = measure(lambda plan=plan: executor.run(plan, doc), lambda b=baseline: b(doc), args.runs)
            stats["overhead_per_node_median_us"] = stats["overhead_median_us"] / 5
            report[name] = stats

        timed = compile_workflow(linear_graph(timeout_s=5.0), options)
        stats = measure(
            lambda: executor.run(timed, doc), lambda: linear_baseline(doc), max(2000, args.runs // 10)
        )
        stats["overhead_per_node_median_us"] = stats["overhead_median_us"] / 5
        report["linear_5_every_node_with_timeout"] = stats

        pair = compile_workflow(
            {"id": "pair", "nodes": [{"id": "a", "type": "bench_hash"}, {"id": "b", "type": "bench_hash"}]},
            options,
        )
        single = compile_workflow({"id": "one", "nodes": [{"id": "a", "type": "bench_hash"}]}, options)
        executor.run(pair, {})
        one_t, pair_t = [], []
        for _ in range(15):
            t0 = time.perf_counter()
            executor.run(single, {})
            one_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            executor.run(pair, {})
            pair_t.append(time.perf_counter() - t0)
        report["gil_releasing_pair"] = {
            "one_node_median_ms": statistics.median(one_t) * 1e3,
            "two_independent_nodes_median_ms": statistics.median(pair_t) * 1e3,
            "ratio_two_over_one": statistics.median(pair_t) / statistics.median(one_t),
        }

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
