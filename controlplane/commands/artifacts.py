"""``edgefleet workflows …`` and ``edgefleet thresholds …``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from controlplane.commands import output
from controlplane.commands.output import field, when
from controlplane.commands.session import (
    PROBLEM_FOUND,
    USAGE,
    connect,
    describe_error,
    fail,
    json_output,
    parse_pairs,
    read_text,
)

workflows_app = typer.Typer(help="Workflow graphs: checked against the models, signed.", no_args_is_help=True)
thresholds_app = typer.Typer(help="Per-class threshold sets and where they apply.", no_args_is_help=True)

MEDIA_TYPES = {".json": "application/json", ".yaml": "application/yaml", ".yml": "application/yaml"}


def _refs(refs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['name']} v{r['version']}" for r in refs) or "-"


WORKFLOW_COLUMNS: list[output.Column] = [
    ("NAME", field("name")),
    ("VERSION", field("version")),
    ("NODES", field("nodes")),
    ("MODELS", lambda w: _refs(w.get("models", []))),
    ("SHA256", lambda w: str(w.get("sha256", ""))[:12]),
    ("CREATED", lambda w: when(w.get("created_at"))),
    ("BY", field("created_by")),
]
THRESHOLD_COLUMNS: list[output.Column] = [
    ("NAME", field("name")),
    ("VERSION", field("version")),
    ("VALUES", field("values")),
    ("CREATED", lambda t: when(t.get("created_at"))),
    ("BY", field("created_by")),
]
ASSIGNMENT_COLUMNS: list[output.Column] = [
    ("SET", field("name")),
    ("VERSION", field("version")),
    ("TARGET", lambda a: f"{a['target_kind']} {a['target']}"),
    ("ASSIGNED", lambda a: when(a.get("assigned_at"))),
    ("BY", field("assigned_by")),
]


def _graph(path: Path) -> tuple[str, str]:
    """The graph's text and media type, by the file's extension."""
    media = MEDIA_TYPES.get(path.suffix.lower())
    if media is None:
        fail(f"{path}: a workflow graph is a .json, .yaml or .yml file", USAGE)
    return read_text(path), media


AllOption = Annotated[bool, typer.Option("--all", help="Every page, not only the first.")]


@workflows_app.command("push")
def push_workflow(ctx: typer.Context, file: Annotated[Path, typer.Argument(metavar="FILE")]) -> None:
    """Store a new workflow version (the graph's id is its name). Refused, with every problem by
    node and field, when it does not compile against the models the control plane holds."""
    text, media = _graph(file)
    with connect(ctx) as api:
        workflow = api.push_workflow(text, media)
    if json_output(ctx):
        output.emit_json(workflow)
    else:
        typer.echo(
            f"pushed workflow '{workflow['name']}' v{workflow['version']} "
            f"({workflow['nodes']} nodes; models: {_refs(workflow['models'])})"
        )


@workflows_app.command("validate")
def validate_workflow(ctx: typer.Context, file: Annotated[Path, typer.Argument(metavar="FILE")]) -> None:
    """Compile a graph on the control plane without storing it. Exit 1 when it has problems."""
    from controlplane.client import ApiError

    text, media = _graph(file)
    with connect(ctx) as api:
        try:
            report = api.validate_workflow(text, media)
        except ApiError as exc:
            if exc.type not in ("invalid-workflow", "bad-document"):
                raise
            if json_output(ctx):
                output.emit_json(exc.problem)
            else:
                problems = f"{len(exc.errors)} problem(s)" if exc.errors else exc.detail
                typer.echo(f"invalid: {file}: {problems}")
                for error in exc.errors:
                    typer.echo(f"  - {describe_error(error)}")
            raise typer.Exit(PROBLEM_FOUND) from None
    if json_output(ctx):
        output.emit_json(report)
    else:
        typer.echo(
            f"ok — workflow '{report['name']}' v{report['version']}, {report['nodes']} nodes; "
            f"models: {_refs(report['models'])}"
        )


@workflows_app.command("list")
def list_workflows(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only the versions of this workflow.")] = None,
    all_pages: AllOption = False,
) -> None:
    """Workflow versions, by name then version."""
    with connect(ctx) as api:
        listing = api.list_workflows(name, all_pages=all_pages)
    output.print_list(
        ctx, listing.items, WORKFLOW_COLUMNS, what="workflows", more=listing.next_cursor is not None
    )


@workflows_app.command("show")
def show_workflow(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    version: Annotated[int, typer.Argument(metavar="VERSION", min=1)],
) -> None:
    """One workflow version and its graph."""
    import json

    with connect(ctx) as api:
        workflow = api.get_workflow(name, version)
    if json_output(ctx):
        output.emit_json(workflow)
        return
    summary = {k: v for k, v in workflow.items() if k != "document"}
    summary["models"] = _refs(workflow.get("models", []))
    output.print_record(summary)
    typer.echo(json.dumps(workflow.get("document", {}), indent=2, ensure_ascii=False))


def _values(items: list[str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for key, raw in parse_pairs(items, "threshold").items():
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            fail(f"threshold '{key}={raw}': the value is not a finite number", USAGE)
        values[key] = value
    return values


@thresholds_app.command("set")
def set_thresholds(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    values: Annotated[list[str], typer.Argument(metavar="CLASS=VALUE...", help="'default' covers the rest.")],
    version: Annotated[int | None, typer.Option(min=1, help="Version; the newest + 1 when unset.")] = None,
) -> None:
    """Create a new version of threshold set NAME."""
    parsed = _values(values)
    with connect(ctx) as api:
        created = api.create_threshold_set(name, parsed, version)
    if json_output(ctx):
        output.emit_json(created)
    else:
        typer.echo(f"created threshold set '{created['name']}' v{created['version']}: {output.text(parsed)}")


@thresholds_app.command("assign")
def assign_thresholds(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    version: Annotated[int, typer.Argument(metavar="VERSION", min=1)],
    group: Annotated[str | None, typer.Option(help="Apply it to this group's devices.")] = None,
    device: Annotated[str | None, typer.Option(help="Apply it to this device.")] = None,
) -> None:
    """Make VERSION of set NAME the one a group or a device runs."""
    if (group is None) == (device is None):
        fail("give exactly one of --group G or --device D", USAGE)
    kind, target = ("group", group) if group is not None else ("device", device)
    assert target is not None
    with connect(ctx) as api:
        assignment = api.assign_thresholds(name, version, kind, target)
    if json_output(ctx):
        output.emit_json(assignment)
    else:
        typer.echo(f"threshold set '{name}' v{version} assigned to {kind} '{target}'")


@thresholds_app.command("list")
def list_thresholds(ctx: typer.Context, all_pages: AllOption = False) -> None:
    """Threshold set versions, by name then version."""
    with connect(ctx) as api:
        listing = api.list_threshold_sets(all_pages=all_pages)
    output.print_list(
        ctx, listing.items, THRESHOLD_COLUMNS, what="threshold sets", more=listing.next_cursor is not None
    )


@thresholds_app.command("assignments")
def list_assignments(ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Where each version of set NAME is assigned."""
    with connect(ctx) as api:
        items = api.list_threshold_assignments(name)
    output.print_list(ctx, items, ASSIGNMENT_COLUMNS, what="assignments")
