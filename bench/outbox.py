"""How fast the outbox stores records, against a bare sqlite3 insert loop with the same settings.

Payloads are realistic: a serialized ``Event`` of ~300 bytes (a rejected part with its lineage)
and a ``TelemetryRecord`` of ~2 KB (one workflow's histograms and the system metrics).

For ``synchronous`` NORMAL and FULL (WAL mode both), and for each payload:

- ``single``: one :meth:`Outbox.append` per record, each committed; the baseline is a plain
  ``INSERT`` per record into a table of the same shape, on a bare ``sqlite3`` connection
  (autocommit: one transaction per insert);
- ``batch``: :meth:`Outbox.append_many` of ``--batch`` records; the baseline is an
  ``executemany`` of as many rows in one transaction.

Each repetition uses fresh database files, and the baseline and the outbox alternate. Reported:
the median rate (records/s) over the repetitions, the p99 latency of one call (one append, or
one batch) over all of them (and the worst, where WAL checkpoints show), and the ratio
outbox / baseline of the median rates. The outbox runs with its defaults, including one
fsync'ed commit per second under NORMAL.

Run: ``.venv/bin/python bench/outbox.py [--records N] [--reps R] [--batch B] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from agent.sync.outbox import Outbox, RecordKind  # noqa: E402
from protos import sync_pb2  # noqa: E402

Timer = Callable[[], None]


def event_payload() -> bytes:
    lineage = sync_pb2.Lineage(
        model_sha256="9f2c" * 16,
        workflow_id="surface-inspection",
        workflow_version=12,
        threshold_set="surface",
        threshold_version=7,
        rollout_id="ro-20261125-01",
        cohort="canary",
    )
    event = sync_pb2.Event(
        kind="part_rejected",
        severity="warning",
        workflow_id="surface-inspection",
        run_id="4be1c3d27a9f4e0c8d6b5a4f3e2d1c0b",
        lineage=lineage,
        message="score 0.913 above threshold 0.75",
        attributes_json='{"score":0.913,"camera":"line-2","part_id":"P-0012345"}',
    )
    event.at.GetCurrentTime()
    return event.SerializeToString()


def histogram(scale: float) -> sync_pb2.Histogram:
    bounds = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]
    counts = [int(scale * (i + 3) * 7) for i in range(len(bounds) + 1)]
    return sync_pb2.Histogram(bounds=bounds, counts=counts, sum=sum(counts) * 4.2, count=sum(counts))


def telemetry_payload() -> bytes:
    workflow = sync_pb2.WorkflowTelemetry(
        workflow_id="surface-inspection",
        lineage=sync_pb2.Lineage(
            model_sha256="9f2c" * 16,
            workflow_id="surface-inspection",
            workflow_version=12,
            threshold_set="surface",
            threshold_version=7,
            cohort="baseline",
        ),
        runs=1800,
        passed=1771,
        failed=25,
        errors=1,
        skipped=3,
        latency_ms=histogram(1.0),
        batch_size=histogram(0.2),
        dropped_frames=4,
    )
    for node in ("camera", "resize", "normalize", "detector", "classifier", "gate", "annotate", "publish"):
        workflow.node_latency_ms[node].CopyFrom(histogram(0.8))
    workflow.model_latency_ms["detector-int8"].CopyFrom(histogram(0.9))
    workflow.model_latency_ms["classifier-fp16"].CopyFrom(histogram(0.9))
    system = sync_pb2.SystemMetrics(
        cpu_percent=63.5,
        memory_used_bytes=1_700_000_000,
        memory_total_bytes=4_000_000_000,
        disk_used_bytes=9_000_000_000,
        disk_total_bytes=32_000_000_000,
        temperatures_c={"cpu": 61.0, "soc": 58.5, "board": 44.0},
        process_rss_bytes=420_000_000,
    )
    record = sync_pb2.TelemetryRecord(workflows=[workflow], system=system, outbox_dropped=0)
    record.window_start.GetCurrentTime()
    record.window_end.GetCurrentTime()
    return record.SerializeToString()


def timed(calls: int, call: Callable[[int], None]) -> tuple[float, list[float]]:
    """Run ``call(i)`` ``calls`` times: (total seconds, per-call seconds)."""
    latencies: list[float] = []
    clock = time.perf_counter
    start = clock()
    for i in range(calls):
        t0 = clock()
        call(i)
        latencies.append(clock() - t0)
    return clock() - start, latencies


def baseline_run(
    path: Path, sync: str, kind: RecordKind, payload: bytes, records: int, batch: int
) -> tuple[float, list[float]]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={sync}")
        conn.execute(
            "CREATE TABLE records (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, created_at REAL NOT NULL, "
            "size INTEGER NOT NULL, payload BLOB NOT NULL)"
        )
        sql = "INSERT INTO records (kind, created_at, size, payload) VALUES (?, ?, ?, ?)"
        if batch == 1:

            def one(_: int) -> None:
                conn.execute(sql, (kind, time.time(), len(payload), payload))

            return timed(records, one)

        def many(_: int) -> None:
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, [(kind, now, len(payload), payload)] * batch)
            conn.execute("COMMIT")

        return timed(records // batch, many)
    finally:
        conn.close()


def outbox_run(
    path: Path, sync: str, kind: RecordKind, payload: bytes, records: int, batch: int
) -> tuple[float, list[float]]:
    with Outbox(path, synchronous="FULL" if sync == "FULL" else "NORMAL") as outbox:
        if batch == 1:

            def one(_: int) -> None:
                if outbox.append(kind, payload) is None:
                    raise RuntimeError("the outbox refused a record")

            return timed(records, one)

        items = [(kind, payload)] * batch

        def many(_: int) -> None:
            if None in outbox.append_many(items):
                raise RuntimeError("the outbox refused a record")

        return timed(records // batch, many)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def machine(directory: Path) -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except FileNotFoundError:
        pass
    fs = "?"
    try:
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount_point, fstype, *_ = line.split()
            if str(directory.resolve()).startswith(mount_point) and len(mount_point) > len(best):
                best, fs = mount_point, fstype
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "filesystem": fs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="records per run")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of every case")
    parser.add_argument("--batch", type=int, default=100, help="records per append_many")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/outbox.json"))
    args = parser.parse_args()

    payloads: dict[str, tuple[RecordKind, bytes]] = {
        "event": ("event", event_payload()),
        "telemetry": ("telemetry", telemetry_payload()),
    }
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="outbox-bench-") as tmp:
        workdir = Path(tmp)
        info = machine(workdir)
        counter = 0
        for sync in ("NORMAL", "FULL"):
            for name, (kind, payload) in payloads.items():
                for batch in (1, args.batch):
                    runs: dict[str, list[tuple[float, list[float]]]] = {"baseline": [], "outbox": []}
                    for rep in range(args.reps):
                        order = ("baseline", "outbox") if rep % 2 == 0 else ("outbox", "baseline")
                        for impl in order:
                            counter += 1
                            path = workdir / f"{counter}.db"
                            run = baseline_run if impl == "baseline" else outbox_run
                            runs[impl].append(run(path, sync, kind, payload, args.records, batch))
                    case: dict[str, Any] = {
                        "synchronous": sync,
                        "payload": name,
                        "payload_bytes": len(payload),
                        "mode": "single" if batch == 1 else f"batch of {batch}",
                    }
                    for impl, results in runs.items():
                        records = (args.records // batch) * batch
                        rates = [records / total for total, _ in results]
                        latencies = [lat for _, lats in results for lat in lats]
                        case[impl] = {
                            "rate_median": statistics.median(rates),
                            "rates": rates,
                            "call_median_us": statistics.median(latencies) * 1e6,
                            "call_p99_us": p99(latencies) * 1e6,
                            "call_max_us": max(latencies) * 1e6,
                        }
                    case["ratio"] = case["outbox"]["rate_median"] / case["baseline"]["rate_median"]
                    cases.append(case)
                    base, box = case["baseline"], case["outbox"]
                    print(
                        f"{sync:6} {name:9} ({len(payload):5} B) {case['mode']:12} "
                        f"baseline {base['rate_median']:9.0f}/s p99 {base['call_p99_us']:8.0f} µs"
                        f" | outbox {box['rate_median']:9.0f}/s p99 {box['call_p99_us']:8.0f} µs"
                        f" max {box['call_max_us'] / 1000:6.1f} ms"
                        f" | ratio {case['ratio']:.2f}",
                        flush=True,
                    )
    report = {
        "machine": info,
        "records_per_run": args.records,
        "reps": args.reps,
        "batch": args.batch,
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
