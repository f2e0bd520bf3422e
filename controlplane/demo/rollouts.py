"""The rollout REST API as an operator script uses it (docs/rollouts.md, "REST").

:class:`Rollouts` creates a rollout, reads it back and lists its decisions; :func:`follow` polls
one until it is ``promoted`` or ``aborted``, handing every new decision and every fresh read of the
rollout to callbacks (the demo prints them). Only the documented JSON shapes are relied on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from controlplane.client import ApiError, ControlPlaneClient
from controlplane.demo.errors import FleetTimeout, RolloutsUnavailable

__all__ = ["FINAL_STATES", "Rollouts", "follow"]

Json = dict[str, Any]
FINAL_STATES = ("promoted", "aborted")
PATH = "/api/v1/rollouts"


class Rollouts:
    """``/api/v1/rollouts`` through an operator's :class:`ControlPlaneClient`."""

    def __init__(self, api: ControlPlaneClient) -> None:
        self.api = api

    def available(self) -> bool:
        """Whether the control plane serves the rollout API (a list request is not 404/405)."""
        try:
            self.api.request("GET", PATH, params={"limit": 1})
        except ApiError as exc:
            if exc.status in (404, 405):
                return False
            raise
        return True

    def require(self) -> None:
        """:class:`RolloutsUnavailable` unless :meth:`available`."""
        if not self.available():
            raise RolloutsUnavailable(
                f"the control plane at {self.api.url} has no rollout API ({PATH} answers 404)"
            )

    def create(self, spec: Mapping[str, Any]) -> Json:
        """``POST /api/v1/rollouts`` with a JSON spec → the rollout (201)."""
        body: Json = self.api.request("POST", PATH, json=dict(spec)).json()
        return body

    def get(self, rollout_id: str) -> Json:
        body: Json = self.api.request("GET", f"{PATH}/{rollout_id}").json()
        return body

    def decisions(self, rollout_id: str) -> list[Json]:
        """Every decision, oldest first (a bare list, or a page's ``items``)."""
        body = self.api.request("GET", f"{PATH}/{rollout_id}/decisions").json()
        items = body.get("items", []) if isinstance(body, dict) else body
        return [item for item in items if isinstance(item, dict)]


def follow(
    rollouts: Rollouts,
    rollout_id: str,
    *,
    timeout_s: float,
    poll_s: float = 1.0,
    on_update: Callable[[Json], None] | None = None,
    on_decision: Callable[[Json], None] | None = None,
) -> tuple[Json, list[Json]]:
    """Poll the rollout until its state is final; returns it and all its decisions.
    :class:`FleetTimeout` (with the last state and analysis) when ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    seen = 0
    while True:
        rollout = rollouts.get(rollout_id)
        decisions = rollouts.decisions(rollout_id)
        for decision in decisions[seen:]:
            if on_decision is not None:
                on_decision(decision)
        seen = len(decisions)
        if on_update is not None:
            on_update(rollout)
        if rollout.get("state") in FINAL_STATES:
            return rollout, decisions
        if time.monotonic() > deadline:
            reason = (rollout.get("analysis") or {}).get("reason", "no analysis yet")
            raise FleetTimeout(
                f"rollout {rollout_id} still {rollout.get('state')} at step "
                f"{rollout.get('step_index')} after {timeout_s:.0f}s: {reason}"
            )
        time.sleep(poll_s)
