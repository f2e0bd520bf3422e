"""``edgefleet-agent validate | run | nodes`` and ``edgefleet demo``, as a user calls them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app as agent_app
from tests.conftest import EXAMPLES

runner = CliRunner()
ROUTING = str(EXAMPLES / "workflows" / "order_routing.yaml")


def test_validate_ok() -> None:
    result = runner.invoke(agent_app, ["validate", ROUTING])
    assert result.exit_code == 0
    assert "ok — workflow 'order_routing' v1, 6 nodes" in result.output


def test_validate_lists_every_error_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "id": "bad",
                "nodes": [
                    {"id": "a", "type": "mystery"},
                    {"id": "b", "type": "transform", "config": {"output": "$.["}},
                ],
                "edges": [{"source": "a", "target": "c"}],
            }
        )
    )
    result = runner.invoke(agent_app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "3 problem(s)" in result.output
    assert "node 'a', type: unknown node type 'mystery'" in result.output
    assert "node 'b', config.output" in result.output
    assert "edges[0].target" in result.output


def test_validate_malformed_file_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nnodes: [\n")
    result = runner.invoke(agent_app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:3:1:" in result.output


def test_run_prints_the_result_and_exit_code_follows_the_run(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "product": {"id": "P1001"},
                "quantity": 3,
                "order": {"amount": 1500},
                "customer": {"type": "VIP"},
            }
        )
    )
    result = runner.invoke(agent_app, ["run", ROUTING, "--input", str(good)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["status"] == "succeeded"
    assert document["branches"] == {"route": "apply_premium_service"}

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"product": {"id": "nope"}, "quantity": 3}))
    result = runner.invoke(agent_app, ["run", ROUTING, "--input", str(bad)])
    assert result.exit_code == 1
    assert json.loads(result.output)["error"]["node"] == "input_validator"


def test_run_reads_stdin_and_rejects_garbage() -> None:
    result = runner.invoke(agent_app, ["run", ROUTING, "--input", "-"], input="[1, 2")
    assert result.exit_code == 2
    assert "<stdin>:1:" in result.output
    result = runner.invoke(agent_app, ["run", ROUTING, "--input", "-"], input="[1, 2]")
    assert result.exit_code == 2
    assert "must be a JSON object" in result.output


@pytest.mark.slow
def test_console_scripts_are_installed() -> None:
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / "edgefleet-agent"), "validate", ROUTING], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [
            str(bin_dir / "edgefleet"),
            "demo",
            "--local",
            "--examples",
            str(EXAMPLES),
            "--workdir",
            str(tmp_path),
            "--frames",
            "40",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in (
        "order_routing",
        "line_sensor_check",
        "faq_cache",
        "calculated_price = 58.5",
        "defects caught",
    ):
        assert name in done.stdout
    assert len((tmp_path / "local" / "results.jsonl").read_text().splitlines()) == 40


def test_demo_engine_part_runs_every_example_with_inputs() -> None:
    from rich.console import Console

    from controlplane.demo.station import engine_examples

    console = Console(record=True, width=200)
    assert engine_examples(console, EXAMPLES) == 0
    text = console.export_text()
    for name in ("order_routing", "line_sensor_check", "faq_cache"):
        assert name in text


def test_node_reference_in_docs_is_up_to_date() -> None:
    result = runner.invoke(agent_app, ["nodes", "--markdown"])
    assert result.exit_code == 0
    assert (EXAMPLES.parent / "docs" / "nodes.md").read_text() == result.output, (
        "docs/nodes.md is stale: run `.venv/bin/edgefleet-agent nodes --markdown > docs/nodes.md`"
    )
