"""Draining a device's outbox into the control plane's store through Mosquitto, end to end.

What is measured (issue 5's target: a 100,000-record backlog drained at >= 2,000 records/s):

- ``drain``: an outbox holding ``--records`` records (99 % ``part_rejected`` events, 1 %
  telemetry records made by the agent's own collector) is drained by
  :class:`agent.sync.sender.OutboxSender` (default settings: batches of 500 records, a window of
  5,000 records / 4 MiB) through a real Mosquitto into a real control plane (in-process uvicorn
  with its MQTT bridge, SQLite), until the last ack has emptied the outbox. The device side runs
  in a process of its own (as on a real device, it does not share the control plane's GIL).
  Records/s = records / (time from the sender's start to an empty outbox). Every run starts
  from a fresh control plane and checks that every seq was stored exactly once.
- ``baseline``: the transport's ceiling in the same run: one raw paho client publishes the same
  records, packed in messages of the same batch size, QoS 1 with paho's in-flight window of 20
  (as the agent's client), and another raw paho client receives them (QoS 1) — raw paho →
  Mosquitto → paho, no outbox, no parsing, no store. The phases alternate, ``--rounds`` times;
  figures are medians.
- ``ingest``: the control plane's store alone, the ceiling of the drain: ``ingest_records`` of
  ``controlplane.bridge.ingest`` (what the bridge calls) on ``--ingest-records`` of the same
  records, in transactions of 500, no MQTT.
- ``offline`` (``--offline-records``, 60,000 by default: a device 10 minutes offline at 100
  records/s): the broker is stopped, the records are appended 100 at a time, the broker starts
  again and the drain is timed from its start (the device and the control plane reconnect,
  the sender probes, then drains).
- ``sweep`` (``--sweep``): the drain of ``--sweep-records`` records for several batch sizes.
- ``idle``: a real agent (``edgefleet-agent serve``, managed, no workflow) connected to the
  broker: its RSS and CPU sampled with psutil over ``--idle-s`` seconds.

Run: ``.venv/bin/python bench/sync_drain.py [--records 100000] [--rounds 3] [--batch 500]
[--offline-records 60000] [--ingest-records 20000] [--sweep] [--idle-s 30] [--quick]``.
Results: a summary on stdout, everything in ``bench/results/sync-drain-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from agent.sync.outbox import Outbox, RecordKind  # noqa: E402
from agent.sync.records import build_batches, to_record  # noqa: E402
from agent.sync.telemetry import Lineage, SystemProbe, TelemetryCollector  # noqa: E402
from agent.workflow.result import NodeRun, RunResult  # noqa: E402
from controlplane.settings import ControlPlaneSettings  # noqa: E402
from controlplane.store.schema import ingested_records  # noqa: E402
from tests.controlplane.live import LiveControlPlane, live_control_plane  # noqa: E402
from tests.mosquitto import MosquittoBroker  # noqa: E402

DEVICE = "bench-cam"
RESULTS = REPO / "bench" / "results"


# ---- records ------------------------------------------------------------------------------------


def sample_payloads() -> tuple[bytes, bytes]:
    """A ``part_rejected`` event and a telemetry record as the agent makes them."""
    lineage = Lineage("surface_inspection", 3, "ab" * 32, "surface", 7, "rollout-12", "canary")
    collector = TelemetryCollector(interval_s=10, system=SystemProbe(REPO, gpus=False))
    nodes = {n: NodeRun("succeeded", d) for n, d in [("decode", 0.004), ("infer", 0.011), ("gate", 0.0001)]}
    for index in range(200):
        decision = "reject" if index % 7 == 0 else "accept"
        result = RunResult(
            run_id=f"run-{index}",
            workflow_id="surface_inspection",
            workflow_version=3,
            status="succeeded",
            outputs={"gate": {"decision": decision, "score": 0.61, "threshold": 0.535, "class": None}},
            nodes=nodes,
            branches={},
            error=None,
            duration_s=0.012 + index * 1e-5,
        )
        collector.record_run(
            result, lineage=lineage, frame={"source": "surface_inspection.0.capture", "seq": index}
        )
    event = collector.take_events()[0]
    telemetry = collector.close_interval()
    collector.stop(flush=False)
    return event.SerializeToString(), telemetry.SerializeToString()


def fill(outbox: Outbox, records: int, *, chunk: int = 1000) -> None:
    event, telemetry = sample_payloads()
    items: list[tuple[RecordKind, bytes]] = [
        ("telemetry" if index % 100 == 0 else "event", telemetry if index % 100 == 0 else event)
        for index in range(chunk)
    ]
    for start in range(0, records, chunk):
        outbox.append_many(items[: min(chunk, records - start)])


# ---- the device's side (a child process) --------------------------------------------------------


def device_main(args: argparse.Namespace) -> None:
    """``--device``: open the outbox, connect, wait for "go" on stdin, drain, print the time."""
    from agent.sync.mqtt import SyncClient
    from agent.sync.sender import OutboxSender

    outbox = Outbox(Path(args.outbox)).open()
    client = SyncClient(
        DEVICE,
        args.host,
        args.port,
        username=DEVICE,
        password=args.password,
        session_expiry_s=3600,
        reconnect_min_s=0.05,
        reconnect_max_s=0.5,
    )
    sender = OutboxSender(outbox, client, DEVICE, batch_records=args.batch)
    client.start()
    if not client.wait_connected(30):
        print(f"the device could not connect: {client.last_error}", flush=True)
        raise SystemExit(1)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    cpu_started = time.process_time()
    sender.start()
    if args.offline:
        # the broker is down (the parent stopped it): append as the device would, 100 at a time
        while client.connected.is_set():
            time.sleep(0.01)
        event, telemetry = sample_payloads()
        for second in range(args.offline // 100):
            outbox.append_many(
                [
                    ("telemetry", telemetry) if second % 10 == 0 and i == 0 else ("event", event)
                    for i in range(100)
                ]
            )
        print("filled", flush=True)
        started = float(sys.stdin.readline())  # the broker's restart (time.monotonic is system-wide)
    sender.wait_drained()
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_started
    status = dataclasses.asdict(sender.status())
    print(json.dumps({"elapsed_s": elapsed, "device_cpu_s": cpu, "sender": status}), flush=True)
    sender.stop()
    client.close()
    outbox.close()


def raw_publisher_main(args: argparse.Namespace) -> None:
    """``--raw-publish``: publish the messages of a file, QoS 1, paho's window of 20; wait for
    every PUBACK."""
    payloads = json.loads(Path(args.messages).read_text())
    blobs = [bytes.fromhex(p) for p in payloads]
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"raw-pub-{os.getpid()}", protocol=mqtt.MQTTv5
    )
    client.username_pw_set(DEVICE, args.password)
    client.max_inflight_messages_set(20)
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(_client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    client.connect(args.host, args.port)
    client.loop_start()
    if not connected.wait(30) or refused:
        print(f"the publisher could not connect: {refused}", flush=True)
        raise SystemExit(1)
    print("ready", flush=True)
    sys.stdin.readline()
    infos = [client.publish(f"edgefleet/v1/devices/{DEVICE}/events", blob, qos=1) for blob in blobs]
    for info in infos:
        info.wait_for_publish(120)
    unacked = sum(1 for info in infos if not info.is_published())
    print("published" if not unacked else f"{unacked} messages not acknowledged", flush=True)
    client.disconnect()
    client.loop_stop()


def spawn(*argv: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "ready":
        process.kill()
        raise RuntimeError(f"the child did not start: {line!r}")
    return process


def tell(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


def result_of(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert process.stdin is not None
    process.stdin.close()
    process.wait(60)
    process.stdout.close()
    data: dict[str, Any] = json.loads(line)
    return data


# ---- the control plane ---------------------------------------------------------------------------


@contextmanager
def control_plane(base: Path, broker: MosquittoBroker) -> Iterator[tuple[LiveControlPlane, str]]:
    """A fresh control plane with its bridge and the bench device enrolled: (live, MQTT password)."""
    settings = ControlPlaneSettings(
        data_dir=base,
        schema_dirs=[REPO / "examples" / "schemas"],
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        mqtt_username=broker.control_plane_user,
        mqtt_password=broker.control_plane_password,
        log_json=False,
    )
    with live_control_plane(settings) as live:
        bridge = live.services.bridge
        assert bridge is not None
        assert bridge.connected.wait(15)
        token = live.admin().post("/api/v1/enrollment-tokens", json={}).json()["token"]
        enrolled = live.client().post("/api/v1/enroll", json={"token": token, "device_id": DEVICE}).json()
        password = str(enrolled["mqtt"]["password"])
        broker.add_device(DEVICE, password)
        yield live, password


def check_exactly_once(live: LiveControlPlane, records: int) -> None:
    with live.services.db.read() as conn:
        count, low, high = conn.execute(
            sa.select(
                sa.func.count(), sa.func.min(ingested_records.c.seq), sa.func.max(ingested_records.c.seq)
            ).where(ingested_records.c.device_id == DEVICE)
        ).one()
    if (count, low, high) != (records, 1, records):
        raise AssertionError(f"stored {count} records, seqs {low}..{high}; expected 1..{records} once each")


# ---- phases --------------------------------------------------------------------------------------


def drain(base: Path, broker: MosquittoBroker, records: int, batch: int) -> dict[str, Any]:
    with control_plane(base / "cp", broker) as (live, password):
        outbox_path = base / "device" / "outbox.db"
        with Outbox(outbox_path) as outbox:
            fill(outbox, records)
        child = spawn(
            "--device",
            "--outbox",
            str(outbox_path),
            "--host",
            broker.host,
            "--port",
            str(broker.port),
            f"--password={password}",
            "--batch",
            str(batch),
        )
        cpu_before = psutil.cpu_times()
        tell(child, "go")
        result = result_of(child)
        cpu = _cpu_since(cpu_before, result["elapsed_s"])
        check_exactly_once(live, records)
    return {
        "records": records,
        "batch": batch,
        "elapsed_s": round(result["elapsed_s"], 2),
        "records_per_s": round(records / result["elapsed_s"]),
        "machine_busy_cores": cpu,
        "device_cpu_s": round(result["device_cpu_s"], 2),
        "sender": result["sender"],
    }


def ingest_ceiling(base: Path, broker: MosquittoBroker, records: int) -> dict[str, Any]:
    """The control plane's ingest alone: the same records, stored in transactions of 500."""
    from controlplane.bridge import ingest

    with control_plane(base / "cp", broker) as (live, _):
        with Outbox(base / "ingest-outbox.db") as outbox:
            fill(outbox, records)
            wire = [to_record(r) for r in outbox.pending(limit=records, max_bytes=2**40)]
        started = time.perf_counter()
        for start in range(0, len(wire), 500):
            with live.services.db.write() as conn:
                ingest.ingest_records(conn, DEVICE, wire[start : start + 500])
        elapsed = time.perf_counter() - started
        check_exactly_once(live, records)
    return {"records": records, "elapsed_s": round(elapsed, 2), "records_per_s": round(records / elapsed)}


def offline(base: Path, broker: MosquittoBroker, records: int) -> dict[str, Any]:
    """The broker down while the device appends ``records``, 100 at a time (compressed time);
    timed from the broker's restart to an empty outbox."""
    with control_plane(base / "cp", broker) as (live, password):
        child = spawn(
            "--device",
            "--outbox",
            str(base / "device" / "outbox.db"),
            "--host",
            broker.host,
            "--port",
            str(broker.port),
            f"--password={password}",
            "--offline",
            str(records),
        )
        broker.stop()
        tell(child, "go")
        assert child.stdout is not None
        if child.stdout.readline().strip() != "filled":
            raise RuntimeError("the device did not fill its outbox")
        started = time.monotonic()
        broker.restart()
        tell(child, repr(started))
        result = result_of(child)
        check_exactly_once(live, records)
    return {
        "records": records,
        "elapsed_s": round(result["elapsed_s"], 2),
        "records_per_s": round(records / result["elapsed_s"]),
        "sender": result["sender"],
    }


def baseline(base: Path, broker: MosquittoBroker, records: int, batch: int) -> dict[str, Any]:
    """Raw paho → Mosquitto → paho with the same messages the sender would publish."""
    password = broker.add_device(DEVICE)
    with Outbox(base / "baseline-outbox.db") as outbox:
        fill(outbox, records)
        blobs: list[bytes] = []
        after = 0
        while page := outbox.pending(limit=batch, max_bytes=256 * 1024, after_seq=after):
            batches = build_batches(DEVICE, page)
            blobs.extend(b.SerializeToString() for b in (batches.telemetry, batches.events) if b is not None)
            after = page[-1].seq
    messages = base / "baseline-messages.json"
    messages.write_text(json.dumps([blob.hex() for blob in blobs]))

    received = 0
    done = threading.Event()

    def on_message(*_: Any) -> None:
        nonlocal received
        received += 1
        if received == len(blobs):
            done.set()

    subscriber = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"raw-sub-{base.name}", protocol=mqtt.MQTTv5
    )
    subscriber.username_pw_set(broker.control_plane_user, broker.control_plane_password)
    subscribed = threading.Event()
    granted: list[Any] = []
    subscriber.on_connect = lambda c, *_: c.subscribe(f"edgefleet/v1/devices/{DEVICE}/events", qos=1)

    def on_subscribe(_client: Any, _userdata: Any, _mid: int, codes: list[Any], _props: Any) -> None:
        granted.extend(codes)
        subscribed.set()

    subscriber.on_subscribe = on_subscribe
    subscriber.on_message = on_message
    subscriber.connect(broker.host, broker.port)
    subscriber.loop_start()
    try:
        if not subscribed.wait(30) or any(code.is_failure for code in granted):
            raise RuntimeError(f"the baseline subscriber could not subscribe: {granted}")
        child = spawn(
            "--raw-publish",
            "--messages",
            str(messages),
            "--host",
            broker.host,
            "--port",
            str(broker.port),
            f"--password={password}",
        )
        started = time.perf_counter()
        tell(child, "go")
        if not done.wait(180):
            assert child.stdout is not None
            said = child.stdout.readline().strip() if child.poll() is not None else "(still running)"
            child.kill()
            raise RuntimeError(
                f"the baseline received {received} of {len(blobs)} messages; the publisher: {said}; "
                f"the broker:\n{broker.log_tail(20)}"
            )
        elapsed = time.perf_counter() - started
        assert child.stdout is not None
        child.stdout.readline()
        assert child.stdin is not None
        child.stdin.close()
        child.wait(60)
        child.stdout.close()
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()
    return {
        "records": records,
        "messages": len(blobs),
        "message_bytes_mean": round(statistics.mean(len(b) for b in blobs)),
        "elapsed_s": round(elapsed, 3),
        "records_per_s": round(records / elapsed),
    }


def idle(base: Path, broker: MosquittoBroker, seconds: float) -> dict[str, Any]:
    """A managed agent with nothing to run, connected: RSS and CPU over ``seconds``."""
    with control_plane(base / "cp", broker) as (live, _):
        data_dir = base / "agent"
        data_dir.mkdir(parents=True, exist_ok=True)
        token = live.admin().post("/api/v1/enrollment-tokens", json={}).json()["token"]
        enrolled = live.client().post("/api/v1/enroll", json={"token": token, "device_id": "idle-cam"}).json()
        broker.add_device("idle-cam", enrolled["mqtt"]["password"])
        (data_dir / "credentials.json").write_text(
            json.dumps(
                {
                    "device_id": "idle-cam",
                    "credential": enrolled["credential"],
                    "signing_public_key": enrolled["signing_public_key"],
                    "api_url": live.url,
                }
            )
        )
        config = base / "agent.yaml"
        config.write_text(
            json.dumps(
                {
                    "device_id": "idle-cam",
                    "data_dir": str(data_dir),
                    "profile": "x86-cpu",
                    "sync": {
                        "mqtt_host": broker.host,
                        "mqtt_port": broker.port,
                        "mqtt_password": enrolled["mqtt"]["password"],
                    },
                }
            )
        )
        cli = Path(sys.executable).parent / "edgefleet-agent"
        process = subprocess.Popen(
            [str(cli), "serve", "--config", str(config), "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            agent = psutil.Process(process.pid)
            deadline = time.monotonic() + 60
            while not (data_dir / "sync" / "outbox.db").exists():  # started and connecting
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the agent did not start")
                time.sleep(0.1)
            time.sleep(3)  # settle: connected, first reported state sent
            cpu_before = agent.cpu_times()
            started = time.perf_counter()
            rss: list[int] = []
            while time.perf_counter() - started < seconds:
                rss.append(agent.memory_info().rss)
                time.sleep(0.5)
            cpu_after = agent.cpu_times()
            elapsed = time.perf_counter() - started
        finally:
            process.terminate()
            process.wait(30)
    busy = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return {
        "seconds": round(elapsed, 1),
        "rss_mib_median": round(statistics.median(rss) / 2**20, 1),
        "rss_mib_max": round(max(rss) / 2**20, 1),
        "cpu_percent_of_one_core": round(100 * busy / elapsed, 2),
    }


def phase(run: Callable[..., dict[str, Any]], base: Path, *args: Any) -> dict[str, Any]:
    """``run(base, broker, *args)`` with a broker of its own (no state left by earlier phases);
    on failure the broker's log tail goes to stderr."""
    broker = MosquittoBroker.start(base / "broker")
    try:
        return run(base, broker, *args)
    except BaseException:
        print(f"the broker's log:\n{broker.log_tail(40)}", file=sys.stderr, flush=True)
        raise
    finally:
        broker.stop()


def _busy(times: Any) -> float:
    return float(times.user + times.nice + times.system + times.irq + times.softirq)


def _cpu_since(before: Any, elapsed: float) -> float:
    """Cores kept busy since ``before`` (all processes; steal time left out)."""
    return round((_busy(psutil.cpu_times()) - _busy(before)) / max(elapsed, 1e-9), 2)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False
        ).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--offline-records", type=int, default=60_000)
    parser.add_argument("--ingest-records", type=int, default=20_000)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--sweep-records", type=int, default=20_000)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="10,000 records, 1 round, 5 s idle")
    # child modes
    parser.add_argument("--device", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--raw-publish", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--outbox", help=argparse.SUPPRESS)
    parser.add_argument("--messages", help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--password", help=argparse.SUPPRESS)
    parser.add_argument("--offline", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device:
        device_main(args)
        return
    if args.raw_publish:
        raw_publisher_main(args)
        return
    if args.quick:
        args.records, args.rounds, args.offline_records, args.idle_s = 10_000, 1, 10_000, 5.0
        args.ingest_records = 5_000

    report: dict[str, Any] = {"machine": machine(), "started": datetime.now(UTC).isoformat()}
    with tempfile.TemporaryDirectory(prefix="edgefleet-sync-bench-") as tmp:
        root = Path(tmp)
        drains: list[dict[str, Any]] = []
        baselines: list[dict[str, Any]] = []
        ingests: list[dict[str, Any]] = []
        for round_ in range(args.rounds):
            baselines.append(phase(baseline, root / f"baseline-{round_}", args.records, args.batch))
            print("baseline", baselines[-1], flush=True)
            if args.ingest_records:
                ingests.append(phase(ingest_ceiling, root / f"ingest-{round_}", args.ingest_records))
                print("ingest", ingests[-1], flush=True)
            drains.append(phase(drain, root / f"drain-{round_}", args.records, args.batch))
            print("drain", drains[-1], flush=True)
        report["baseline"] = baselines
        report["ingest"] = ingests
        report["drain"] = drains
        drain_rate = statistics.median(d["records_per_s"] for d in drains)
        base_rate = statistics.median(b["records_per_s"] for b in baselines)
        report["summary"] = {
            "drain_records_per_s_median": round(drain_rate),
            "baseline_records_per_s_median": round(base_rate),
            "ratio": round(drain_rate / base_rate, 4),
            "ingest_records_per_s_median": round(statistics.median(i["records_per_s"] for i in ingests))
            if ingests
            else None,
            "target_records_per_s": 2000,
        }
        if args.offline_records:
            report["offline"] = phase(offline, root / "offline", args.offline_records)
            print("offline", report["offline"], flush=True)
        if args.sweep:
            report["sweep"] = []
            for batch in (100, 250, 500, 1000):
                result = phase(drain, root / f"sweep-{batch}", args.sweep_records, batch)
                report["sweep"].append(result)
                print("sweep", result, flush=True)
        if args.idle_s > 0:
            report["idle"] = phase(idle, root / "idle", args.idle_s)
            print("idle", report["idle"], flush=True)
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"sync-drain-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
