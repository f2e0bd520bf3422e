"""``edgefleet``: the operator's command line.

``edgefleet demo`` runs every example workflow on its sample inputs and prints what happened;
it grows into the fleet demo as the control plane lands.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Annotated, Any

import typer
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

app = typer.Typer(
    name="edgefleet",
    help="Operate an edgefleet fleet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Operate an edgefleet fleet."""


@app.command()
def demo(
    examples: Annotated[
        Path, typer.Option(help="Examples directory (workflows/, inputs/, schemas/).")
    ] = Path("examples"),
) -> None:
    """Run each example workflow on its sample inputs and summarise the results."""
    console = Console()
    workflows = sorted((examples / "workflows").glob("*.[jy]*"))
    if not workflows:
        console.print(f"[red]no workflows under {examples / 'workflows'}[/red]")
        raise typer.Exit(2)
    options = CompileOptions(schema_dirs=(examples / "schemas",))
    table = Table("workflow", "input", "status", "branches", "events", "detail")
    problems = 0
    with Executor() as executor:
        for path in workflows:
            try:
                plan = compile_workflow(read_document(path), options)
            except (SpecError, CompileError) as exc:
                first = exc.issues[0] if isinstance(exc, CompileError) else exc
                table.add_row(path.name, "—", "[yellow]not runnable[/yellow]", "", "", str(first))
                continue
            inputs_file = examples / "inputs" / f"{path.stem}.json"
            inputs: Any = read_document(inputs_file) if inputs_file.exists() else []
            timings = []
            for index, document in enumerate(inputs):
                start = time.perf_counter()
                try:
                    result = executor.run(plan, document)
                except InvalidInput as exc:
                    table.add_row(path.name, f"#{index}", "[red]rejected[/red]", "", "", str(exc))
                    problems += 1
                    continue
                timings.append(time.perf_counter() - start)
                branches = ", ".join(f"{k}→{v}" for k, v in result.branches.items())
                detail = "" if result.error is None else f"{result.error.node}: {result.error.message}"
                style = "green" if result.ok else "red"
                table.add_row(
                    path.name,
                    f"#{index}",
                    f"[{style}]{result.status}[/{style}]",
                    branches,
                    str(len(result.events)),
                    detail,
                )
            if timings:
                median_us = statistics.median(timings) * 1e6
                console.print(f"{plan.workflow_id}: {len(timings)} runs, median {median_us:.0f} µs per run")
    console.print(table)
    raise typer.Exit(1 if problems else 0)


def main() -> None:
    app()
