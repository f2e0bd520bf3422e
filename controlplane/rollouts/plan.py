"""What each device runs while rollouts are active: read by ``controlplane.desired``.

:func:`load_active` resolves every running or paused rollout once (its target's devices now and
the cohorts of its current step); :meth:`ActiveRollout.placement` then says, per device, whether
it runs the baseline, the baseline with the candidate in shadow, or the candidate
(docs/rollouts.md, "Desired state during a rollout").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from controlplane.rollouts import store
from controlplane.rollouts.cohorts import Cohorts, Placement, cohorts_at
from controlplane.rollouts.targets import target_devices


@dataclass(frozen=True)
class ActiveRollout:
    id: str
    workflow: str
    bundle: Mapping[str, Any]
    bundle_bytes: bytes
    bundle_manifest: bytes
    cohorts: Cohorts

    def placement(self, device_id: str) -> Placement | None:
        """What ``device_id`` runs of this rollout's workflow; None outside the target."""
        return self.cohorts.placement(device_id)


def active_rollout(conn: Connection, row: Mapping[str, Any]) -> ActiveRollout:
    devices = target_devices(conn, row["target"])
    return ActiveRollout(
        id=row["id"],
        workflow=row["workflow"],
        bundle=row["bundle"],
        bundle_bytes=bytes(row["bundle_bytes"]),
        bundle_manifest=bytes(row["bundle_manifest"]),
        cohorts=cohorts_at(row["id"], devices, store.steps_of(row), row["step_index"]),
    )


def load_active(conn: Connection) -> list[ActiveRollout]:
    """Every running or paused rollout, resolved against the fleet as it is now."""
    return [active_rollout(conn, row) for row in store.active(conn)]
