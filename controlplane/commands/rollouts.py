"""``edgefleet rollout …``: start, watch, steer and explain canary rollouts (docs/rollouts.md).

What it shows, and how, is in :mod:`controlplane.commands.rollout_views`. ``status --watch``
exits :data:`OK` when the rollout is promoted and :data:`ROLLOUT_ABORTED` when it is aborted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from controlplane.commands import output
from controlplane.commands.rollout_views import (
    FINAL_STATES,
    LIST_COLUMNS,
    ids_text,
    render_decisions,
    render_rollout,
    step_label,
)
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

rollout_app = typer.Typer(help="Canary rollouts of a workflow bundle to a target.", no_args_is_help=True)

Json = dict[str, Any]
ROLLOUT_ABORTED = PROBLEM_FOUND
"""``status --watch``: the rollout ended aborted."""
INTERRUPTED = 130
"""``status --watch`` stopped with Ctrl-C."""


class RolloutState(StrEnum):
    running = "running"
    paused = "paused"
    promoted = "promoted"
    aborted = "aborted"


IdArgument = Annotated[str, typer.Argument(metavar="ID", help="The rollout id (r-…).")]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why, for the audit log.")]
AllOption = Annotated[bool, typer.Option("--all", help="Every page, not only the first.")]


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
