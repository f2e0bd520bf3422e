"""Fleet membership: which groups a device is in (static lists and label selectors)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controlplane.store.schema import groups


def in_group(group: Mapping[Any, Any], device_id: str, labels: Mapping[str, str]) -> bool:
    if group["members"] is not None:
        return device_id in group["members"]
    selector: Mapping[str, str] = group["selector"] or {}
    return all(labels.get(key) == value for key, value in selector.items())


def groups_of(conn: Connection, device_id: str, labels: Mapping[str, str]) -> list[str]:
    rows = conn.execute(sa.select(groups).order_by(groups.c.name)).mappings()
    return [row["name"] for row in rows if in_group(row, device_id, labels)]
