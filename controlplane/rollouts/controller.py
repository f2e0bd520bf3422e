"""The rollout state machine, persisted: every state lives in the ``rollouts`` row, so a new
controller (after a restart, or on another replica) continues where the last one stopped.

States: ``running`` → (``paused`` ⇄ ``running``)* → ``promoted`` | ``aborted``. :meth:`tick`
analyses the current step of every running rollout and promotes it to the next step, aborts it,
or stores the analysis and waits; a ``pause`` step pauses the rollout until ``resume`` (or
``promote``). :meth:`act` applies an operator's ``pause``, ``resume``, ``promote`` or ``abort``.

Each transition, in one transaction: the row (under its row lock), a decision with the criteria
behind it, an audit entry, and the recomputed desired states of the target's devices, which are
published after the commit. Leaving the last step promotes the rollout and writes the candidate
as the target's assignment (``promotion``); an abort leaves the assignments as they were, so
every device goes back to its baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.engine import Connection

from controlplane import audit
from controlplane.rollouts import promotion, store
from controlplane.rollouts.errors import RolloutConflict, SpecInvalid
from controlplane.rollouts.observe import analyse
from controlplane.rollouts.plan import active_rollout
from controlplane.rollouts.spec import StepSpec
from controlplane.rollouts.targets import target_devices
from controlplane.store import Database, utcnow

log = logging.getLogger("edgefleet.controlplane.rollouts")

Clock = Callable[[], datetime]
Refresh = Callable[[Connection, Iterable[str]], list[str]]
"""Recompute the desired states of some devices in the transaction; returns those that changed."""
Publish = Callable[[Iterable[str]], None]
"""After the commit: publish the changed desired states."""
Action = Literal["pause", "resume", "promote", "abort"]

CONTROLLER = "controller"
"""The ``actor`` of the controller's own decisions."""
AUDIT_ACTOR = "system:rollout-controller"
"""How the audit log names the controller."""


@dataclass(frozen=True)
class Outcome:
    """What one tick did to one rollout: ``wait``, ``promote``, ``abort`` or ``pause``."""

    rollout_id: str
    action: str
    state: str
    step_index: int
    reason: str


class RolloutController:
    """Drives rollouts; safe to use from several threads and processes (row locks), but only one
    process should :meth:`tick` at a time (``controlplane.rollouts.leader``)."""

    def __init__(self, db: Database, *, refresh: Refresh, publish: Publish, clock: Clock = utcnow) -> None:
        self._db = db
        self._refresh = refresh
        self._publish = publish
        self._clock = clock

    # ---- the automatic part ----------------------------------------------------------------

    def tick(self) -> list[Outcome]:
        """Analyse the current step of every running rollout and act on the verdict. A rollout
        that fails to tick is logged and skipped; the others still tick."""
        with self._db.read() as conn:
            ids = store.running_ids(conn)
        outcomes = []
        for rollout_id in ids:
            try:
                outcome = self._tick_one(rollout_id)
            except Exception:
                log.exception("rollout %s: tick failed", rollout_id)
                continue
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _tick_one(self, rollout_id: str) -> Outcome | None:
        changed: list[str] = []
        with self._db.write() as conn:
            row = store.load(conn, rollout_id, lock=True)
            if row["state"] != "running":
                return None
            now = self._clock()
            steps = store.steps_of(row)
            step = steps[row["step_index"]]
            if step.kind == "pause":
                row = self._enter_pause(conn, row, steps, now)
                return Outcome(rollout_id, "pause", row["state"], row["step_index"], row["paused_reason"])
            active = active_rollout(conn, row)
            verdict, analysis = analyse(conn, row, step, active.cohorts, now)
            criteria = analysis["criteria"]
            if verdict.action == "wait":
                store.save_analysis(conn, rollout_id, analysis)
                return Outcome(rollout_id, "wait", row["state"], row["step_index"], verdict.reason)
            if verdict.action == "abort":
                row = self._abort(
                    conn, row, steps, now, CONTROLLER, AUDIT_ACTOR, verdict.reason, criteria, analysis
                )
            else:
                row = self._advance(
                    conn, row, steps, now, CONTROLLER, AUDIT_ACTOR, verdict.reason, criteria, analysis
                )
            changed = self._refresh(conn, active.cohorts.devices)
        self._publish(changed)
        return Outcome(rollout_id, verdict.action, row["state"], row["step_index"], verdict.reason)

    # ---- operators -------------------------------------------------------------------------

    def act(
        self, rollout_id: str, action: Action, *, actor: str, reason: str | None = None
    ) -> dict[str, Any]:
        """Apply an operator's action; returns the rollout's row as it now is.

        ``pause``: a running rollout stops moving (its devices keep what they run). ``resume``: a
        paused rollout runs again; on a ``pause`` step that is the approval, so it also promotes
        to the next step. ``promote``: go to the next step now (after the last: ``promoted``).
        ``abort``: every device back on its baseline; ``reason`` is required. Raises
        :class:`RolloutNotFound`, :class:`SpecInvalid` (abort without a reason) or
        :class:`RolloutConflict` (an action the state does not allow)."""
        if action == "abort" and not (reason and reason.strip()):
            raise SpecInvalid([{"field": "body.reason", "message": "abort needs a reason: say why it stops"}])
        with self._db.write() as conn:
            row = store.load(conn, rollout_id, lock=True)
            now = self._clock()
            steps = store.steps_of(row)
            _check_allowed(row, action)
            criteria = _latest_criteria(row)
            text = reason.strip() if reason and reason.strip() else f"{action} by {actor}"
            if action == "pause":
                row = self._transition(
                    conn,
                    row,
                    steps,
                    now,
                    action="pause",
                    actor=actor,
                    audit_actor=actor,
                    reason=text,
                    criteria=criteria,
                    values={"state": "paused", "paused_reason": text},
                )
            elif action == "abort":
                row = self._abort(conn, row, steps, now, actor, actor, text, criteria, None)
            elif action == "resume":
                on_pause_step = steps[row["step_index"]].kind == "pause"
                row = self._transition(
                    conn,
                    row,
                    steps,
                    now,
                    action="resume",
                    actor=actor,
                    audit_actor=actor,
                    reason=text,
                    criteria=criteria,
                    values={"state": "running", "paused_reason": None},
                )
                if on_pause_step:
                    row = self._advance(
                        conn, row, steps, now, actor, actor, f"approved: {text}", criteria, None
                    )
            else:
                row = self._advance(conn, row, steps, now, actor, actor, text, criteria, None)
            changed = self._refresh(conn, target_devices(conn, row["target"]))
        self._publish(changed)
        return row

    # ---- transitions -----------------------------------------------------------------------

    def _transition(
        self,
        conn: Connection,
        row: Mapping[str, Any],
        steps: Sequence[StepSpec],
        now: datetime,
        *,
        action: str,
        actor: str,
        audit_actor: str,
        reason: str,
        criteria: Sequence[Mapping[str, Any]],
        values: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Update the row, store the decision (on the step it decides about) and audit it."""
        index = row["step_index"]
        after = store.update(conn, row, now, **values)
        decision = store.add_decision(
            conn,
            row["id"],
            at=now,
            step_index=index,
            step=steps[index].kind,
            action=action,
            actor=actor,
            reason=reason,
            criteria=criteria,
        )
        audit.append(
            conn,
            actor=audit_actor,
            action=f"rollout.{action}",
            resource=f"rollouts/{row['id']}",
            before={"state": row["state"], "step_index": index},
            after={"state": after["state"], "step_index": after["step_index"]},
            details={
                "decision": decision["seq"],
                "step": steps[index].kind,
                "reason": decision["reason"],
                "criteria": decision["criteria"],
            },
        )
        return after

    def _enter_pause(
        self, conn: Connection, row: Mapping[str, Any], steps: Sequence[StepSpec], now: datetime
    ) -> dict[str, Any]:
        reason = f"waiting for approval: step {row['step_index'] + 1} is a pause (resume or promote to go on)"
        return self._transition(
            conn,
            row,
            steps,
            now,
            action="pause",
            actor=CONTROLLER,
            audit_actor=AUDIT_ACTOR,
            reason=reason,
            criteria=(),
            values={"state": "paused", "paused_reason": reason},
        )

    def _abort(
        self,
        conn: Connection,
        row: Mapping[str, Any],
        steps: Sequence[StepSpec],
        now: datetime,
        actor: str,
        audit_actor: str,
        reason: str,
        criteria: Sequence[Mapping[str, Any]],
        analysis: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        values: dict[str, Any] = {
            "state": "aborted",
            "finished_at": now,
            "reason": reason[:2048],
            "paused_reason": None,
        }
        if analysis is not None:
            values["analysis"] = dict(analysis)
        return self._transition(
            conn,
            row,
            steps,
            now,
            action="abort",
            actor=actor,
            audit_actor=audit_actor,
            reason=reason,
            criteria=criteria,
            values=values,
        )

    def _advance(
        self,
        conn: Connection,
        row: Mapping[str, Any],
        steps: Sequence[StepSpec],
        now: datetime,
        actor: str,
        audit_actor: str,
        reason: str,
        criteria: Sequence[Mapping[str, Any]],
        analysis: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Promote to the next step (pausing at once when it is a pause), or past the last step:
        ``promoted``, with the candidate assigned to the target for good."""
        following = row["step_index"] + 1
        values: dict[str, Any] = {"paused_reason": None}
        if analysis is not None:
            values["analysis"] = dict(analysis)
        if following >= len(steps):
            values.update(state="promoted", finished_at=now, reason=reason[:2048])
            row = self._transition(
                conn,
                row,
                steps,
                now,
                action="promote",
                actor=actor,
                audit_actor=audit_actor,
                reason=f"{reason}; rollout promoted",
                criteria=criteria,
                values=values,
            )
            promotion.assign_candidate(
                conn, row, target_devices(conn, row["target"]), actor=audit_actor, now=now
            )
            return row
        values.update(state="running", step_index=following, step_started_at=now)
        row = self._transition(
            conn,
            row,
            steps,
            now,
            action="promote",
            actor=actor,
            audit_actor=audit_actor,
            reason=f"{reason}; on to step {following + 1} ({steps[following].kind})",
            criteria=criteria,
            values=values,
        )
        if steps[following].kind == "pause":
            row = self._enter_pause(conn, row, steps, now)
        return row


_ALLOWED: dict[str, tuple[str, ...]] = {
    "pause": ("running",),
    "resume": ("paused",),
    "promote": ("running", "paused"),
    "abort": ("running", "paused"),
}


def _check_allowed(row: Mapping[str, Any], action: str) -> None:
    state = row["state"]
    if state not in _ALLOWED[action]:
        allowed = " or ".join(_ALLOWED[action])
        raise RolloutConflict(f"rollout {row['id']} is {state}: {action} applies only to a {allowed} rollout")


def _latest_criteria(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The criteria of the latest analysis when it is of the current step (context for a manual
    decision), else none."""
    analysis = row.get("analysis") or {}
    if analysis.get("step_index") != row["step_index"]:
        return []
    return list(analysis.get("criteria") or [])
