"""How ``edgefleet rollout …`` shows rollouts: plain-text labels, the list's columns and rich
renderables of one rollout (header, steps, progress, analysis) and of its decisions. Nothing
here does I/O, so tests feed these functions recorded API documents."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from controlplane.commands import output
from controlplane.commands.output import field, text, when

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

STATUS_STYLE = {"pass": "green", "fail": "bold red", "insufficient": "yellow"}
STATE_STYLE = {"running": "cyan", "paused": "yellow", "promoted": "green", "aborted": "bold red"}
ACTION_STYLE = {"promote": "green", "abort": "bold red", "pause": "yellow", "resume": "cyan", "start": "cyan"}
MAX_IDS = 10
FINAL_STATES = ("promoted", "aborted")


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
