"""The audit log: every mutation, append-only and hash-chained.

Each entry records who (``actor``), what (``action`` on ``resource``), when, and the sha256
digests of the resource before and after. Entry *n* stores ``prev_hash`` = hash of entry *n-1*
and ``hash`` = sha256 over its own canonical JSON (which includes ``prev_hash``); the
``audit_head`` row holds the last sequence number and hash. ``append`` runs inside the
mutation's own transaction, so a change and its audit entry commit together or not at all;
it locks the head row, so entries are written one at a time across replicas.

``verify`` recomputes the chain: an edited row breaks its hash, a deleted row leaves a gap in
the sequence or a ``prev_hash`` that no longer matches, a deleted tail disagrees with the head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controlplane.store import as_utc, utcnow
from controlplane.store.schema import audit_head, audit_log

GENESIS = "0" * 64


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        # SQLite hands back naive UTC datetimes, PostgreSQL aware ones: digest them alike.
        return as_utc(value).isoformat()  # type: ignore[union-attr]
    return str(value)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, datetimes as UTC ISO-8601: equal data gives equal bytes."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
    ).encode()


def digest(value: Any) -> str | None:
    """sha256 of a resource's canonical JSON; ``None`` for a resource that does not exist."""
    return None if value is None else hashlib.sha256(canonical_json(value)).hexdigest()


def _entry_hash(row: Mapping[Any, Any]) -> str:
    at = as_utc(row["at"])
    assert at is not None
    body = {
        "seq": row["seq"],
        "at": at.isoformat(),
        "actor": row["actor"],
        "action": row["action"],
        "resource": row["resource"],
        "before_digest": row["before_digest"],
        "after_digest": row["after_digest"],
        "details": row["details"],
        "prev_hash": row["prev_hash"],
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


def append(
    conn: Connection,
    *,
    actor: str,
    action: str,
    resource: str,
    before: Any = None,
    after: Any = None,
    details: Mapping[Any, Any] | None = None,
) -> int:
    """Add one entry in ``conn``'s transaction; returns its sequence number."""
    head = conn.execute(
        sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
    ).one()
    row: dict[str, Any] = {
        "seq": head.seq + 1,
        "at": utcnow(),
        "actor": actor,
        "action": action,
        "resource": resource,
        "before_digest": digest(before),
        "after_digest": digest(after),
        "details": dict(details or {}),
        "prev_hash": head.hash,
    }
    row["hash"] = _entry_hash(row)
    conn.execute(audit_log.insert().values(**row))
    conn.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=row["seq"], hash=row["hash"]))
    return int(row["seq"])


def entry_dict(row: Mapping[Any, Any]) -> dict[str, Any]:
    data = dict(row)
    at = as_utc(data["at"])
    data["at"] = at.isoformat() if isinstance(at, datetime) else at
    return data


@dataclass
class VerifyReport:
    entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _rows(conn: Connection, batch: int = 1000) -> Iterator[Mapping[Any, Any]]:
    last = -1
    while True:
        rows = (
            conn.execute(
                sa.select(audit_log).where(audit_log.c.seq > last).order_by(audit_log.c.seq).limit(batch)
            )
            .mappings()
            .all()
        )
        if not rows:
            return
        yield from rows
        last = rows[-1]["seq"]


def verify(conn: Connection) -> VerifyReport:
    """Walk the whole chain; every break found is reported by sequence number."""
    report = VerifyReport()
    expected_seq, prev_hash = 1, GENESIS
    for row in _rows(conn):
        report.entries += 1
        seq = row["seq"]
        if seq != expected_seq:
            report.problems.append(f"entries {expected_seq}..{seq - 1} are missing (deleted)")
        if row["prev_hash"] != prev_hash:
            report.problems.append(f"entry {seq}: prev_hash does not match entry {seq - 1}'s hash")
        if _entry_hash(row) != row["hash"]:
            report.problems.append(f"entry {seq}: contents do not match its hash (edited)")
        expected_seq, prev_hash = seq + 1, row["hash"]
    head = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
    if head.seq != expected_seq - 1 or head.hash != prev_hash:
        report.problems.append(
            f"the head says the last entry is {head.seq}, the log ends at {expected_seq - 1} (tail deleted)"
        )
    return report
