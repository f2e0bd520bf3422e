"""The store-and-forward outbox: numbering, the byte bound, acks, and what happens when the
storage fails (kill -9, full disk, another process's lock)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sync.outbox import SEQ_BLOCK, Outbox, OutboxError, OutboxFault, OutboxRecord, RecordKind
from agent.sync.records import ack_ranges, build_batches, seq_ranges, to_record
from protos import sync_pb2

REPO = Path(__file__).resolve().parents[2]
LOGGER = "agent.sync.outbox"


def stored_seqs(outbox: Outbox) -> list[int]:
    return [r.seq for r in outbox.pending(limit=1_000_000, max_bytes=1 << 40)]


def query(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run ``sql`` on a separate connection (closed afterwards)."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        return list(conn.execute(sql, params).fetchall())


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db") as opened:
        yield opened


# -- numbering -----------------------------------------------------------------------------


def test_seqs_start_at_one_and_increase_by_one(outbox: Outbox) -> None:
    assert [outbox.append("event", b"e%d" % i) for i in range(5)] == [1, 2, 3, 4, 5]
    assert outbox.append_many([("telemetry", b"t1"), ("event", b"e6")]) == [6, 7]
    assert outbox.stats().last_seq == 7


def test_seqs_are_never_reused_after_acks_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        assert [outbox.append("event", b"x") for _ in range(3)] == [1, 2, 3]
        assert outbox.ack([(1, 3)]) == 3  # the table is empty now
        assert outbox.append("event", b"y") == 4
        assert outbox.ack([(4, 4)]) == 1
    with Outbox(path) as outbox:
        assert outbox.stats().last_seq == 4
        assert outbox.append("event", b"z") == 5
    with Outbox(path) as outbox:
        assert outbox.append("telemetry", b"w") == 6


def test_numbering_resumes_above_the_reservation_after_an_unclean_stop_and_a_reboot(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        for _ in range(5):
            outbox.append("event", b"x")
    # What a power cut leaves: the process never closed the outbox (the reservation is still
    # above the last seq) and the machine booted again (another boot id).
    query(path, "UPDATE meta SET value = ? WHERE key = 'seq_reserved'", (5 + SEQ_BLOCK,))
    query(path, "INSERT OR REPLACE INTO meta (key, value) VALUES ('boot_id', 'an earlier boot')")
    with Outbox(path) as outbox:
        assert outbox.append("event", b"y") == 5 + SEQ_BLOCK + 1
        assert stored_seqs(outbox) == [1, 2, 3, 4, 5, 5 + SEQ_BLOCK + 1]


def test_a_clean_close_leaves_no_gap_even_across_a_reboot(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        for _ in range(5):
            outbox.append("event", b"x")
    query(path, "INSERT OR REPLACE INTO meta (key, value) VALUES ('boot_id', 'an earlier boot')")
    with Outbox(path) as outbox:
        assert outbox.append("event", b"y") == 6


def test_reservations_are_taken_in_blocks(outbox: Outbox, tmp_path: Path) -> None:
    outbox.append("event", b"x")
    (reserved,) = query(tmp_path / "outbox.db", "SELECT value FROM meta WHERE key = 'seq_reserved'")[0]
    assert reserved == 1 + SEQ_BLOCK


# -- pending -------------------------------------------------------------------------------


def test_pending_returns_records_in_seq_order_with_their_fields(outbox: Outbox) -> None:
    before = time.time()
    outbox.append("event", b"first")
    outbox.append("telemetry", bytearray(b"second"))
    outbox.append("event", memoryview(b"third"))
    records = outbox.pending()
    assert [(r.seq, r.kind, r.payload) for r in records] == [
        (1, "event", b"first"),
        (2, "telemetry", b"second"),
        (3, "event", b"third"),
    ]
    assert all(before - 1 <= r.created_at <= time.time() + 1 for r in records)


def test_pending_pages_by_count_bytes_and_after_seq(outbox: Outbox) -> None:
    for _ in range(10):
        outbox.append("event", b"x" * 100)
    assert [r.seq for r in outbox.pending(limit=3)] == [1, 2, 3]
    assert [r.seq for r in outbox.pending(max_bytes=250)] == [1, 2]
    assert [r.seq for r in outbox.pending(after_seq=8)] == [9, 10]
    assert outbox.pending(after_seq=10) == []
    assert outbox.pending(limit=0) == []
    # A record larger than max_bytes still goes out, alone: it must not block the queue.
    big = outbox.append("event", b"y" * 1000)
    assert [r.seq for r in outbox.pending(max_bytes=10, after_seq=10)] == [big]
    # Pending is a read: the records stay until acked.
    assert len(outbox.pending(limit=100)) == 11


# -- acks ----------------------------------------------------------------------------------


def test_ack_deletes_exactly_the_acked_ranges(outbox: Outbox) -> None:
    for _ in range(10):
        outbox.append("event", b"x" * 10)
    assert outbox.ack([(7, 8), (2, 3)]) == 4  # out of order
    assert stored_seqs(outbox) == [1, 4, 5, 6, 9, 10]
    assert outbox.ack([(2, 3), (7, 7)]) == 0  # duplicate acks are harmless
    assert outbox.ack([(9, 50)]) == 2  # past the end
    assert outbox.ack([(100, 200)]) == 0  # unknown seqs
    assert outbox.ack([(6, 5)]) == 0  # an empty range
    assert outbox.ack([]) == 0
    assert stored_seqs(outbox) == [1, 4, 5, 6]
    stats = outbox.stats()
    assert (stats.pending_records, stats.pending_bytes, stats.dropped_records) == (4, 40, 0)


def test_ack_handles_overlaps_and_the_whole_uint64_range(outbox: Outbox) -> None:
    for _ in range(6):
        outbox.append("event", b"x")
    assert outbox.ack([(1, 3), (2, 4)]) == 4
    assert outbox.stats().pending_records == 2
    assert outbox.ack([(0, 2**64 - 1)]) == 2
    assert outbox.stats().pending_records == 0
    assert outbox.append("event", b"x") == 7


def test_ack_ranges_from_the_wire(outbox: Outbox) -> None:
    for _ in range(5):
        outbox.append("event", b"x")
    ack = sync_pb2.Ack(stored=[sync_pb2.SeqRange(first=4, last=5), sync_pb2.SeqRange(first=1, last=1)])
    assert ack_ranges(ack) == [(4, 5), (1, 1)]
    assert outbox.ack(ack_ranges(ack)) == 3
    assert stored_seqs(outbox) == [2, 3]


# -- the byte bound ------------------------------------------------------------------------


def test_appending_past_the_bound_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, max_bytes=10_000) as outbox:
        for _ in range(15):
            assert outbox.append("event", b"x" * 1000) is not None
        stats = outbox.stats()
        assert (stats.pending_records, stats.pending_bytes, stats.dropped_records) == (10, 10_000, 5)
        assert stored_seqs(outbox) == list(range(6, 16))
        # A smaller record evicts only what it needs.
        assert outbox.append("telemetry", b"y" * 10) == 16
        assert stored_seqs(outbox)[0] == 7
        assert outbox.stats().dropped_records == 6
    with Outbox(path, max_bytes=10_000) as outbox:  # the counter is persistent
        assert outbox.stats().dropped_records == 6
        assert outbox.stats().pending_bytes == 9010


def test_a_record_larger_than_the_bound_is_refused_and_counted(outbox: Outbox, tmp_path: Path) -> None:
    with Outbox(tmp_path / "small.db", max_bytes=1000) as small:
        assert small.append("event", b"x" * 600) == 1
        assert small.append("event", b"x" * 1001) is None
        stats = small.stats()
        assert (stats.pending_records, stats.dropped_records, stats.last_seq) == (1, 1, 1)
        assert small.append("event", b"x" * 1000) == 2  # exactly the bound fits (evicting seq 1)
        assert small.stats().dropped_records == 2


def test_a_batch_larger_than_the_bound_keeps_its_newest_records(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", max_bytes=3000) as outbox:
        assert outbox.append("event", b"old" * 100) == 1
        batch: list[tuple[RecordKind, bytes]] = [("event", b"x" * 1000)] * 5
        assert outbox.append_many(batch) == [None, None, 2, 3, 4]
        assert stored_seqs(outbox) == [2, 3, 4]
        assert outbox.stats().dropped_records == 3  # two from the batch, and seq 1
        assert outbox.append_many([("event", b"z" * 5000), ("telemetry", b"t")]) == [None, 5]


def test_append_many_of_nothing(outbox: Outbox) -> None:
    assert outbox.append_many([]) == []
    assert outbox.stats().last_seq == 0


# -- contracts -----------------------------------------------------------------------------


def test_programming_errors_raise(outbox: Outbox, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        outbox.append("metrics", b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        outbox.append("event", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="OFF could corrupt"):
        Outbox(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_bytes"):
        Outbox(tmp_path / "x.db", max_bytes=0)


def test_append_after_close_returns_none_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(tmp_path / "outbox.db").open()
    outbox.close()
    outbox.close()  # idempotent
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert outbox.append("event", b"x") is None
        assert outbox.append("event", b"x") is None
    assert outbox.stats().dropped_records == 2
    assert len([r for r in caplog.records if "after close" in r.getMessage()]) == 1
    assert outbox.pending() == []
    assert outbox.ack([(1, 1)]) == 0


def test_stats_reports_the_age_of_the_oldest_pending_record(outbox: Outbox) -> None:
    assert outbox.stats().oldest_pending_age_s is None
    outbox.append("event", b"x")
    time.sleep(0.05)
    age = outbox.stats().oldest_pending_age_s
    assert age is not None
    assert 0.04 <= age < 5


def test_records_become_wire_batches_per_kind(outbox: Outbox) -> None:
    event = sync_pb2.Event(kind="part_rejected", severity="warning", workflow_id="wf", message="scratch")
    telemetry = sync_pb2.TelemetryRecord(outbox_dropped=3)
    outbox.append("event", event.SerializeToString())
    outbox.append("telemetry", telemetry.SerializeToString())
    outbox.append("event", b"\xff\xff\xff")  # not a valid message
    outbox.append("telemetry", b"")  # an empty message is valid
    records = outbox.pending()
    batches = build_batches("dev-1", records)
    assert batches.telemetry is not None
    assert batches.events is not None
    assert batches.events.device_id == "dev-1"
    assert [r.seq for r in batches.events.records] == [1]
    assert batches.events.records[0].event == event
    assert [r.seq for r in batches.telemetry.records] == [2, 4]
    assert batches.telemetry.records[0].telemetry.outbox_dropped == 3
    assert batches.telemetry.records[1].WhichOneof("body") == "telemetry"
    assert batches.undecodable == (3,)
    created = batches.events.records[0].created_at.ToNanoseconds() / 1e9
    assert created == pytest.approx(records[0].created_at, abs=1e-6)
    # What cannot be sent is discarded and counted, the rest is acked.
    assert outbox.discard(seq_ranges(batches.undecodable)) == 1
    assert outbox.stats().dropped_records == 1
    assert build_batches("dev-1", []).events is None


def test_to_record_round_trips_through_the_wire() -> None:
    payload = sync_pb2.Event(kind="k").SerializeToString()
    record = OutboxRecord(seq=42, kind="event", payload=payload, created_at=1.5)
    wire = sync_pb2.Record.FromString(to_record(record).SerializeToString())
    assert (wire.seq, wire.event.kind) == (42, "k")
    assert (wire.created_at.seconds, wire.created_at.nanos) == (1, 500_000_000)


def test_seq_ranges_compresses() -> None:
    assert seq_ranges([5, 1, 2, 3, 3, 7, 8]) == [(1, 3), (5, 5), (7, 8)]
    assert seq_ranges([]) == []


def test_concurrent_appends_get_unique_contiguous_seqs(outbox: Outbox) -> None:
    per_thread = 250
    results: list[list[int | None]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def worker(index: int) -> None:
        start.wait()
        for i in range(per_thread):
            results[index].append(outbox.append("event", b"%d-%d" % (index, i)))
        # and a reader and an acker running at the same time
        outbox.pending(limit=10)
        outbox.ack([(1, 0)])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seqs = [seq for result in results for seq in result]
    assert None not in seqs
    assert sorted(seqs) == list(range(1, 4 * per_thread + 1))  # type: ignore[type-var]
    for result in results:  # each thread sees its own seqs increase
        assert result == sorted(result)  # type: ignore[type-var]
    assert stored_seqs(outbox) == list(range(1, 4 * per_thread + 1))


def test_under_normal_a_background_thread_fsyncs_what_was_appended(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", durable_interval_s=0.1) as outbox:
        outbox.append("event", b"x")  # the first append reserves seqs: an fsync'ed commit
        statements: list[str] = []
        outbox._db.conn.set_trace_callback(statements.append)  # type: ignore[union-attr]
        try:
            outbox.append("event", b"x")
            assert len(statements) == 1  # the append itself: a lone INSERT, no fsync
            assert statements[0].startswith("INSERT INTO records")
            deadline = time.monotonic() + 5
            while "PRAGMA synchronous=NORMAL" not in statements and time.monotonic() < deadline:
                time.sleep(0.02)
            assert [statement.split(" (")[0] for statement in statements[1:]] == [
                "PRAGMA synchronous=FULL",
                "BEGIN IMMEDIATE",
                "INSERT OR REPLACE INTO meta",
                "COMMIT",
                "PRAGMA synchronous=NORMAL",
            ]
            statements.clear()
            time.sleep(0.3)
            assert statements == []  # nothing new to make durable: the thread stays idle
            assert outbox.flush()
        finally:
            outbox._db.conn.set_trace_callback(None)  # type: ignore[union-attr]


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a SQLite database, just some bytes" * 100)
    with pytest.raises(OutboxError, match="unusable"):
        Outbox(path).open()


def test_an_outbox_that_cannot_be_created_degrades_instead_of_raising(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    outbox = Outbox(tmp_path / "a-file" / "outbox.db", retry_interval_s=0)
    outbox.open()  # does not raise: inference must start even so
    try:
        assert outbox.append("event", b"x") is None
        stats = outbox.stats()
        assert stats.fault is OutboxFault.IO_ERROR
        assert stats.dropped_records == 1
        assert outbox.pending() == []
    finally:
        outbox.close()


# -- failures ------------------------------------------------------------------------------

CHILD = """
import sys
from pathlib import Path
from agent.sync.outbox import Outbox

outbox = Outbox(Path(sys.argv[1])).open()
i = 0
while True:
    seq = outbox.append("event", b"record %d" % i + b"." * 200)
    sys.stdout.write(f"{seq} {i}\\n")  # one write: a kill cannot split the line
    sys.stdout.flush()
    i += 1
"""


def test_kill_9_loses_nothing_the_caller_was_given(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    printed: dict[int, int] = {}
    highest_stored = 0
    for _ in range(3):  # kill, reopen, kill again: the numbering carries on
        with subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        ) as child:
            assert child.stdout is not None
            lines: list[str] = []
            deadline = time.monotonic() + 10
            while len(lines) < 300 and time.monotonic() < deadline:
                line = child.stdout.readline()
                if not line:
                    break
                lines.append(line)
            os.kill(child.pid, signal.SIGKILL)
            rest, _ = child.communicate(timeout=10)
            assert child.returncode == -signal.SIGKILL
        lines += rest.splitlines(keepends=True)
        round_seqs: dict[int, int] = {}
        for number, line in enumerate(lines):
            if number == len(lines) - 1 and not line.endswith("\n"):
                continue  # a line cut by the kill proves nothing
            seq_text, index_text = line.split()
            assert seq_text != "None", "the child could not store a record"
            round_seqs[int(seq_text)] = int(index_text)
        assert len(round_seqs) >= 300
        # Same boot, so nothing can have been lost: numbering continues without a gap.
        assert min(round_seqs) == highest_stored + 1
        printed.update(round_seqs)
        with Outbox(path) as outbox:
            stored = {r.seq: r.payload for r in outbox.pending(limit=1_000_000, max_bytes=1 << 40)}
            highest_stored = outbox.stats().last_seq
        missing = sorted(set(printed) - set(stored))
        assert not missing, f"records acknowledged to the caller are gone: {missing[:10]}"
        for printed_seq, index in printed.items():
            assert stored[printed_seq].startswith(b"record %d." % index)
        assert query(path, "PRAGMA integrity_check") == [("ok",)]


def test_locked_database_degrades_fast_and_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, retry_interval_s=0.2) as outbox:
        assert outbox.append("event", b"before") == 1
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            other.execute("INSERT INTO meta (key, value) VALUES ('held', 1)")
            with caplog.at_level(logging.INFO, logger=LOGGER):
                started = time.monotonic()
                assert outbox.append("event", b"blocked") is None  # waits busy_timeout_s (0.2 s)
                assert time.monotonic() - started < 0.5
                assert outbox.fault is OutboxFault.LOCKED
                started = time.monotonic()
                for _ in range(100):  # until the next probe, appends fail without waiting
                    assert outbox.append("event", b"blocked") is None
                assert time.monotonic() - started < 0.1
                assert outbox.stats().dropped_records == 101
                assert [r.seq for r in outbox.pending()] == [1]  # readers are not blocked (WAL)
                other.execute("ROLLBACK")
                time.sleep(0.25)
                assert outbox.append("event", b"after") == 2
                assert outbox.stats().fault is None
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        infos = [r for r in caplog.records if r.levelno == logging.INFO]
        assert len(warnings) == 1
        assert "write lock" in warnings[0].getMessage()
        assert len(infos) == 1
        assert "101 records were lost" in infos[0].getMessage()
    with Outbox(path) as outbox:  # the losses were stored with the next successful write
        assert outbox.stats().dropped_records == 101


def test_a_flush_that_meets_the_lock_makes_appends_fail_fast(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, durable_interval_s=0.05, retry_interval_s=0.3) as outbox:
        outbox.append("event", b"x")
        outbox.append("event", b"not yet fsync'ed")
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            deadline = time.monotonic() + 5
            while outbox.fault is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert outbox.fault is OutboxFault.LOCKED  # found by the background flush
            started = time.monotonic()
            assert outbox.append("event", b"y") is None
            assert time.monotonic() - started < 0.05  # no wait for the lock
            other.execute("ROLLBACK")
        time.sleep(0.35)
        assert outbox.append("event", b"z") == 3
        assert outbox.stats().dropped_records == 1


def test_full_database_degrades_and_recovers(tmp_path: Path) -> None:
    """SQLITE_FULL from the database's page limit, as a full disk would return it."""
    path = tmp_path / "outbox.db"
    with Outbox(path, retry_interval_s=0.05) as outbox:
        assert outbox.append("event", b"x" * 100) == 1
        conn = outbox._db.conn  # type: ignore[union-attr]
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages}")
        started = time.monotonic()
        assert outbox.append("event", os.urandom(20_000)) is None
        assert time.monotonic() - started < 0.5
        assert outbox.fault is OutboxFault.DISK_FULL
        assert outbox.stats().dropped_records == 1
        conn.execute("PRAGMA max_page_count = 1000000")  # space is freed
        time.sleep(0.06)
        assert outbox.append("event", os.urandom(20_000)) == 2
        assert outbox.stats().fault is None
        assert stored_seqs(outbox) == [1, 2]
    with Outbox(path) as outbox:
        assert outbox.stats().dropped_records == 1
        assert query(path, "PRAGMA integrity_check") == [("ok",)]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a file system that really fills up."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("no mount command")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the file system has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = 1 << 16
        while chunk:
            try:
                if os.write(fd, b"\0" * chunk) < chunk:
                    chunk //= 2
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2
    finally:
        os.close(fd)


def test_full_disk_degrades_and_recovers(tiny_fs: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tiny_fs / "outbox.db"
    with Outbox(path, retry_interval_s=0.05) as outbox:
        assert outbox.append("event", b"x" * 300) == 1
        filler = tiny_fs / "filler"
        fill(filler)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            stored = 0
            for _ in range(100):  # the WAL may have a little room left in its last page
                started = time.monotonic()
                seq = outbox.append("event", os.urandom(4000))
                elapsed = time.monotonic() - started
                if seq is None:
                    break
                stored += 1
            assert seq is None, "the full file system accepted 100 records of 4 KB"
            assert elapsed < 0.5
            assert outbox.fault is OutboxFault.DISK_FULL
            assert outbox.append("event", b"y") is None  # no probe due yet
        assert [r.getMessage() for r in caplog.records if "is full" in r.getMessage()] != []
        assert outbox.stats().dropped_records == 2
        filler.unlink()
        time.sleep(0.06)
        assert outbox.append("event", b"z" * 300) == stored + 2
        assert outbox.stats().fault is None
    with Outbox(path) as outbox:
        assert outbox.stats().dropped_records == 2
        assert stored_seqs(outbox) == list(range(1, stored + 3))
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
