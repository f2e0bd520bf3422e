"""Which devices a rollout's target names, now: active devices only, resolved on every use, so a
device that joins the group (or gets the selector's labels) mid-rollout takes part from then on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controlplane.fleet import in_group
from controlplane.store.schema import devices, groups


def target_devices(conn: Connection, target: Mapping[str, Any]) -> list[str]:
    """Sorted ids of the active devices ``target`` (``{"group"|"selector"|"devices": …}``) names;
    a group that no longer exists names none."""
    active = conn.execute(sa.select(devices.c.id, devices.c.labels).where(devices.c.status == "active")).all()
    if "devices" in target:
        wanted = set(target["devices"])
        return sorted(row.id for row in active if row.id in wanted)
    if "group" in target:
        group = conn.execute(sa.select(groups).where(groups.c.name == target["group"])).mappings().first()
        if group is None:
            return []
        return sorted(row.id for row in active if in_group(group, row.id, row.labels or {}))
    selector: Mapping[str, str] = target.get("selector") or {}
    return sorted(
        row.id for row in active if all((row.labels or {}).get(k) == v for k, v in selector.items())
    )


def describe(target: Mapping[str, Any]) -> str:
    """``group 'line-1'``, ``selector line=1``, ``devices cam-1, cam-2``: for messages."""
    if "group" in target:
        return f"group '{target['group']}'"
    if "selector" in target:
        return "selector " + ", ".join(f"{k}={v}" for k, v in sorted(target["selector"].items()))
    return "devices " + ", ".join(target.get("devices", []))
