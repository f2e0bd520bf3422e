"""Storing what devices send: outbox records (telemetry, events), reported state, status.

Ingest is idempotent on (device id, sequence number): a record re-sent after a lost ack is
recognised and not counted twice, so re-delivery is always safe. Each record is applied in the
caller's transaction; the ranges returned are what the bridge acks to the device *after* the
commit, so an ack always means "stored".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from controlplane.store import utcnow
from controlplane.store.schema import devices, events, ingested_records, system_minutes, telemetry_minutes
from protos import sync_pb2

LINEAGE_FIELDS = (
    "workflow_version",
    "model_sha256",
    "threshold_set",
    "threshold_version",
    "rollout_id",
    "cohort",
)


def _time(ts: Any) -> datetime:
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC) if ts.seconds or ts.nanos else utcnow()


def _insert_ignore(conn: Connection, table: sa.Table, values: Mapping[str, Any]) -> bool:
    """Insert unless the primary key exists; True when inserted."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - the two supported databases
        raise NotImplementedError(dialect)
    # RETURNING, not rowcount: psycopg reports -1 for INSERT … ON CONFLICT DO NOTHING.
    key = next(iter(table.primary_key.columns))
    return conn.execute(statement.returning(key)).first() is not None


def _histogram(message: sync_pb2.Histogram) -> dict[str, Any]:
    return {
        "bounds": list(message.bounds),
        "counts": list(message.counts),
        "sum": message.sum,
        "count": message.count,
    }


def merge_histograms(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> dict[str, Any]:
    """Sum two histograms with the same bounds (different bounds: ``b`` wins — a device that
    changed its buckets starts a new series)."""
    if not a or a.get("bounds") != b.get("bounds") or len(a.get("counts", [])) != len(b.get("counts", [])):
        return dict(b)
    return {
        "bounds": list(b["bounds"]),
        "counts": [x + y for x, y in zip(a["counts"], b["counts"], strict=True)],
        "sum": a["sum"] + b["sum"],
        "count": a["count"] + b["count"],
    }


def _merge_map(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(a)
    for key, value in b.items():
        merged[key] = merge_histograms(merged.get(key), value)
    return merged


def _lineage(message: sync_pb2.Lineage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in LINEAGE_FIELDS}


def _apply_telemetry(conn: Connection, device_id: str, record: sync_pb2.TelemetryRecord) -> None:
    minute = _time(record.window_end).replace(second=0, microsecond=0)
    for wf in record.workflows:
        lineage = _lineage(wf.lineage)
        key = {
            "device_id": device_id,
            "workflow_id": wf.workflow_id,
            "lineage": hashlib.sha256(json.dumps(lineage, sort_keys=True).encode()).hexdigest(),
            "minute": minute,
        }
        counts = {
            "runs": wf.runs,
            "passed": wf.passed,
            "failed": wf.failed,
            "errors": wf.errors,
            "skipped": wf.skipped,
            "dropped_frames": wf.dropped_frames,
            "shadow_compared": wf.shadow_compared,
            "shadow_agreed": wf.shadow_agreed,
            "shadow_scored": wf.shadow_scored,
            "shadow_score_drift_sum": wf.shadow_score_drift_sum,
        }
        latency = _histogram(wf.latency_ms)
        nodes = {k: _histogram(v) for k, v in wf.node_latency_ms.items()}
        models = {k: _histogram(v) for k, v in wf.model_latency_ms.items()}
        where = sa.and_(*(telemetry_minutes.c[k] == v for k, v in key.items()))
        row = conn.execute(sa.select(telemetry_minutes).where(where).with_for_update()).mappings().first()
        if row is None:
            conn.execute(
                telemetry_minutes.insert().values(
                    **key,
                    **lineage,
                    **counts,
                    latency_ms=latency,
                    node_latency_ms=nodes,
                    model_latency_ms=models,
                )
            )
        else:
            conn.execute(
                telemetry_minutes.update()
                .where(where)
                .values(
                    **{k: row[k] + v for k, v in counts.items()},
                    latency_ms=merge_histograms(row["latency_ms"], latency),
                    node_latency_ms=_merge_map(row["node_latency_ms"], nodes),
                    model_latency_ms=_merge_map(row["model_latency_ms"], models),
                )
            )
    if record.HasField("system"):
        metrics = json_format.MessageToDict(record.system, preserving_proto_field_name=True)
        metrics["outbox_dropped"] = record.outbox_dropped
        key = {"device_id": device_id, "minute": minute}
        if not _insert_ignore(conn, system_minutes, {**key, "metrics": metrics}):
            conn.execute(
                system_minutes.update()
                .where(system_minutes.c.device_id == device_id, system_minutes.c.minute == minute)
                .values(metrics=metrics)
            )


def _event_row(device_id: str, seq: int, event: sync_pb2.Event) -> dict[str, Any]:
    try:
        attributes = json.loads(event.attributes_json) if event.attributes_json else {}
    except ValueError:
        attributes = {"unparsed": event.attributes_json[:1000]}
    return {
        "device_id": device_id,
        "seq": seq,
        "at": _time(event.at),
        "kind": event.kind[:64] or "unknown",
        "severity": event.severity[:16] or "info",
        "workflow_id": event.workflow_id[:128],
        "run_id": event.run_id[:128],
        "message": event.message[:2048],
        "lineage": _lineage(event.lineage),
        "attributes": attributes if isinstance(attributes, dict) else {"value": attributes},
        "thumbnail": event.thumbnail_jpeg or None,
    }


def ingest_records(conn: Connection, device_id: str, records: Iterable[sync_pb2.Record]) -> list[int]:
    """Store the records not seen before; returns every seq of the batch (new or already stored).

    One query finds the seqs already stored, then the new ones go in with bulk inserts: a few
    statements per batch instead of a few per record. A record stored concurrently by another
    replica makes the insert fail and the transaction roll back; nothing is acked, the device sends
    again, and the next attempt finds it stored."""
    batch = [r for r in records if r.seq and r.WhichOneof("body") is not None]
    if not batch:
        return []
    seqs = sorted({r.seq for r in batch})
    stored: set[int] = set()
    for start in range(0, len(seqs), 1000):
        chunk = seqs[start : start + 1000]
        stored.update(
            conn.execute(
                sa.select(ingested_records.c.seq).where(
                    ingested_records.c.device_id == device_id, ingested_records.c.seq.in_(chunk)
                )
            ).scalars()
        )
    now = utcnow()
    fresh: dict[int, sync_pb2.Record] = {}
    for record in batch:
        if record.seq not in stored:
            fresh.setdefault(record.seq, record)
    if fresh:
        conn.execute(
            ingested_records.insert(),
            [
                {
                    "device_id": device_id,
                    "seq": seq,
                    "kind": record.WhichOneof("body"),
                    "created_at": _time(record.created_at),
                    "stored_at": now,
                }
                for seq, record in fresh.items()
            ],
        )
        event_rows = [_event_row(device_id, seq, r.event) for seq, r in fresh.items() if r.HasField("event")]
        if event_rows:
            conn.execute(events.insert(), event_rows)
        for record in fresh.values():
            if record.HasField("telemetry"):
                _apply_telemetry(conn, device_id, record.telemetry)
    return [record.seq for record in batch]


def ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 7, 8] → [(1, 3), (7, 8)]."""
    out: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def ingest_reported(conn: Connection, device_id: str, reported: sync_pb2.ReportedState) -> None:
    state = json_format.MessageToDict(reported, preserving_proto_field_name=True)
    now = utcnow()
    conn.execute(
        devices.update()
        .where(devices.c.id == device_id)
        .values(reported_state=state, reported_at=now, last_seen_at=now)
    )


def ingest_status(conn: Connection, device_id: str, status: sync_pb2.Status) -> None:
    now = utcnow()
    online = status.state == sync_pb2.Status.ONLINE
    values: dict[str, Any] = {"online": online, "status_at": now}
    if online:
        values["last_seen_at"] = now
    conn.execute(devices.update().where(devices.c.id == device_id).values(**values))
