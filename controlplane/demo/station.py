"""``edgefleet demo --local``: the agent on its own, with no control plane.

1. The workflow engine: each example workflow that has sample inputs, run in-process.
2. The design brief's ``order_processing``: its pricing model installed on a device's model
   store and the workflow run by ``edgefleet-agent run``.
3. Surface inspection: synthetic camera frames inspected by ``edgefleet-agent serve`` with the
   reference model; throughput, latency and how many defects were caught.

Steps 2 and 3 drive the agent through its command line, as an operator would on a device.
Everything lands in the work directory given (``.edgefleet-demo/local`` from the CLI).
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agent.workflow import (
    CompileError,
    CompileOptions,
    Executor,
    InvalidInput,
    SpecError,
    compile_workflow,
    read_document,
)


def _agent_cli() -> str:
    return str(Path(sys.executable).parent / "edgefleet-agent")


def _agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_agent_cli(), *args], capture_output=True, text=True, check=False)


def engine_examples(console: Console, examples: Path) -> int:
    """Run every example that has inputs; returns the number of inputs that were refused."""
    table = Table("workflow", "runs", "succeeded", "failed", "branches taken", "median µs")
    options = CompileOptions(schema_dirs=(examples / "schemas",))
    refused = 0
    with Executor() as executor:
        for path in sorted((examples / "workflows").glob("*.[jy]*")):
            inputs_file = examples / "inputs" / f"{path.stem}.json"
            if not inputs_file.exists():
                continue
            try:
                plan = compile_workflow(read_document(path), options)
            except (SpecError, CompileError) as exc:
                table.add_row(path.name, "—", "—", "—", str(exc).splitlines()[0], "")
                refused += 1
                continue
            ok = failed = 0
            branches: list[str] = []
            timings = []
            for document in read_document(inputs_file):
                started = time.perf_counter()
                try:
                    result = executor.run(plan, document)
                except InvalidInput:
                    refused += 1
                    continue
                timings.append(time.perf_counter() - started)
                ok += result.ok
                failed += not result.ok
                branches += [f"{k}→{v}" for k, v in result.branches.items()]
            median = f"{statistics.median(timings) * 1e6:.0f}" if timings else ""
            table.add_row(
                plan.workflow_id, str(ok + failed), str(ok), str(failed), ", ".join(branches), median
            )
    console.print("[bold]1. Workflow engine[/bold] (examples/workflows, inputs from examples/inputs)")
    console.print(table)
    return refused


def order_processing(console: Console, examples: Path, workdir: Path) -> bool:
    data_dir = workdir / "data"
    model = examples / "models" / "pricing_model_v3.onnx"
    install = _agent(
        "model",
        "install",
        str(model),
        "--id",
        "pricing_model_v3",
        "--version",
        "3",
        "--data-dir",
        str(data_dir),
    )
    order = workdir / "order.json"
    order.write_text(json.dumps({"product": {"id": "P1001"}, "quantity": 3}))
    run = _agent(
        "run",
        str(examples / "workflows" / "order_processing.json"),
        "--input",
        str(order),
        "--data-dir",
        str(data_dir),
    )
    console.print(
        "[bold]2. The brief's order_processing[/bold] (data_validation → model_inference on ONNX Runtime)"
    )
    if install.returncode != 0 or run.returncode != 0:
        console.print(f"[red]failed[/red]: {install.stderr or run.stderr or run.stdout}")
        return False
    price = json.loads(run.stdout)["outputs"]["price_calculator"]["calculated_price"]
    console.print(f"   order P1001 × 3 → calculated_price = {price}")
    return True


def surface_inspection(console: Console, examples: Path, workdir: Path, frames: int) -> bool:
    console.print(f"[bold]3. Surface inspection[/bold] ({frames} synthetic frames → edgefleet-agent serve)")
    frame_dir = workdir / "frames"
    shutil.rmtree(frame_dir, ignore_errors=True)
    (workdir / "results.jsonl").unlink(missing_ok=True)
    synth = _agent("synth", "--out", str(frame_dir), "--count", str(frames), "--seed", "2026")
    if synth.returncode != 0:
        console.print(f"[red]could not make frames[/red]: {synth.stderr}")
        return False
    config = _station_config(examples, workdir, frame_dir)
    serve = _agent("serve", "--config", str(config), "--log-level", "warning")
    if serve.returncode != 0:
        console.print(f"[red]the agent failed[/red]: {serve.stderr}")
        return False
    (summary,) = json.loads(serve.stdout)["workflows"]
    truth = _labels(frame_dir / "labels.csv")
    caught = missed = false_rejects = goods = 0
    for line in (workdir / "results.jsonl").read_text().splitlines():
        result = json.loads(line)
        defective = truth[Path(result["frame"]["path"]).name]
        rejected = result["outputs"].get("gate", {}).get("decision") == "reject"
        if defective:
            caught += rejected
            missed += not rejected
        else:
            goods += 1
            false_rejects += rejected
    table = Table(
        "frames", "failed runs", "throughput", "latency p50 / p99", "defects caught", "good parts rejected"
    )
    table.add_row(
        str(summary["runs"]),
        str(summary["failed"]),
        f"{summary['throughput_per_s']} frames/s",
        f"{summary['latency_ms_p50']} / {summary['latency_ms_p99']} ms",
        f"{caught}/{caught + missed} ({100 * caught / max(1, caught + missed):.1f} %)",
        f"{false_rejects}/{goods} ({100 * false_rejects / max(1, goods):.1f} %)",
    )
    console.print(table)
    return bool(summary["failed"] == 0)


def _station_config(examples: Path, workdir: Path, frame_dir: Path) -> Path:
    """``examples/agent/surface_inspection.yaml`` with its paths pointed into ``workdir``."""
    import yaml

    source = examples / "agent" / "surface_inspection.yaml"
    base = source.resolve().parent
    config = yaml.safe_load(source.read_text())
    config["data_dir"] = str((workdir / "data").resolve())
    config["results_jsonl"] = str((workdir / "results.jsonl").resolve())
    for model in config["models"]:
        model["file"] = str((base / model["file"]).resolve())
    (binding,) = config["workflows"]
    binding["file"] = str((base / binding["file"]).resolve())
    binding["sources"] = [{"type": "folder", "path": str(frame_dir.resolve()), "pattern": "*.jpg"}]
    path = workdir / "agent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _labels(path: Path) -> dict[str, bool]:
    with path.open(newline="") as stream:
        return {row["file"]: row["defective"] in ("1", "true", "True") for row in csv.DictReader(stream)}


def run_demo(examples: Path, workdir: Path, frames: int) -> int:
    """Run the three parts; returns the process exit code (0 when all went as expected)."""
    console = Console(width=140)
    workdir.mkdir(parents=True, exist_ok=True)
    ok = engine_examples(console, examples) == 0
    ok &= order_processing(console, examples, workdir)
    ok &= surface_inspection(console, examples, workdir, frames)
    return 0 if ok else 1
