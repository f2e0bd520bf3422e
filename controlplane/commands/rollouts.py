"""``edgefleet rollout …``: start, watch, steer and explain canary rollouts (docs/rollouts.md).

The ``render_*`` functions turn the API's documents into rich renderables; they do no I/O, so
tests feed them recorded JSON. ``status --watch`` exits :data:`OK` when the rollout is promoted
and :data:`ROLLOUT_ABORTED` when it is aborted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from controlplane.commands import output
from controlplane.commands.output import field, text, when
from controlplane.commands.session import (
    OK,
    PROBLEM_FOUND,
    USAGE,
    connect,
    fail,
    json_output,
    read_text,
)

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

rollout_app = typer.Typer(help="Canary rollouts of a workflow bundle to a target.", no_args_is_help=True)

Json = dict[str, Any]
ROLLOUT_ABORTED = PROBLEM_FOUND
"""``status --watch``: the rollout ended aborted."""
INTERRUPTED = 130
"""``status --watch`` stopped with Ctrl-C."""
FINAL_STATES = ("promoted", "aborted")
STATUS_STYLE = {"pass": "green", "fail": "bold red", "insufficient": "yellow"}
STATE_STYLE = {"running": "cyan", "paused": "yellow", "promoted": "green", "aborted": "bold red"}
ACTION_STYLE = {"promote": "green", "abort": "bold red", "pause": "yellow", "resume": "cyan", "start": "cyan"}
MAX_IDS = 10


class RolloutState(StrEnum):
    running = "running"
    paused = "paused"
    promoted = "promoted"
    aborted = "aborted"


IdArgument = Annotated[str, typer.Argument(metavar="ID", help="The rollout id (r-…).")]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why, for the audit log.")]
AllOption = Annotated[bool, typer.Option("--all", help="Every page, not only the first.")]


# ---- plain text --------------------------------------------------------------------------------


def step_label(rollout: Mapping[str, Any]) -> str:
    """``2/4 canary`` (1-based; ``2 canary`` when the document has no spec, as in lists), ``-``
    without a current step."""
    steps = (rollout.get("spec") or {}).get("steps")
    index, step = rollout.get("step_index"), rollout.get("step") or {}
    if index is None:
        return "-"
    number = f"{index + 1}/{len(steps)}" if steps else str(index + 1)
    return f"{number} {step.get('kind', '?')}"


def step_size(step: Mapping[str, Any]) -> str:
    """``2 devices``, ``33%`` or ``-`` (pause) / ``all`` (full)."""
    if step.get("devices") is not None:
        return f"{step['devices']} devices"
    if step.get("percent") is not None:
        return f"{step['percent']:g}%"
    return "all" if step.get("kind") == "full" else "-"


def bundle_text(bundle: Mapping[str, Any] | None) -> str:
    """``workflow surface_inspection v4; models surface_inspection v2; thresholds surface v3``."""
    if not bundle:
        return "-"
    parts = []
    workflow = bundle.get("workflow") or {}
    if workflow:
        parts.append(f"workflow {workflow.get('name')} v{workflow.get('version')}")
    for key, label in (("models", "models"), ("threshold_sets", "thresholds")):
        refs = bundle.get(key) or []
        if refs:
            parts.append(f"{label} " + ", ".join(f"{r.get('name')} v{r.get('version')}" for r in refs))
    return "; ".join(parts) or "-"


def ids_text(ids: Sequence[str]) -> str:
    """The first few ids, then ``… and N more``."""
    shown = ", ".join(ids[:MAX_IDS]) or "-"
    return shown + (f" … and {len(ids) - MAX_IDS} more" if len(ids) > MAX_IDS else "")


def criterion_value(criterion: Mapping[str, Any]) -> str:
    """A criterion's value: the defect-rate shift in signed points, others to 4 digits."""
    value = criterion.get("value")
    if value is None:
        return "-"
    if criterion.get("name") == "defect_rate_shift":
        return f"{value:+.1f} pts"
    return f"{value:.4g}"


def criterion_threshold(criterion: Mapping[str, Any]) -> str:
    threshold = criterion.get("threshold")
    limit = "-" if threshold is None else f"{threshold:g}"
    return f"{criterion.get('comparison', '')} {limit}".strip()


def _elapsed_s(rollout: Mapping[str, Any], now: datetime) -> float | None:
    started = rollout.get("step_started_at")
    if not started:
        return None
    at = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
    return max(0.0, (now - (at if at.tzinfo else at.replace(tzinfo=UTC))).total_seconds())


LIST_COLUMNS: list[output.Column] = [
    ("ID", field("id")),
    ("WORKFLOW", field("workflow")),
    ("STATE", field("state")),
    ("STEP", step_label),
    ("TARGET", field("target")),
    ("CREATED", lambda r: when(r.get("created_at"))),
    ("BY", field("created_by")),
]


# ---- rich renderables --------------------------------------------------------------------------


def _header(rollout: Mapping[str, Any]) -> Table:
    from rich.table import Table

    state = str(rollout.get("state", "?"))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("rollout", f"{rollout.get('id')}  [{STATE_STYLE.get(state, '')}]{state}[/]")
    grid.add_row("workflow", text(rollout.get("workflow")))
    grid.add_row("target", text(rollout.get("target")))
    grid.add_row("bundle", bundle_text(rollout.get("bundle")))
    grid.add_row("created", f"{when(rollout.get('created_at'))} by {text(rollout.get('created_by'))}")
    if rollout.get("finished_at"):
        grid.add_row("finished", when(rollout.get("finished_at")))
    if state == "paused" and rollout.get("paused_reason"):
        grid.add_row("paused", str(rollout["paused_reason"]))
    if rollout.get("reason"):
        grid.add_row("reason", str(rollout["reason"]))
    return grid


def _marker(index: int, current: int | None, state: str) -> str:
    if state == "promoted" or (current is not None and index < current):
        return "[green]✓[/]"
    if index != current:
        return ""
    return {"aborted": "[bold red]✗[/]", "paused": "[yellow]‖[/]"}.get(state, "[cyan]▶[/]")


def _steps(rollout: Mapping[str, Any]) -> Table:
    from rich.table import Table

    steps = (rollout.get("spec") or {}).get("steps") or []
    current, state = rollout.get("step_index"), str(rollout.get("state", ""))
    table = Table(show_edge=False, header_style="bold", title="steps", title_justify="left")
    for header in ("", "#", "KIND", "COHORT", "DURATION", "MIN SAMPLES"):
        table.add_column(header)
    for index, step in enumerate(steps):
        duration = step.get("duration_s")
        table.add_row(
            _marker(index, current, state),
            str(index + 1),
            str(step.get("kind", "?")),
            step_size(step),
            "-" if duration is None else f"{duration:g} s",
            text(step.get("min_samples")),
            style="bold" if index == current and state not in FINAL_STATES else None,
        )
    return table


def _bar_row(table: Table, label: str, done: float, total: float, unit: str = "") -> None:
    from rich.progress_bar import ProgressBar

    bar = ProgressBar(total=max(total, 1), completed=min(done, max(total, 1)), width=30)
    table.add_row(label, bar, f"{done:g}/{total:g}{unit}")


def _progress(rollout: Mapping[str, Any], now: datetime) -> Table | None:
    """The current step's bars: devices on the candidate, samples per cohort, time in the step."""
    from rich.table import Table

    progress, step = rollout.get("progress"), rollout.get("step") or {}
    if not isinstance(progress, Mapping) or rollout.get("state") in FINAL_STATES:
        return None
    table = Table.grid(padding=(0, 2))
    table.title, table.title_justify = f"step {step_label(rollout)}", "left"
    _bar_row(
        table,
        "devices on candidate",
        progress.get("devices_on_candidate", 0),
        progress.get("devices_total", 0),
    )
    kind, wanted = step.get("kind"), step.get("min_samples") or 0
    if kind in ("shadow", "canary", "full"):
        _bar_row(table, "candidate samples", progress.get("candidate_samples", 0), wanted)
    if kind in ("shadow", "canary"):
        _bar_row(table, "baseline samples", progress.get("baseline_samples", 0), wanted)
    elapsed, duration = _elapsed_s(rollout, now), step.get("duration_s")
    if elapsed is not None and duration:
        _bar_row(table, "time in step", float(int(elapsed)), duration, " s")
    return table


def render_criteria(criteria: Sequence[Mapping[str, Any]], *, title: str = "") -> Table:
    """Criteria as a table: value against threshold, samples, coloured status, detail."""
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold", title=title or None, title_justify="left")
    for header in ("CRITERION", "VALUE", "THRESHOLD", "SAMPLES", "STATUS"):
        table.add_column(header, no_wrap=True)
    table.add_column("DETAIL", overflow="fold")
    for c in criteria:
        status = str(c.get("status", "?"))
        table.add_row(
            str(c.get("name")),
            criterion_value(c),
            criterion_threshold(c),
            text(c.get("samples")),
            f"[{STATUS_STYLE.get(status, '')}]{status}[/]",
            text(c.get("detail")),
        )
    return table


def _analysis(analysis: Mapping[str, Any] | None) -> RenderableType | None:
    from rich.console import Group
    from rich.text import Text

    if not analysis:
        return None
    verdict = str(analysis.get("verdict") or analysis.get("action") or "?")
    index = analysis.get("step_index")
    of_step = f"of step {index + 1} {analysis.get('step', '')}".rstrip() + " " if index is not None else ""
    line = Text.assemble(
        (f"latest analysis {of_step}", "bold"),
        (verdict, ACTION_STYLE.get(verdict, "")),
        f" at {when(analysis.get('at'))}: {analysis.get('reason', '')}",
    )
    return Group(line, render_criteria(analysis.get("criteria") or []))


def render_rollout(rollout: Mapping[str, Any], *, now: datetime | None = None) -> RenderableType:
    """``status``: the header, the steps with the current one marked, the current step's progress
    bars (``now`` times the step; the clock by default) and the latest analysis."""
    from rich.console import Group

    parts = [
        _header(rollout),
        _steps(rollout),
        _progress(rollout, now or datetime.now(UTC)),
        _analysis(rollout.get("analysis")),
    ]
    return Group(*(part for part in parts if part is not None))


def render_decisions(decisions: Sequence[Mapping[str, Any]]) -> RenderableType:
    """``explain``: each decision, oldest first, with the criteria behind it."""
    from rich.console import Group
    from rich.text import Text

    parts: list[RenderableType] = []
    for d in decisions:
        action = str(d.get("action", "?"))
        index = d.get("step_index")
        step = f"step {index + 1} {d.get('step', '')}".strip() if index is not None else "-"
        parts.append(
            Text.assemble(
                (f"#{d.get('seq')} {when(d.get('at'))}  {step}  ", "bold"),
                (action, ACTION_STYLE.get(action, "")),
                f" by {d.get('actor')}: {d.get('reason') or '-'}",
            )
        )
        if d.get("criteria"):
            parts.append(render_criteria(d["criteria"]))
        parts.append(Text(""))
    return Group(*parts)


def _print(renderable: RenderableType) -> None:
    output.console().print(renderable)


# ---- commands ----------------------------------------------------------------------------------


def load_spec(path: Path) -> Json:
    """A rollout spec from a YAML or JSON file; exit 2 when it does not parse to a mapping."""
    import yaml

    raw = read_text(path)
    try:
        spec = json.loads(raw) if path.suffix.lower() == ".json" else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as exc:
        fail(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}", USAGE)
    if not isinstance(spec, dict):
        fail(f"{path}: a rollout spec is a mapping (workflow:, target:, steps: …)", USAGE)
    return spec


@rollout_app.command("create")
def create_rollout(
    ctx: typer.Context,
    file: Annotated[Path, typer.Option("--file", "-f", help="The rollout spec, YAML or JSON.")],
) -> None:
    """Start a rollout from a spec file; prints its id and cohorts."""
    spec = load_spec(file)
    with connect(ctx) as api:
        rollout = api.create_rollout(spec)
    if json_output(ctx):
        output.emit_json(rollout)
        return
    typer.echo(
        f"created rollout {rollout.get('id')} of '{rollout.get('workflow')}' "
        f"(state {rollout.get('state')}, step {step_label(rollout)})"
    )
    for name, ids in (rollout.get("cohorts") or {}).items():
        typer.echo(f"  {name}: {len(ids)} device(s): {ids_text(ids)}")


@rollout_app.command("list")
def list_rollouts(
    ctx: typer.Context,
    state: Annotated[RolloutState | None, typer.Option(help="Only rollouts in this state.")] = None,
    workflow: Annotated[str | None, typer.Option(help="Only rollouts of this workflow.")] = None,
    all_pages: AllOption = False,
) -> None:
    """Rollouts, newest first as the control plane lists them."""
    with connect(ctx) as api:
        listing = api.list_rollouts(
            state=state.value if state else None, workflow=workflow, all_pages=all_pages
        )
    output.print_list(ctx, listing.items, LIST_COLUMNS, what="rollouts", more=listing.next_cursor is not None)


def watch(
    fetch: Callable[[], Json],
    show: Callable[[Json], None],
    *,
    interval: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Json:
    """Fetch and show the rollout every ``interval`` seconds until it is promoted or aborted;
    return the last document."""
    while True:
        rollout = fetch()
        show(rollout)
        if rollout.get("state") in FINAL_STATES:
            return rollout
        sleep(interval)


def _watch_exit(rollout: Mapping[str, Any]) -> int:
    return ROLLOUT_ABORTED if rollout.get("state") == "aborted" else OK


@rollout_app.command("status")
def rollout_status(
    ctx: typer.Context,
    rollout_id: IdArgument,
    watch_it: Annotated[
        bool, typer.Option("--watch", help="Refresh until promoted (exit 0) or aborted (exit 1).")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.5, help="Seconds between refreshes.")] = 5.0,
) -> None:
    """A rollout: its steps, the current step's progress and the latest analysis."""
    with connect(ctx) as api:
        if not watch_it:
            rollout = api.get_rollout(rollout_id)
            if json_output(ctx):
                output.emit_json(rollout)
            else:
                _print(render_rollout(rollout))
            return
        try:
            final = _watch(ctx, lambda: api.get_rollout(rollout_id), interval)
        except KeyboardInterrupt:
            typer.echo("stopped watching", err=True)
            raise typer.Exit(INTERRUPTED) from None
    raise typer.Exit(_watch_exit(final))


def _watch(ctx: typer.Context, fetch: Callable[[], Json], interval: float) -> Json:
    """``--watch``: a live view for people; for ``--output json`` only the final document."""
    if json_output(ctx):
        final = watch(fetch, lambda _rollout: None, interval=interval)
        output.emit_json(final)
        return final
    from rich.live import Live

    with Live(console=output.console(), auto_refresh=False) as live:
        return watch(fetch, lambda r: live.update(render_rollout(r), refresh=True), interval=interval)


def _acted(ctx: typer.Context, verb: str, rollout: Json) -> None:
    if json_output(ctx):
        output.emit_json(rollout)
        return
    state = rollout.get("state")
    where = "" if state in FINAL_STATES else f", step {step_label(rollout)}"
    typer.echo(f"{verb} rollout {rollout.get('id')}: now {state}{where}")


@rollout_app.command("pause")
def pause_rollout(ctx: typer.Context, rollout_id: IdArgument, reason: ReasonOption = None) -> None:
    """Hold the rollout at its current step: devices keep what they run, no step changes."""
    with connect(ctx) as api:
        rollout = api.pause_rollout(rollout_id, reason)
    _acted(ctx, "paused", rollout)


@rollout_app.command("resume")
def resume_rollout(ctx: typer.Context, rollout_id: IdArgument, reason: ReasonOption = None) -> None:
    """Let a paused rollout go on; on a pause step this approves it and moves to the next step."""
    with connect(ctx) as api:
        rollout = api.resume_rollout(rollout_id, reason)
    _acted(ctx, "resumed", rollout)


@rollout_app.command("promote")
def promote_rollout(ctx: typer.Context, rollout_id: IdArgument, reason: ReasonOption = None) -> None:
    """End the current step now, without waiting for its analysis (after the last: promoted)."""
    with connect(ctx) as api:
        rollout = api.promote_rollout(rollout_id, reason)
    _acted(ctx, "promoted", rollout)


@rollout_app.command("abort")
def abort_rollout(
    ctx: typer.Context,
    rollout_id: IdArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why (required; kept in the audit log).")],
) -> None:
    """Stop the rollout: every device of the target goes back to its baseline bundle."""
    if not reason.strip():
        fail("--reason must say why the rollout is aborted", USAGE)
    with connect(ctx) as api:
        rollout = api.abort_rollout(rollout_id, reason)
    _acted(ctx, "aborted", rollout)


@rollout_app.command("explain")
def explain_rollout(ctx: typer.Context, rollout_id: IdArgument) -> None:
    """Every decision, oldest first: when, step, action, actor, reason and the criteria behind it."""
    with connect(ctx) as api:
        decisions = api.rollout_decisions(rollout_id)
    if json_output(ctx):
        output.emit_json(decisions)
    elif not decisions:
        typer.echo(f"no decisions for rollout {rollout_id}", err=True)
    else:
        _print(render_decisions(decisions))
