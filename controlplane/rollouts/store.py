"""The ``rollouts`` and ``rollout_decisions`` rows: loading, locking, updating, and decisions.

Every change goes through :func:`update`, which bumps ``revision`` (the row's ETag) and
``updated_at``. :func:`load` with ``lock=True`` takes the row lock (``SELECT … FOR UPDATE`` on
PostgreSQL; SQLite's write transactions are serialised already), so the controller and the REST
actions never act on a stale state.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controlplane.rollouts.errors import RolloutNotFound
from controlplane.rollouts.spec import StepSpec
from controlplane.store.schema import rollout_decisions, rollouts

ACTIVE_STATES = ("running", "paused")
FINAL_STATES = ("promoted", "aborted")
ID_PATTERN = r"^r-[0-9a-f]{10}$"


def new_id() -> str:
    return "r-" + secrets.token_hex(5)


def load(conn: Connection, rollout_id: str, *, lock: bool = False) -> Mapping[str, Any]:
    """The rollout's row; :class:`RolloutNotFound` if there is none."""
    query = sa.select(rollouts).where(rollouts.c.id == rollout_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise RolloutNotFound(rollout_id)
    return dict(row)


def active(conn: Connection, workflow: str | None = None) -> list[Mapping[str, Any]]:
    """Running and paused rollouts (of ``workflow``, when given), oldest first."""
    query = sa.select(rollouts).where(rollouts.c.state.in_(ACTIVE_STATES))
    if workflow is not None:
        query = query.where(rollouts.c.workflow == workflow)
    return [
        dict(row) for row in conn.execute(query.order_by(rollouts.c.created_at, rollouts.c.id)).mappings()
    ]


def running_ids(conn: Connection) -> list[str]:
    query = sa.select(rollouts.c.id).where(rollouts.c.state == "running").order_by(rollouts.c.created_at)
    return list(conn.execute(query).scalars())


def steps_of(row: Mapping[str, Any]) -> list[StepSpec]:
    """The stored spec's steps (validated when the rollout was created)."""
    return [StepSpec.model_validate(step) for step in row["spec"]["steps"]]


def update(conn: Connection, row: Mapping[str, Any], now: datetime, **values: Any) -> dict[str, Any]:
    """Apply ``values`` to the rollout, bump its revision; returns the row as it now is."""
    values = {**values, "updated_at": now, "revision": row["revision"] + 1}
    conn.execute(rollouts.update().where(rollouts.c.id == row["id"]).values(**values))
    return {**row, **values}


def add_decision(
    conn: Connection,
    rollout_id: str,
    *,
    at: datetime,
    step_index: int,
    step: str,
    action: str,
    actor: str,
    reason: str,
    criteria: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Append the rollout's next decision (the caller holds the rollout's row lock)."""
    last = conn.execute(
        sa.select(sa.func.max(rollout_decisions.c.seq)).where(rollout_decisions.c.rollout_id == rollout_id)
    ).scalar()
    row = {
        "rollout_id": rollout_id,
        "seq": int(last or 0) + 1,
        "at": at,
        "step_index": step_index,
        "step": step,
        "action": action,
        "actor": actor,
        "reason": reason[:2048],
        "criteria": [dict(c) for c in criteria],
    }
    conn.execute(rollout_decisions.insert().values(**row))
    return row


def save_analysis(conn: Connection, rollout_id: str, analysis: Mapping[str, Any]) -> None:
    """Store the latest analysis (a ``wait``) for status; the revision stays, since nothing an
    operator acts on changed."""
    conn.execute(rollouts.update().where(rollouts.c.id == rollout_id).values(analysis=dict(analysis)))
