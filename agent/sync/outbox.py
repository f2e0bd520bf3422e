"""The device's store-and-forward outbox: telemetry and events wait here until the control plane
has stored them.

A record is written to SQLite first (:meth:`Outbox.append`), sent over MQTT by the sync loop
(:meth:`Outbox.pending`, then :mod:`agent.sync.records` builds the ``RecordBatch``), and deleted
only when the control plane's ``Ack`` says it stored it (:meth:`Outbox.ack`) — end to end, not the
broker's PUBACK. Delivery is at least once: a record whose ack is lost is sent again, and the
control plane's ingest is idempotent on ``(device_id, seq)``.

Sequence numbers
    Every record gets the next ``seq`` of this device's outbox (1, 2, 3, …). A seq is never
    handed out twice: the last one assigned is the highest seq stored, or the ``last_seq`` of
    the ``meta`` table, which every transaction that deletes records updates — so acks,
    evictions and restarts do not reset it.
    Because the control plane drops a record whose ``(device_id, seq)`` it already stored, reusing
    a seq would lose a record silently; see "power cut" below for how reuse is ruled out even
    when the last transactions are lost.

Bounded in bytes
    The payloads waiting (``pending_bytes``) never exceed ``max_bytes``: an append that would
    overflow first deletes the oldest pending records, and counts them in a persistent
    ``dropped`` counter (``OutboxStats.dropped_records``; telemetry carries it as
    ``outbox_dropped``). A single record larger than the bound is refused and counted.

Degrade, never block inference
    :meth:`Outbox.append` never raises for a storage problem and never waits long: a full disk
    (``SQLITE_FULL``), a database locked by another process for longer than ``busy_timeout_s``
    (200 ms), an I/O error or an unreadable file make it return ``None`` and count the record as
    dropped (in memory, then in the database as soon as a write succeeds again). Each change of
    condition is logged once (not once per record). While the condition lasts, appends fail at
    once without touching the disk, and one append every ``retry_interval_s`` tries again, so
    the outbox recovers by itself when space is freed or the lock is released.

Outbox durability — the ``synchronous`` setting
    The database runs in WAL mode. A commit appends the transaction to the ``-wal`` file with
    ``write()`` before it returns, so once :meth:`Outbox.append` has returned a seq, the record
    survives a ``kill -9`` (or any crash) of the agent under every ``synchronous`` setting: the
    kernel holds the pages. What differs is a power cut (or a kernel crash):

    - ``FULL`` fsyncs the WAL at every commit: nothing acknowledged to the caller is lost, at the
      cost of one fsync per append (measured 1,650–4,250 single appends/s on the reference VM,
      under the issue's 5,000/s target; fewer on an SD card). Batched appends amortise the fsync.
    - ``NORMAL`` (the default) fsyncs only at checkpoints: a power cut can lose the records
      committed since the last fsync, but never corrupts the database (WAL + ``NORMAL`` is
      crash-consistent). It measured 7,100–17,800 single appends/s.

    The outbox keeps ``NORMAL``'s speed and bounds what a power cut can do:

    - **bounded window**: a background thread makes what was appended durable (an fsync'ed
      commit) at most ``durable_interval_s`` (1 s) later, so at most about one second of records
      is at risk — a window in which most of them have already reached the control plane — and
      the fsync is never paid by an appending thread;
    - **no seq reuse**: seqs are reserved in blocks of :data:`SEQ_BLOCK`; the commit that
      raises the reservation is made with ``FULL``, so the reserved bound is always on disk
      above every seq handed out. On open, if the previous run did not close cleanly *and* the
      machine rebooted since (the kernel's boot id changed: a power cut is possible), numbering
      resumes above the reservation. The gap marks records that may have been lost; no lost
      record's seq can be given to a new one. After a ``kill -9`` without a reboot nothing was
      lost, and numbering continues without a gap.

    Pass ``synchronous="FULL"`` where every record must survive a power cut and the append rate
    allows it. ``OFF`` is refused: a power cut could corrupt the database.

Threads
    One connection, guarded by a lock: worker threads append while the sync loop reads and
    deletes. Every method is thread-safe. Under ``NORMAL`` a background thread makes the fsync of
    the bounded window above; :meth:`Outbox.close` stops it.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self, get_args

import sqlite_utils

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SEQ_BLOCK",
    "Outbox",
    "OutboxError",
    "OutboxFault",
    "OutboxRecord",
    "OutboxStats",
    "Payload",
    "RecordKind",
    "Synchronous",
]

log = logging.getLogger(__name__)

RecordKind = Literal["telemetry", "event"]
Synchronous = Literal["NORMAL", "FULL", "EXTRA"]
Payload = bytes | bytearray | memoryview

KINDS: Final[frozenset[str]] = frozenset(get_args(RecordKind))
SYNCHRONOUS_SETTINGS: Final[frozenset[str]] = frozenset(get_args(Synchronous))

KiB: Final = 1024
MiB: Final = 1024 * KiB
DEFAULT_MAX_BYTES: Final = 64 * MiB

SEQ_BLOCK: Final = 4096
"""Seqs reserved (durably) at a time; the largest gap a power cut can leave in the numbering."""

SCHEMA_VERSION: Final = 1
_MAX_SQLITE_INT: Final = 2**63 - 1
_OVERSIZE_LOG_INTERVAL_S: Final = 60.0
_BOOT_ID_PATH: Final = Path("/proc/sys/kernel/random/boot_id")
_INSERT: Final = "INSERT INTO records (seq, kind, created_at, size, payload) VALUES (?, ?, ?, ?, ?)"

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_SQLITE_IOERR: Final = 10
_SQLITE_CORRUPT: Final = 11
_SQLITE_FULL: Final = 13
_SQLITE_NOTADB: Final = 26


class OutboxError(Exception):
    """The outbox database cannot be used at all (corrupt, or not a SQLite database)."""


class OutboxFault(enum.StrEnum):
    """Why records cannot be stored right now."""

    DISK_FULL = "disk_full"
    """``SQLITE_FULL``: the file system (or the database's page limit) is full."""
    LOCKED = "locked"
    """Another process has held the write lock for longer than ``busy_timeout_s``."""
    IO_ERROR = "io_error"
    """The storage failed a read or a write."""
    STALLED = "stalled"
    """Another outbox operation has held the database for longer than ``lock_timeout_s``."""
    ERROR = "error"
    """Anything else SQLite refused (read-only file, cannot open, corrupt page)."""


_FAULT_TEXT: Final[dict[OutboxFault, str]] = {
    OutboxFault.DISK_FULL: "the database or the disk is full",
    OutboxFault.LOCKED: "another process holds the database's write lock",
    OutboxFault.IO_ERROR: "the storage reports an I/O error",
    OutboxFault.STALLED: "another outbox operation is stuck on slow storage",
    OutboxFault.ERROR: "SQLite refuses to write",
}


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One stored record. ``payload`` is a serialized ``TelemetryRecord`` or ``Event``;
    ``created_at`` is the wall-clock time of the append, in seconds since the Unix epoch."""

    seq: int
    kind: RecordKind
    payload: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A snapshot of the outbox.

    ``dropped_records`` counts every record lost since the database was created: dropped at the
    byte bound, refused as oversize, or not stored because of a ``fault``. ``last_seq`` is the
    last seq handed out (0 before the first). ``oldest_pending_age_s`` is ``None`` when nothing
    is pending (or the database cannot be read); ``fault`` is ``None`` while appends work.
    """

    pending_records: int
    pending_bytes: int
    dropped_records: int
    last_seq: int
    oldest_pending_age_s: float | None
    fault: OutboxFault | None = None


def _classify(exc: BaseException) -> OutboxFault:
    """The fault behind a storage exception."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(exc).lower()
        if primary == _SQLITE_FULL or "disk is full" in text:
            return OutboxFault.DISK_FULL
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "database is locked" in text:
            return OutboxFault.LOCKED
        if primary == _SQLITE_IOERR or "disk i/o error" in text:
            return OutboxFault.IO_ERROR
        return OutboxFault.ERROR
    if isinstance(exc, OSError):
        return OutboxFault.IO_ERROR
    return OutboxFault.ERROR


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _boot_id() -> str | None:
    """The kernel's boot id: it changes at every boot, so an unchanged one proves no power cut."""
    try:
        return _BOOT_ID_PATH.read_text().strip() or None
    except OSError:
        return None


def _normalise_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges clamped to SQLite's integers, empty ones left out, overlaps merged."""
    clean = sorted(
        (max(int(first), 0), min(int(last), _MAX_SQLITE_INT))
        for first, last in ranges
        if int(first) <= int(last) and int(last) >= 0 and int(first) <= _MAX_SQLITE_INT
    )
    merged: list[tuple[int, int]] = []
    for first, last in clean:
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


class Outbox:
    """A bounded, durable queue of telemetry records and events, numbered by ``seq``.

    ``path`` is the SQLite file (created with its directory if missing). ``max_bytes`` bounds the
    pending payload bytes. ``synchronous`` is SQLite's setting for ordinary commits (see the
    module documentation). ``busy_timeout_s`` is how long a write waits for another process's
    lock; ``retry_interval_s`` how often a failing outbox tries the disk again;
    ``durable_interval_s`` how soon a background thread fsyncs what was appended under
    ``NORMAL`` (``None``: no thread; then only checkpoints, seq reservations and :meth:`flush`
    do); ``lock_timeout_s`` the longest an append waits for another thread's outbox operation.

    Use as a context manager, or call :meth:`open` and :meth:`close`.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        synchronous: Synchronous = "NORMAL",
        busy_timeout_s: float = 0.2,
        retry_interval_s: float = 1.0,
        durable_interval_s: float | None = 1.0,
        lock_timeout_s: float = 2.0,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        sync = str(synchronous).upper()
        if sync not in SYNCHRONOUS_SETTINGS:
            raise ValueError(
                f"synchronous must be one of {sorted(SYNCHRONOUS_SETTINGS)}, not {synchronous!r}"
                " (OFF could corrupt the outbox at a power cut)"
            )
        if busy_timeout_s < 0 or retry_interval_s < 0 or lock_timeout_s <= 0:
            raise ValueError("busy_timeout_s and retry_interval_s must be >= 0, lock_timeout_s > 0")
        if durable_interval_s is not None and durable_interval_s <= 0:
            raise ValueError("durable_interval_s must be > 0 or None")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.synchronous = sync
        self.busy_timeout_s = busy_timeout_s
        self.retry_interval_s = retry_interval_s
        self.durable_interval_s = durable_interval_s
        self.lock_timeout_s = lock_timeout_s

        # Guarded by _lock: the connection and what is cached from the database.
        self._lock = threading.Lock()
        self._db: sqlite_utils.Database | None = None
        self._wanted_open = False
        self._stale = True  # the cached values below must be read again from the database
        self._last_seq = 0
        self._seq_floor = 0  # the highest seq handed out by this process: never go below it
        self._reserved = 0
        self._dropped = 0  # as stored in the database
        self._pending_records = 0
        self._pending_bytes = 0
        self._undurable = False  # records committed under NORMAL and not fsync'ed yet
        self._evicting = False
        self._evicted_in_episode = 0
        self._read_fault: OutboxFault | None = None

        # Guarded by _state_lock, which is never held while waiting for the disk.
        self._state_lock = threading.Lock()
        self._unsaved_dropped = 0  # lost records not yet added to the stored counter
        self._fault: OutboxFault | None = None
        self._fault_since = 0.0
        self._fault_lost = 0
        self._next_probe = 0.0
        self._closed_lost = 0
        self._oversize_refused = 0
        self._oversize_logged_at: float | None = None

        self._flusher: threading.Thread | None = None
        self._flusher_stop = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> Self:
        """Open (creating if needed) the database. Returns ``self``.

        A storage fault (full disk, lock, I/O error) does not raise: the outbox starts degraded
        and keeps trying. Raises :class:`OutboxError` if the file is corrupt or not a database.
        """
        with self._lock:
            if self._db is not None:
                return self
            self._wanted_open = True
            with self._state_lock:
                self._closed_lost = 0
            try:
                self._connect()
            except sqlite3.Error as exc:
                if _is_corrupt(exc):
                    self._wanted_open = False
                    raise OutboxError(f"the outbox {self.path} is unusable: {exc}") from exc
                self._record_failure(exc, lost=0)
            except OSError as exc:
                self._record_failure(exc, lost=0)
            if self.synchronous == "NORMAL" and self.durable_interval_s is not None and self._flusher is None:
                self._flusher_stop.clear()
                self._flusher = threading.Thread(
                    target=self._flush_loop, args=(self.durable_interval_s,), name="outbox-flush", daemon=True
                )
                self._flusher.start()
        return self

    def close(self) -> None:
        """Store the counters, mark a clean shutdown and close the database. Idempotent."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            self._flusher_stop.set()
            flusher.join(timeout=self.lock_timeout_s + 1.0)
        with self._lock:
            self._wanted_open = False
            db = self._db
            if db is None:
                return
            try:
                if self._stale:
                    self._refresh(db)
                with self._state_lock:
                    unsaved = self._unsaved_dropped
                # A clean close: the reservation comes down to the last seq, so that the next
                # open continues without a gap whatever happens to the machine in between.
                with self._write(db, durable=True):
                    self._set_meta(db, "seq_reserved", self._last_seq)
                    if unsaved:
                        self._set_meta(db, "dropped", self._dropped + unsaved)
                with self._state_lock:
                    self._unsaved_dropped -= unsaved
                self._dropped += unsaved
            except (sqlite3.Error, OSError) as exc:
                log.warning("outbox %s: could not record a clean shutdown: %s", self.path, exc)
            finally:
                self._disconnect()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- appending -------------------------------------------------------------------------

    def append(self, kind: RecordKind, payload: Payload) -> int | None:
        """Store one record; return its seq once committed, or ``None`` if it was not stored.

        ``None`` means the record is lost and counted in ``dropped_records``: it is larger than
        ``max_bytes``, the outbox is closed, or the storage is failing (full, locked, I/O
        error). Storage problems never raise. Raises ``ValueError`` for an unknown ``kind`` and
        ``TypeError`` for a payload that is not bytes-like (programming errors).
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
        data = payload if isinstance(payload, bytes) else memoryview(payload).tobytes()
        if len(data) > self.max_bytes:
            self._note_oversize(1)
            return None
        seqs = self._store([(kind, data)])
        return seqs[0] if seqs is not None else None

    def append_many(self, items: Iterable[tuple[RecordKind, Payload]]) -> list[int | None]:
        """Store several records in one transaction (one commit, one fsync under ``FULL``).

        Returns one entry per item, in order: its seq, or ``None`` if it was not stored. Seqs of
        one call are consecutive. When the batch itself is larger than ``max_bytes``, its oldest
        items are dropped (counted) like pending records would be. Same errors as
        :meth:`append`.
        """
        batch: list[tuple[RecordKind, bytes]] = []
        for kind, payload in items:
            if kind not in KINDS:
                raise ValueError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
            batch.append((kind, payload if isinstance(payload, bytes) else memoryview(payload).tobytes()))
        results: list[int | None] = [None] * len(batch)

        # Newest first: keep what fits the bound, drop older items, refuse oversize ones.
        keep: list[int] = []
        total = 0
        oversize = 0
        for index in range(len(batch) - 1, -1, -1):
            size = len(batch[index][1])
            if size > self.max_bytes:
                oversize += 1
            elif total + size <= self.max_bytes:
                keep.append(index)
                total += size
            else:
                break
        keep.reverse()
        if oversize:
            self._note_oversize(oversize)
        if len(keep) < len(batch) - oversize:
            with self._state_lock:
                self._unsaved_dropped += len(batch) - oversize - len(keep)
        if keep:
            seqs = self._store([batch[i] for i in keep])
            if seqs is not None:
                for index, seq in zip(keep, seqs, strict=True):
                    results[index] = seq
        return results

    def _store(self, batch: list[tuple[RecordKind, bytes]]) -> list[int] | None:
        """Commit ``batch`` (which fits ``max_bytes``): its seqs, or ``None`` (counted as lost)."""
        # A failing outbox does not touch the disk between two probes: one call per
        # retry_interval_s (the probe) tries, the others count their records as lost at once.
        lost = len(batch)
        probe = False
        if self._fault is not None:  # (a racy read, settled under the lock below)
            now = time.monotonic()
            with self._state_lock:
                if self._fault is not None:
                    if now < self._next_probe:
                        self._unsaved_dropped += lost
                        self._fault_lost += lost
                        return None
                    self._next_probe = now + self.retry_interval_s
                    probe = True

        if not self._lock.acquire(timeout=self.lock_timeout_s):
            self._record_failure(None, lost=lost, fault=OutboxFault.STALLED)
            return None
        try:
            if self._db is None and not self._wanted_open:
                self._note_closed(lost)
                return None
            if not probe and self._lost_to_fault(lost):
                return None  # another thread met a fault while this one waited for the lock
            seqs = self._insert(batch)
        except (sqlite3.Error, OSError) as exc:
            fault = _classify(exc)
            if fault in (OutboxFault.IO_ERROR, OutboxFault.ERROR):
                self._disconnect()  # the next probe starts again from a fresh connection
            self._record_failure(exc, lost=lost, fault=fault)
            return None
        except Exception as exc:  # append must never raise into an inference thread
            log.exception("outbox %s: unexpected error while appending", self.path)
            self._disconnect()
            self._record_failure(exc, lost=lost, fault=OutboxFault.ERROR)
            return None
        finally:
            self._lock.release()
        if self._fault is not None:
            self._record_success()
        return seqs

    def _insert(self, batch: list[tuple[RecordKind, bytes]]) -> list[int]:
        """Commit ``batch`` (which fits ``max_bytes``), evicting the oldest records if needed."""
        db = self._db if self._db is not None else self._connect()
        if self._stale:
            self._refresh(db)
        created_at = time.time()
        size = sum(len(payload) for _, payload in batch)
        first = self._last_seq + 1
        last = self._last_seq + len(batch)
        reserve = last > self._reserved
        durable = reserve  # a raised reservation must be on disk before its seqs are handed out
        with self._state_lock:
            unsaved = self._unsaved_dropped
        evicted = evicted_bytes = 0
        overflow = self._pending_bytes + size - self.max_bytes
        if len(batch) == 1 and not (durable or unsaved or overflow > 0):
            # The common case: one INSERT in autocommit mode is a transaction of its own.
            kind, payload = batch[0]
            db.conn.execute(_INSERT, (first, kind, created_at, size, payload))
        else:
            with self._write(db, durable=durable):
                if overflow > 0:
                    evicted, evicted_bytes = self._evict(db, overflow)
                db.conn.executemany(
                    _INSERT,
                    [
                        (seq, kind, created_at, len(payload), payload)
                        for seq, (kind, payload) in zip(range(first, last + 1), batch, strict=True)
                    ],
                )
                # meta's last_seq is written only when records are deleted (see _refresh): the
                # new rows themselves carry the highest seq, and a statement less per append counts.
                if evicted:
                    self._set_meta(db, "last_seq", last)
                if reserve:
                    self._set_meta(db, "seq_reserved", last + SEQ_BLOCK)
                if evicted or unsaved:
                    self._set_meta(db, "dropped", self._dropped + evicted + unsaved)
        # Committed: bring the cache up to date.
        if not durable and self.synchronous == "NORMAL":
            self._undurable = True
        self._last_seq = self._seq_floor = last
        if reserve:
            self._reserved = last + SEQ_BLOCK
        self._dropped += evicted + unsaved
        self._pending_records += len(batch) - evicted
        self._pending_bytes += size - evicted_bytes
        with self._state_lock:
            self._unsaved_dropped -= unsaved
        if evicted:
            if not self._evicting:
                log.warning(
                    "outbox %s: the pending records reached the bound of %d bytes: dropping the oldest "
                    "(counted in outbox_dropped) until the control plane acks",
                    self.path,
                    self.max_bytes,
                )
                self._evicting = True
                self._evicted_in_episode = 0
            self._evicted_in_episode += evicted
        return list(range(first, last + 1))

    def _evict(self, db: sqlite_utils.Database, need: int) -> tuple[int, int]:
        """Delete the oldest records until ``need`` bytes are freed: (records, bytes)."""
        count = freed = 0
        cutoff: int | None = None
        cursor = db.conn.execute("SELECT seq, size FROM records ORDER BY seq")
        try:
            for seq, size in cursor:
                count += 1
                freed += size
                cutoff = seq
                if freed >= need:
                    break
        finally:
            cursor.close()
        if cutoff is not None:
            db.execute("DELETE FROM records WHERE seq <= ?", (cutoff,))
        return count, freed

    # -- sending and acknowledging ---------------------------------------------------------

    def pending(self, limit: int = 500, max_bytes: int = 256 * KiB, after_seq: int = 0) -> list[OutboxRecord]:
        """The next records to send, in seq order: seq > ``after_seq``, at most ``limit`` of them
        and at most ``max_bytes`` of payload (but always the first one, however large).

        Records stay pending until acked, so a sync loop pages with ``after_seq`` (the last seq
        it sent) and starts again from 0 after a reconnect. Returns ``[]`` when nothing is
        pending or the database cannot be read (logged once per change).
        """
        if limit <= 0:
            return []
        with self._lock:
            db = self._db
            if db is None:
                return []
            records: list[OutboxRecord] = []
            try:
                cursor = db.conn.execute(
                    "SELECT seq, kind, created_at, size, payload FROM records WHERE seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (max(int(after_seq), 0), int(limit)),
                )
                try:
                    total = 0
                    for seq, kind, created_at, size, payload in cursor:
                        if records and total + size > max_bytes:
                            break
                        total += size
                        records.append(OutboxRecord(seq, kind, bytes(payload), float(created_at)))
                finally:
                    cursor.close()
            except sqlite3.Error as exc:
                self._note_read(exc)
                return []
            self._note_read(None)
            return records

    def ack(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Delete the records in the inclusive ``(first, last)`` ranges the control plane stored;
        return how many were deleted.

        Unknown, already deleted or out-of-order seqs are harmless (an ack is idempotent), as are
        empty (``first > last``) ranges. A storage failure is logged and returns 0: the records
        stay pending, are sent again and acked again.
        """
        return self._delete(ranges, dropped=False)

    def discard(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Delete records that can never be sent (for instance an undecodable payload) and count
        them as dropped. Returns how many were deleted; same rules as :meth:`ack`."""
        return self._delete(ranges, dropped=True)

    def _delete(self, ranges: Iterable[tuple[int, int]], *, dropped: bool) -> int:
        merged = _normalise_ranges(ranges)
        if not merged:
            return 0
        with self._lock:
            db = self._db
            if db is None:
                return 0
            try:
                if self._stale:
                    self._refresh(db)
                count = size = 0
                with self._write(db, durable=False):
                    for first, last in merged:
                        n, b = db.execute(
                            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records WHERE seq BETWEEN ? AND ?",
                            (first, last),
                        ).fetchone()
                        if n:
                            db.execute("DELETE FROM records WHERE seq BETWEEN ? AND ?", (first, last))
                            count += n
                            size += b
                    if count:
                        self._set_meta(db, "last_seq", self._last_seq)
                    if dropped and count:
                        self._set_meta(db, "dropped", self._dropped + count)
            except (sqlite3.Error, OSError) as exc:
                self._stale = True
                log.warning(
                    "outbox %s: could not delete acknowledged records (sent again later): %s", self.path, exc
                )
                return 0
            self._pending_records -= count
            self._pending_bytes -= size
            if dropped:
                self._dropped += count
            if self._evicting and self._pending_bytes <= self.max_bytes * 0.9:
                log.info(
                    "outbox %s: back under its bound after dropping %d records",
                    self.path,
                    self._evicted_in_episode,
                )
                self._evicting = False
        return count

    # -- observing -------------------------------------------------------------------------

    def stats(self) -> OutboxStats:
        """Counters for telemetry; never raises. Reads the database only for the oldest age."""
        oldest: float | None = None
        got = self._lock.acquire(timeout=self.busy_timeout_s)
        try:
            if got and self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    if self._stale:
                        self._refresh(self._db)
                    row = self._db.conn.execute(
                        "SELECT created_at FROM records ORDER BY seq LIMIT 1"
                    ).fetchone()
                    if row is not None:
                        oldest = max(0.0, time.time() - float(row[0]))
            with self._state_lock:  # both counters at once: a commit moves one to the other
                return OutboxStats(
                    pending_records=self._pending_records,
                    pending_bytes=self._pending_bytes,
                    dropped_records=self._dropped + self._unsaved_dropped,
                    last_seq=self._last_seq,
                    oldest_pending_age_s=oldest,
                    fault=self._fault,
                )
        finally:
            if got:
                self._lock.release()

    @property
    def fault(self) -> OutboxFault | None:
        """Why appends fail right now, or ``None``."""
        with self._state_lock:
            return self._fault

    def flush(self) -> bool:
        """Make every record stored so far durable (survive a power cut) now: one fsync'ed
        commit when there is anything to make durable. Returns False if the storage failed
        (the records are then still safe from a crash of the process, as always)."""
        if not self._lock.acquire(timeout=self.lock_timeout_s):
            return False
        try:
            db = self._db
            if db is None or not self._undurable:
                return db is not None or not self._wanted_open
            with self._write(db, durable=True):
                self._set_meta(db, "flushed_at", time.time())
        except (sqlite3.Error, OSError) as exc:
            # Appends waiting for the lock learn of the fault and fail fast instead of waiting too.
            self._record_failure(exc, lost=0)
            return False
        finally:
            self._lock.release()
        if self._fault is not None:
            self._record_success()
        return True

    def _flush_loop(self, interval: float) -> None:
        """The background thread of ``NORMAL``: fsync what was appended within ``interval``."""
        while not self._flusher_stop.wait(interval):
            # (racy reads; flush() checks again under the lock). While a fault lasts, the probing
            # appends find out when it clears; the next round flushes.
            if self._undurable and self._fault is None:
                self.flush()

    # -- database plumbing (callers hold _lock) --------------------------------------------

    def _connect(self) -> sqlite_utils.Database:
        """Open the connection, create the schema, and settle the seq numbering."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_s,
            isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE … COMMIT
            check_same_thread=False,  # shared by the threads, serialised by _lock
        )
        try:
            db = sqlite_utils.Database(conn, execute_plugins=False)
            db.enable_wal()
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute(f"PRAGMA journal_size_limit={8 * MiB}")  # a burst must not leave a huge WAL
            self._create_schema(db)
            self._refresh(db)
            self._settle_sequence(db)
        except BaseException:
            conn.close()
            raise
        self._db = db
        return db

    def _create_schema(self, db: sqlite_utils.Database) -> None:
        strict = db.supports_strict
        with self._write(db, durable=False):
            db.create_table(
                "records",
                {"seq": int, "kind": str, "created_at": float, "size": int, "payload": bytes},
                pk="seq",
                not_null={"kind", "created_at", "size", "payload"},
                if_not_exists=True,
                strict=strict,
            )
            db.create_table("meta", {"key": str, "value": "ANY"}, pk="key", if_not_exists=True, strict=strict)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _settle_sequence(self, db: sqlite_utils.Database) -> None:
        """After an unclean shutdown across a reboot, resume numbering above the reservation."""
        boot = _boot_id()
        row = db.execute("SELECT value FROM meta WHERE key = 'boot_id'").fetchone()
        stored_boot = row[0] if row is not None else None
        same_boot = boot is not None and stored_boot == boot
        jump = not same_boot and self._reserved > self._last_seq
        if jump:
            log.warning(
                "outbox %s: the agent stopped without closing the outbox and the machine restarted since; "
                "up to %d records written just before could have been lost in a power cut: numbering "
                "resumes at %d so that no seq is reused",
                self.path,
                self._reserved - self._last_seq,
                self._reserved + 1,
            )
        with self._write(db, durable=True):
            if jump:
                self._set_meta(db, "last_seq", self._reserved)
            if boot is not None and boot != stored_boot:
                self._set_meta(db, "boot_id", boot)
        if jump:
            self._last_seq = self._reserved

    def _refresh(self, db: sqlite_utils.Database) -> None:
        """Read the counters and the numbering back from the database.

        The last seq assigned is the larger of the highest stored seq and meta's ``last_seq``:
        every transaction that deletes records writes ``last_seq``, so a seq that left the
        ``records`` table is always covered by it.
        """
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        count, size, max_seq = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(seq), 0) FROM records"
        ).fetchone()
        self._last_seq = max(int(meta.get("last_seq", 0)), int(max_seq), self._seq_floor)
        self._reserved = int(meta.get("seq_reserved", 0))
        self._dropped = int(meta.get("dropped", 0))
        self._pending_records = int(count)
        self._pending_bytes = int(size)
        self._stale = False

    @contextlib.contextmanager
    def _write(self, db: sqlite_utils.Database, *, durable: bool) -> Iterator[None]:
        """A write transaction; with ``durable`` its commit is fsync'ed whatever ``synchronous``."""
        conn = db.conn  # the hot path: sqlite3 directly, transactions are ours
        switch = durable and self.synchronous == "NORMAL"
        if switch:
            conn.execute("PRAGMA synchronous=FULL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                self._stale = True
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        self._disconnect()  # the next call reconnects from a clean state
                raise
        finally:
            if switch:  # (on a connection closed meanwhile, this raises and is ignored)
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA synchronous=NORMAL")
        if durable:
            self._undurable = False  # an fsync of the WAL covers every earlier commit too

    @staticmethod
    def _set_meta(db: sqlite_utils.Database, key: str, value: float | str) -> None:
        db.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _disconnect(self) -> None:
        db, self._db = self._db, None
        self._stale = True
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    # -- fault bookkeeping -----------------------------------------------------------------

    def _lost_to_fault(self, lost: int) -> bool:
        """True (and ``lost`` records counted) while a fault lasts and no probe is due."""
        if self._fault is None:
            return False
        with self._state_lock:
            if self._fault is None or time.monotonic() >= self._next_probe:
                return False
            self._unsaved_dropped += lost
            self._fault_lost += lost
            return True

    def _record_failure(
        self, exc: BaseException | None, *, lost: int, fault: OutboxFault | None = None
    ) -> None:
        if fault is None:
            fault = _classify(exc) if exc is not None else OutboxFault.ERROR
        now = time.monotonic()
        with self._state_lock:
            self._unsaved_dropped += lost
            self._next_probe = now + self.retry_interval_s
            changed = fault is not self._fault
            if self._fault is None:
                self._fault_since = now
                self._fault_lost = 0
            self._fault_lost += lost
            self._fault = fault
        if changed:
            log.warning(
                "outbox %s: cannot store records: %s (%s); they are dropped and counted until it "
                "clears, retrying every %.1f s",
                self.path,
                _FAULT_TEXT[fault],
                exc if exc is not None else f"waited {self.lock_timeout_s:.1f} s",
                self.retry_interval_s,
            )

    def _record_success(self) -> None:
        with self._state_lock:
            fault, since, lost = self._fault, self._fault_since, self._fault_lost
            self._fault = None
        if fault is not None:
            log.info(
                "outbox %s: storing records again after %.1f s (%s); %d records were lost meanwhile",
                self.path,
                time.monotonic() - since,
                _FAULT_TEXT[fault],
                lost,
            )

    def _note_closed(self, lost: int) -> None:
        with self._state_lock:
            first = self._closed_lost == 0
            self._closed_lost += lost
            self._unsaved_dropped += lost
        if first:
            log.warning("outbox %s: append after close: records are dropped", self.path)

    def _note_oversize(self, count: int) -> None:
        now = time.monotonic()
        with self._state_lock:
            self._oversize_refused += count
            self._unsaved_dropped += count
            due = (
                self._oversize_logged_at is None or now - self._oversize_logged_at >= _OVERSIZE_LOG_INTERVAL_S
            )
            if due:
                self._oversize_logged_at = now
            total = self._oversize_refused
        if due:
            log.warning(
                "outbox %s: refused a record larger than the outbox bound of %d bytes (%d refused so far)",
                self.path,
                self.max_bytes,
                total,
            )

    def _note_read(self, exc: sqlite3.Error | None) -> None:
        fault = _classify(exc) if exc is not None else None
        if fault is self._read_fault:
            return
        if fault is not None:
            log.warning("outbox %s: cannot read pending records: %s (%s)", self.path, _FAULT_TEXT[fault], exc)
        else:
            log.info("outbox %s: pending records readable again", self.path)
        self._read_fault = fault
