"""Drains the outbox to the control plane, deleting records only once their ``Ack`` says stored.

:class:`OutboxSender` runs one thread. While the MQTT client is connected it reads the pending
records in seq order (``Outbox.pending(after_seq=…)``), makes one ``RecordBatch`` per kind
(:func:`agent.sync.records.build_batches`) and publishes them (``SyncClient.publish_batch``),
remembering each record it sent and when. The control plane's ``Ack`` lists the seqs it has
stored: the sender deletes exactly those from the outbox (``Outbox.ack``) and from its in-flight
set. Nothing else deletes a record; the broker's PUBACK means nothing here.

In-flight window
    At most ``max_inflight_records`` records (5,000) and ``max_inflight_bytes`` payload bytes
    (4 MiB) are sent and not yet acked. A backlog of any size therefore drains at the rate the
    control plane stores and acks, with bounded memory in the agent, in paho and in the broker.
    Batches hold at most ``batch_records`` records (500) and ``batch_bytes`` payload bytes
    (256 KiB), well under the control plane's 1 MiB message limit.

Resending, always from the lowest unacked seq
    - After a **connection** (the first, or a reconnect: ``client.connections`` changed),
      everything pending is sent again from the oldest: messages in flight when the link
      dropped may or may not have arrived.
    - When the oldest record in flight has had no ack for ``ack_timeout_s`` (30 s), everything
      pending is sent again from the oldest: the broker or the control plane lost it (control
      plane down, a broker restart without persistence, Mosquitto dropping QoS 1 messages past
      ``max_queued_messages``, …).
    - In both cases the sender first **probes**: it sends one batch and opens the window only
      once an ack (any ack) shows the control plane is there. A probe that gets no ack within
      ``probe_timeout_s`` (2 s) is sent again, the wait doubling up to ``max_ack_timeout_s``
      (60 s). After a broker restart the devices are back before the control plane's bridge,
      and what they send in between has no subscriber: a probe loses one batch and 2 s, not
      the whole window and an ack timeout. A control plane down for hours costs one batch a
      minute per device.
    Re-sending is always safe: the control plane stores a record once per ``(device, seq)`` and
    acks duplicates again. Records are never reordered: each pass reads the outbox from the
    lowest seq still pending.

Threads
    Acks arrive on paho's network thread: :meth:`OutboxSender._on_ack` only queues them. The
    sender's thread applies them, reads, builds and publishes. :meth:`notify` (called after an
    append) wakes it at once; otherwise it polls every ``poll_s`` (1 s) while idle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from agent.sync.outbox import Outbox, OutboxRecord
from agent.sync.records import ack_ranges, build_batches, seq_ranges
from protos import sync_pb2

__all__ = ["BatchClient", "OutboxSender", "SenderStatus"]

log = logging.getLogger(__name__)

KiB: Final = 1024
MiB: Final = 1024 * KiB
_WIRE_OVERHEAD: Final = 64 * KiB
"""Room kept under ``max_message_bytes`` for the batch's framing (seqs, timestamps, topic)."""


class BatchClient(Protocol):
    """What the sender needs of :class:`agent.sync.mqtt.SyncClient`."""

    connected: threading.Event
    connections: int

    def publish_batch(
        self, topic_kind: Literal["telemetry", "events"], batch: sync_pb2.RecordBatch
    ) -> bool: ...

    def on_ack(self, callback: Callable[[sync_pb2.Ack], None]) -> None: ...


@dataclass(frozen=True, slots=True)
class SenderStatus:
    """The sender's counters since it was made."""

    in_flight_records: int
    in_flight_bytes: int
    sent_records: int
    """Records published, re-sends included."""
    resent_records: int
    """Records published again (after a reconnect or an ack timeout)."""
    acked_records: int
    """Records the control plane acked that were deleted from the outbox."""
    batches: int
    ack_timeouts: int
    reconnects: int
    discarded_records: int
    """Records that can never be sent (undecodable, or larger than a message may be)."""
    probing: bool
    """No ack since the last (re)connection or timeout: one batch at a time."""


class OutboxSender:
    """Sends the outbox's records and deletes them on the control plane's ack; see the module
    docstring. :meth:`start` once, :meth:`stop` at the end (it does not close the outbox)."""

    def __init__(
        self,
        outbox: Outbox,
        client: BatchClient,
        device_id: str,
        *,
        batch_records: int = 500,
        batch_bytes: int = 256 * KiB,
        max_inflight_records: int = 5000,
        max_inflight_bytes: int = 4 * MiB,
        max_message_bytes: int = 1 * MiB,
        ack_timeout_s: float = 30.0,
        probe_timeout_s: float = 2.0,
        max_ack_timeout_s: float = 60.0,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(batch_records, batch_bytes, max_inflight_records, max_inflight_bytes) <= 0:
            raise ValueError("batch and in-flight limits must be positive")
        if min(ack_timeout_s, probe_timeout_s, poll_s) <= 0 or max_ack_timeout_s < probe_timeout_s:
            raise ValueError("need positive timeouts and probe_timeout_s <= max_ack_timeout_s")
        if max_message_bytes <= _WIRE_OVERHEAD:
            raise ValueError(f"max_message_bytes must be over {_WIRE_OVERHEAD}")
        self.outbox = outbox
        self.client = client
        self.device_id = device_id
        self.batch_records = batch_records
        self.batch_bytes = min(batch_bytes, max_message_bytes - _WIRE_OVERHEAD)
        self.max_inflight_records = max_inflight_records
        self.max_inflight_bytes = max_inflight_bytes
        self.max_record_bytes = max_message_bytes - _WIRE_OVERHEAD
        self.ack_timeout_s = ack_timeout_s
        self.probe_timeout_s = probe_timeout_s
        self.max_ack_timeout_s = max_ack_timeout_s
        self.poll_s = poll_s
        self._clock = clock

        self._acks: deque[list[tuple[int, int]]] = deque()  # appended by paho's thread
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.acked = threading.Condition()
        """Notified after every ack applied (for tests and tools waiting for a drain)."""

        # the sender's thread only
        self._inflight: dict[int, tuple[int, float]] = {}  # seq -> (payload bytes, sent at)
        self._inflight_bytes = 0
        self._after = 0  # the next pending() read starts above this seq
        self._highest_sent = 0
        self._seen_connections = 0
        self._timeout = ack_timeout_s
        self._probing = False
        self._silent_since: float | None = None  # when the first unacked send of a silence went out
        self._sent = 0
        self._resent = 0
        self._acked = 0
        self._batches = 0
        self._timeouts = 0
        self._reconnects = 0
        self._discarded = 0
        client.on_ack(self._on_ack)

    # ---- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the sender is already started")
        self._thread = threading.Thread(target=self._run, name="edgefleet-outbox-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (what is in flight stays in the outbox, sent again next time)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def notify(self) -> None:
        """New records were appended: look at the outbox now rather than at the next poll."""
        self._wake.set()

    def status(self) -> SenderStatus:
        return SenderStatus(
            in_flight_records=len(self._inflight),
            in_flight_bytes=self._inflight_bytes,
            sent_records=self._sent,
            resent_records=self._resent,
            acked_records=self._acked,
            batches=self._batches,
            ack_timeouts=self._timeouts,
            reconnects=self._reconnects,
            discarded_records=self._discarded,
            probing=self._probing,
        )

    # ---- acks (paho's network thread) ----------------------------------------------------------

    def _on_ack(self, ack: sync_pb2.Ack) -> None:
        self._acks.append(ack_ranges(ack))
        self._wake.set()

    # ---- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                wait = self._step()
            except Exception:  # a bug or a storage surprise must not end sending for good
                log.exception("sync: the outbox sender failed; retrying")
                wait = self.poll_s
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()

    def _step(self) -> float:
        """One round: apply acks, handle reconnects and timeouts, fill the window. Returns how
        long to wait for something to happen (0: go on at once)."""
        self._apply_acks()
        if not self.client.connected.is_set():
            return min(self.poll_s, 0.25)
        connections = self.client.connections
        if connections != self._seen_connections:
            if self._seen_connections:
                self._reconnects += 1
                log.info("sync: reconnected; sending the pending records again from the oldest")
            self._seen_connections = connections
            self._restart()
            self._probe(self.probe_timeout_s)
        now = self._clock()
        if self._inflight:
            oldest = next(iter(self._inflight.values()))[1]
            if now - oldest >= self._timeout:
                self._timeouts += 1
                if self._silent_since is None:
                    self._silent_since = oldest
                    log.warning(
                        "sync: no ack for %d records within %.0f s; probing, then sending again from seq %d",
                        len(self._inflight),
                        self._timeout,
                        min(self._inflight),
                    )
                self._restart()
                self._probe(self._timeout * 2 if self._probing else self.probe_timeout_s)
        self._fill()
        if not self._inflight:
            return self.poll_s
        oldest = next(iter(self._inflight.values()))[1]
        return max(0.0, min(self.poll_s, oldest + self._timeout - self._clock()))

    def _probe(self, timeout: float) -> None:
        self._probing = True
        self._timeout = min(timeout, self.max_ack_timeout_s)

    def _restart(self) -> None:
        """Forget what is in flight: the next reads start again from the lowest pending seq."""
        self._inflight.clear()
        self._inflight_bytes = 0
        self._after = 0

    def _apply_acks(self) -> None:
        ranges: list[tuple[int, int]] = []
        while self._acks:
            ranges.extend(self._acks.popleft())
        if not ranges:
            return
        deleted = self.outbox.ack(ranges)
        for first, last in ranges:
            if last < first:
                continue
            if last - first < len(self._inflight):
                seqs: list[int] = [s for s in range(first, last + 1) if s in self._inflight]
            else:
                seqs = [s for s in self._inflight if first <= s <= last]
            for seq in seqs:
                size, _ = self._inflight.pop(seq)
                self._inflight_bytes -= size
        self._acked += deleted
        self._probing = False  # any ack: the control plane is there
        if self._silent_since is not None:
            log.info("sync: the control plane acks again after %.0f s", self._clock() - self._silent_since)
            self._silent_since = None
        self._timeout = self.ack_timeout_s
        with self.acked:
            self.acked.notify_all()

    def _fill(self) -> None:
        """Publish pending records in seq order until the window is full or nothing is left."""
        while not self._stopping.is_set():
            if self._probing:
                room = self.batch_records if not self._inflight else 0
            else:
                room = min(self.batch_records, self.max_inflight_records - len(self._inflight))
            room_bytes = min(self.batch_bytes, self.max_inflight_bytes - self._inflight_bytes)
            if room <= 0 or room_bytes <= 0:
                return
            records = self.outbox.pending(limit=room, max_bytes=room_bytes, after_seq=self._after)
            if not records:
                return
            if not self._publish(records):
                return
            self._after = records[-1].seq

    def _publish(self, records: list[OutboxRecord]) -> bool:
        oversize = [r.seq for r in records if len(r.payload) > self.max_record_bytes]
        if oversize:
            log.error(
                "sync: %d records are larger than a message may be (%d bytes); dropped",
                len(oversize),
                self.max_record_bytes,
            )
            self._discarded += self.outbox.discard(seq_ranges(oversize))
            records = [r for r in records if len(r.payload) <= self.max_record_bytes]
        batches = build_batches(self.device_id, records)
        if batches.undecodable:
            log.error("sync: %d outbox records do not parse; dropped", len(batches.undecodable))
            self._discarded += self.outbox.discard(seq_ranges(batches.undecodable))
        sizes = {r.seq: len(r.payload) for r in records}
        sent_before = self._highest_sent  # a seq up to this one was sent before: a re-send
        kinds: tuple[tuple[Literal["telemetry", "events"], sync_pb2.RecordBatch | None], ...] = (
            ("telemetry", batches.telemetry),
            ("events", batches.events),
        )
        for kind, batch in kinds:
            if batch is None:
                continue
            if not self.client.publish_batch(kind, batch):
                return False  # offline (or paho refused): these are read again later
            now = self._clock()
            self._batches += 1
            for record in batch.records:
                seq = record.seq
                size = sizes[seq]
                self._inflight[seq] = (size, now)
                self._inflight_bytes += size
                self._sent += 1
                if seq <= sent_before:
                    self._resent += 1
                elif seq > self._highest_sent:
                    self._highest_sent = seq
        return True

    # ---- waiting (tests, tools) ----------------------------------------------------------------

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Until the outbox has nothing pending (True), or ``timeout`` passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.acked:
            while self.outbox.stats().pending_records > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.acked.wait(0.2 if remaining is None else min(0.2, remaining))
        return True
