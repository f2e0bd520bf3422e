"""What the demo shows: rich renderables of the fleet and of a rollout, built from the REST
API's JSON (docs/rollouts.md) and :class:`controlplane.demo.fleet.DeviceView`. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from controlplane.commands.rollout_views import STATUS_STYLE, criterion_value
from controlplane.demo.fleet import DeviceView

__all__ = [
    "criteria_line",
    "decision_line",
    "decisions_table",
    "devices_table",
    "progress_line",
    "rollout_panel",
]

Json = dict[str, Any]
ACTION_STYLE = {"promote": "green", "abort": "bold red", "start": "cyan", "pause": "yellow", "resume": "cyan"}


def devices_table(views: Sequence[DeviceView], models: Mapping[str, str]) -> Table:
    """One row per device: phase, workflow version, model (by the name ``models`` gives its
    sha256), rollout role."""
    table = Table("device", "online", "phase", "workflow", "model", "rollout role", box=None, pad_edge=False)
    for view in views:
        model = models.get(view.model_sha256, view.model_sha256[:12] or "—")
        role = view.role + (f" (+shadow v{view.shadow_version})" if view.shadow_version else "")
        table.add_row(
            view.device_id,
            {True: "yes", False: "no", None: "—"}[view.online],
            view.phase,
            f"v{view.workflow_version}" if view.workflow_version else "—",
            model,
            role or "—",
        )
    return table


def criteria_line(criteria: Sequence[Mapping[str, Any]]) -> Text:
    """``error_rate 0 ≤ 0.02 ✓ · defect_rate_shift −13.2 pt |x| ≤ 5 ✗ …`` coloured by status."""
    text = Text()
    for i, criterion in enumerate(criteria):
        if i:
            text.append(" · ", style="dim")
        status = str(criterion.get("status", ""))
        mark = {"pass": "✓", "fail": "✗", "insufficient": "…"}.get(status, "?")
        comparison = str(criterion.get("comparison", "")).replace("<=", "≤").replace(">=", "≥")
        text.append(
            f"{criterion.get('name')} {criterion_value(criterion)} {comparison} "
            f"{criterion.get('threshold'):g} "
            f"(n={criterion.get('samples', 0)}) {mark}",
            style=STATUS_STYLE.get(status, ""),
        )
    return text


def _cohort_size(step: Mapping[str, Any]) -> str:
    if step.get("devices"):
        return f"{step['devices']} stations"
    if step.get("percent"):
        return f"{float(step['percent']):g} %"
    return "every station" if step.get("kind") == "full" else "—"


def progress_line(label: str, rollout: Json) -> str:
    """The rollout in one line: ``v2 running step 2/3 canary (33 %): on candidate 2/2, samples
    candidate 80 / baseline 240 (min 160): waiting for …``."""
    step = rollout.get("step") or {}
    progress = rollout.get("progress") or {}
    steps = len((rollout.get("spec") or {}).get("steps") or [])
    wanted = step.get("min_samples")
    reason = (rollout.get("analysis") or {}).get("reason", "no analysis yet")
    return (
        f"{label} {rollout.get('state')} step {int(rollout.get('step_index') or 0) + 1}/{steps or '?'} "
        f"{step.get('kind', '—')} ({_cohort_size(step)}): on candidate "
        f"{progress.get('devices_on_candidate', 0)}/{progress.get('devices_total', 0)}, samples candidate "
        f"{progress.get('candidate_samples', 0)} / baseline {progress.get('baseline_samples', 0)}"
        + (f" (min {wanted})" if wanted else "")
        + f": {reason}"
    )


def rollout_panel(label: str, rollout: Json) -> Group:
    """The rollout now: state, step, cohorts, samples and the latest analysis."""
    spec_steps = (rollout.get("spec") or {}).get("steps") or []
    step = rollout.get("step") or {}
    progress = rollout.get("progress") or {}
    analysis = rollout.get("analysis") or {}
    cohorts = rollout.get("cohorts") or {}
    index = int(rollout.get("step_index") or 0)
    head = Text.assemble(
        (f"{label} ", "bold"),
        (f"{rollout.get('id')} ", "dim"),
        (f"{rollout.get('state')}", "bold"),
        f" — step {index + 1}/{len(spec_steps) or '?'} ",
        (str(step.get("kind", "—")), "bold cyan"),
    )
    wanted = step.get("min_samples")
    members = ", ".join(cohorts.get(step.get("kind", ""), []) or []) or "—"
    body = Text(
        f"  cohort {_cohort_size(step)}: {members}"
        f"  ·  on candidate {progress.get('devices_on_candidate', 0)}/{progress.get('devices_total', 0)}"
        f"  ·  samples candidate {progress.get('candidate_samples', 0)}, "
        f"baseline {progress.get('baseline_samples', 0)}"
        + (f" (min {wanted})" if wanted else "")
        + (f"  ·  {step.get('duration_s'):g} s step" if step.get("duration_s") else "")
    )
    verdict = (
        Text.assemble(
            "  analysis: ",
            (str(analysis["verdict"]), ACTION_STYLE.get(str(analysis["verdict"]), "yellow")),
            f" — {analysis.get('reason', '')}",
        )
        if analysis.get("verdict")
        else Text("  analysis: none yet (the controller analyses the step at its next tick)")
    )
    parts: list[Any] = [head, body, verdict]
    if analysis.get("criteria"):
        parts.append(Text("  ") + criteria_line(analysis["criteria"]))
    return Group(*parts)


def decision_line(label: str, decision: Json) -> Text:
    """One decision as it happens: ``v2 #3 canary promote (controller): all 5 criteria pass …``."""
    action = str(decision.get("action"))
    return Text.assemble(
        (f"{label} ", "bold"),
        (f"#{decision.get('seq')} ", "dim"),
        f"{decision.get('step', '—')} ",
        (action, ACTION_STYLE.get(action, "")),
        f" ({decision.get('actor', '—')}): {decision.get('reason') or ''}",
    )


def decisions_table(rollouts: Sequence[tuple[str, Json, Sequence[Json]]]) -> Table:
    """Every decision of every rollout (label, rollout, its decisions), with its criteria."""
    table = Table("rollout", "#", "step", "action", "by", "reason and criteria", show_lines=True)
    for label, rollout, decisions in rollouts:
        for decision in decisions:
            action = str(decision.get("action"))
            reason = Text(str(decision.get("reason") or ""))
            if decision.get("criteria"):
                reason.append("\n")
                reason.append_text(criteria_line(decision["criteria"]))
            table.add_row(
                f"{label}\n{rollout.get('id')}",
                str(decision.get("seq")),
                str(decision.get("step", "—")),
                Text(action, style=ACTION_STYLE.get(action, "")),
                str(decision.get("actor", "—")),
                reason,
            )
    return table
