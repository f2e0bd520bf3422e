"""Outbox records to and from the wire messages of ``protos/sync.proto``.

Telemetry and events go to different MQTT topics, so :func:`build_batches` makes one
``RecordBatch`` per kind. :func:`ack_ranges` turns the control plane's ``Ack`` into the ranges
:meth:`agent.sync.outbox.Outbox.ack` takes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from agent.sync.outbox import OutboxRecord
from protos import sync_pb2

__all__ = ["RecordBatches", "ack_ranges", "build_batches", "seq_ranges", "to_record"]


@dataclass(frozen=True, slots=True)
class RecordBatches:
    """What one page of pending records becomes: a batch per kind (``None`` when that kind has
    no record) and the seqs whose payload does not parse. Those can never be sent: discard them
    with :meth:`agent.sync.outbox.Outbox.discard`, which counts them as dropped."""

    telemetry: sync_pb2.RecordBatch | None
    events: sync_pb2.RecordBatch | None
    undecodable: tuple[int, ...] = ()


def to_record(record: OutboxRecord) -> sync_pb2.Record:
    """The wire ``Record`` of an outbox record. Raises ``DecodeError`` for a bad payload."""
    message = sync_pb2.Record(seq=record.seq)
    message.created_at.FromNanoseconds(round(record.created_at * 1e9))
    body = message.telemetry if record.kind == "telemetry" else message.event
    body.ParseFromString(record.payload)
    body.SetInParent()  # selects the oneof even for an empty payload
    return message


def build_batches(device_id: str, records: Iterable[OutboxRecord]) -> RecordBatches:
    """Group ``records`` (in the order given, normally seq order) into one batch per kind."""
    telemetry = sync_pb2.RecordBatch(device_id=device_id)
    events = sync_pb2.RecordBatch(device_id=device_id)
    undecodable: list[int] = []
    for record in records:
        try:
            message = to_record(record)
        except DecodeError:
            undecodable.append(record.seq)
            continue
        (telemetry if record.kind == "telemetry" else events).records.append(message)
    return RecordBatches(
        telemetry=telemetry if telemetry.records else None,
        events=events if events.records else None,
        undecodable=tuple(undecodable),
    )


def ack_ranges(ack: sync_pb2.Ack) -> list[tuple[int, int]]:
    """The inclusive ``(first, last)`` seq ranges an ``Ack`` reports as stored."""
    return [(r.first, r.last) for r in ack.stored]


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """The fewest inclusive ranges covering ``seqs`` (any order, duplicates allowed)."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges
