"""The outbox sender end to end: outbox → paho → Mosquitto → the control plane's bridge → its store
→ Ack → outbox, with faults (broker restart, control plane down, agent killed, broker dropping
messages), and afterwards every record stored exactly once, in order."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent.manifest import load_public_key
from agent.sync.mqtt import SyncClient, topic
from agent.sync.outbox import Outbox, RecordKind
from agent.sync.sender import OutboxSender
from controlplane.broker.config import write_broker_config
from controlplane.settings import ControlPlaneSettings
from controlplane.store.schema import events, ingested_records, system_minutes, telemetry_minutes
from protos import sync_pb2
from tests.controlplane.live import LiveControlPlane, live_control_plane
from tests.mosquitto import MosquittoBroker, MqttTestClient
from tests.mqtt_fixtures import mosquitto  # noqa: F401
from tests.sync.fleet import WORKFLOW_ID, Agents, Fleet

REPO = Path(__file__).resolve().parents[2]
DEVICE = "cam-1"


# ---- records -----------------------------------------------------------------------------------


def payloads(count: int, start: int = 0) -> list[tuple[RecordKind, bytes]]:
    """``count`` records: every tenth a telemetry record of one run, the others rejection events."""
    now = time.time()
    items: list[tuple[RecordKind, bytes]] = []
    for index in range(start, start + count):
        if index % 10 == 0:
            record = sync_pb2.TelemetryRecord()
            record.window_end.FromNanoseconds(round(now * 1e9))
            workflow = record.workflows.add(workflow_id="surface_inspection", runs=1, passed=1)
            workflow.lineage.workflow_version = 1
            items.append(("telemetry", record.SerializeToString()))
        else:
            event = sync_pb2.Event(
                kind="part_rejected",
                severity="warning",
                workflow_id="surface_inspection",
                run_id=f"run-{index}",
                attributes_json=f'{{"score": 0.9, "index": {index}}}',
            )
            event.at.FromNanoseconds(round(now * 1e9))
            items.append(("event", event.SerializeToString()))
    return items


# ---- the control plane, its broker and the device ------------------------------------------------


class Plane:
    """A control plane with its MQTT bridge that can be stopped and started again on the same
    settings (same data directory and SQLite store)."""

    def __init__(self, tmp_path: Path, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.settings = ControlPlaneSettings(
            data_dir=tmp_path / "cp",
            schema_dirs=[REPO / "examples" / "schemas"],
            mqtt_host=broker.host,
            mqtt_port=broker.port,
            mqtt_username=broker.control_plane_user,
            mqtt_password=broker.control_plane_password,
        )
        self._stack: ExitStack | None = None
        self._live: LiveControlPlane | None = None

    @property
    def live(self) -> LiveControlPlane:
        assert self._live is not None, "the control plane is stopped"
        return self._live

    def start(self) -> LiveControlPlane:
        stack = ExitStack()
        live = stack.enter_context(live_control_plane(self.settings))
        self._stack, self._live = stack, live
        bridge = live.services.bridge
        assert bridge is not None
        assert bridge.connected.wait(15), self.broker.log_tail()
        return live

    def stop(self) -> None:
        stack, self._stack, self._live = self._stack, None, None
        if stack is not None:
            stack.close()

    def enroll(self, device_id: str = DEVICE) -> str:
        """Enroll through the API; the broker learns the MQTT password the control plane gave."""
        live = self.live
        token = live.admin().post("/api/v1/enrollment-tokens", json={}).json()["token"]
        enrolled = live.client().post("/api/v1/enroll", json={"token": token, "device_id": device_id})
        assert enrolled.status_code == 201, enrolled.text
        password = str(enrolled.json()["mqtt"]["password"])
        self.broker.add_device(device_id, password)
        return password

    # what the store holds

    def stored(self) -> list[int]:
        """The seqs of the device's records in the store, in order (a seq twice would show twice)."""
        with self.live.services.db.read() as conn:
            rows = conn.execute(
                sa.select(ingested_records.c.seq)
                .where(ingested_records.c.device_id == DEVICE)
                .order_by(ingested_records.c.seq)
            )
            return [int(seq) for (seq,) in rows]

    def stored_count(self) -> int:
        with self.live.services.db.read() as conn:
            count = conn.execute(
                sa.select(sa.func.count()).where(ingested_records.c.device_id == DEVICE)
            ).scalar_one()
            return int(count)

    def assert_exactly_once(self, last_seq: int) -> None:
        """Every seq from 1 to ``last_seq`` stored once, and each counted once where it lands."""
        assert self.stored() == list(range(1, last_seq + 1))
        with self.live.services.db.read() as conn:
            kinds = dict(
                conn.execute(
                    sa.select(ingested_records.c.kind, sa.func.count())
                    .where(ingested_records.c.device_id == DEVICE)
                    .group_by(ingested_records.c.kind)
                ).all()
            )
            event_seqs = [
                int(seq)
                for (seq,) in conn.execute(
                    sa.select(events.c.seq).where(events.c.device_id == DEVICE).order_by(events.c.seq)
                )
            ]
            runs = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(telemetry_minutes.c.runs), 0)).where(
                    telemetry_minutes.c.device_id == DEVICE
                )
            ).scalar_one()
            event_kinds = [
                int(seq)
                for (seq,) in conn.execute(
                    sa.select(ingested_records.c.seq).where(
                        ingested_records.c.device_id == DEVICE, ingested_records.c.kind == "event"
                    )
                )
            ]
        assert event_seqs == sorted(event_kinds)  # each event stored once
        assert int(runs) == kinds.get("telemetry", 0)  # each telemetry record counted once


class HeldAcks:
    """The device's client, with the acks after the first held back until released (the test's
    valve: the first ack answers the sender's probe and opens its window)."""

    def __init__(self, client: SyncClient) -> None:
        self.client = client
        self.connected = client.connected
        self._lock = threading.Lock()
        self._held: list[sync_pb2.Ack] = []
        self._released = False
        self.seen = 0
        self._callback: Callable[[sync_pb2.Ack], None] | None = None

    @property
    def connections(self) -> int:
        return self.client.connections

    def publish_batch(self, kind: Any, batch: sync_pb2.RecordBatch) -> bool:
        return self.client.publish_batch(kind, batch)

    def on_ack(self, callback: Callable[[sync_pb2.Ack], None]) -> None:
        self._callback = callback
        self.client.on_ack(self._ack)

    def _ack(self, ack: sync_pb2.Ack) -> None:
        with self._lock:
            self.seen += 1
            if not self._released and self.seen > 1:
                self._held.append(ack)
                return
        assert self._callback is not None
        self._callback(ack)

    def release(self) -> None:
        with self._lock:
            self._released = True
            held, self._held = self._held, []
        assert self._callback is not None
        for ack in held:
            self._callback(ack)


class Device:
    """The device's side: its outbox, MQTT client and sender."""

    def __init__(
        self, root: Path, broker: MosquittoBroker, password: str, *, hold_acks: bool = False, **sender: Any
    ) -> None:
        self.outbox = Outbox(root / "outbox.db").open()
        self.client = SyncClient(
            DEVICE,
            broker.host,
            broker.port,
            username=DEVICE,
            password=password,
            session_expiry_s=600,
            reconnect_min_s=0.05,
            reconnect_max_s=0.4,
        )
        self.held = HeldAcks(self.client) if hold_acks else None
        self.sender = OutboxSender(self.outbox, self.held or self.client, DEVICE, **sender)

    def start(self) -> None:
        self.client.start()
        self.sender.start()

    def append(self, count: int, start: int = 0, chunk: int = 200) -> None:
        items = payloads(count, start)
        for index in range(0, len(items), chunk):
            assert None not in self.outbox.append_many(items[index : index + chunk])
        self.sender.notify()

    def close(self) -> None:
        self.sender.stop()
        self.client.close()
        self.outbox.close()


def wait_for(condition: Callable[[], object], timeout: float = 30.0, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(poll)


@pytest.fixture
def plane(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Plane]:  # noqa: F811
    made = Plane(tmp_path, mosquitto)
    made.start()
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def devices() -> Iterator[list[Device]]:
    made: list[Device] = []
    yield made
    for device in made:
        device.close()


def device(
    tmp_path: Path, plane: Plane, made: list[Device], password: str | None = None, **sender: Any
) -> Device:
    made_device = Device(tmp_path / "agent", plane.broker, password or plane.enroll(), **sender)
    made.append(made_device)
    return made_device


# ---- tests -------------------------------------------------------------------------------------


def test_records_reach_the_store_and_leave_the_outbox_only_when_acked(
    tmp_path: Path, plane: Plane, devices: list[Device]
) -> None:
    dev = device(tmp_path, plane, devices, hold_acks=True, batch_records=200, probe_timeout_s=10)
    held = dev.held
    assert held is not None
    dev.append(1500)
    dev.start()

    wait_for(lambda: plane.stored_count() == 1500)  # stored at the control plane …
    status = dev.sender.status()
    assert 0 < status.acked_records <= 200  # (the first ack answered the probe: one page at most)
    unacked = 1500 - status.acked_records
    assert dev.outbox.stats().pending_records == unacked  # … and the rest still in the outbox
    assert (status.in_flight_records, status.sent_records, status.resent_records) == (unacked, 1500, 0)
    assert not status.probing

    held.release()
    assert dev.sender.wait_drained(30)
    assert dev.sender.status().acked_records == 1500
    assert dev.sender.status().in_flight_records == 0
    plane.assert_exactly_once(1500)

    dev.append(300, start=1500)  # new records go at once (notify), acked as they come
    assert dev.sender.wait_drained(30)
    plane.assert_exactly_once(1800)
    assert dev.sender.status().ack_timeouts == 0


def test_the_in_flight_window_bounds_a_backlog(tmp_path: Path, plane: Plane, devices: list[Device]) -> None:
    dev = device(tmp_path, plane, devices, batch_records=100, max_inflight_records=300)
    dev.append(3000)
    peak = 0
    dev.start()
    deadline = time.monotonic() + 60
    while dev.outbox.stats().pending_records and time.monotonic() < deadline:
        peak = max(peak, dev.sender.status().in_flight_records)
        time.sleep(0.002)
    assert dev.sender.wait_drained(30)
    assert 0 < peak <= 300
    plane.assert_exactly_once(3000)


def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, plane: Plane, devices: list[Device]
) -> None:
    dev = device(tmp_path, plane, devices, batch_records=100, max_inflight_records=1000, ack_timeout_s=5)
    dev.append(3000)
    dev.start()
    wait_for(lambda: plane.stored_count() >= 300)
    plane.broker.restart()
    dev.append(1000, start=3000)  # appended while the link is down
    assert dev.sender.wait_drained(60), dev.sender.status()
    assert dev.sender.status().reconnects >= 1
    plane.assert_exactly_once(4000)


def test_the_control_plane_down_for_a_while(tmp_path: Path, plane: Plane, devices: list[Device]) -> None:
    dev = device(
        tmp_path,
        plane,
        devices,
        batch_records=100,
        max_inflight_records=1000,
        ack_timeout_s=1.0,
        probe_timeout_s=0.5,
        max_ack_timeout_s=1.0,
    )
    dev.append(4000)
    dev.start()
    wait_for(lambda: plane.stored_count() >= 200)
    plane.stop()  # mid-stream; what is published meanwhile has no subscriber: Mosquitto drops it
    dev.append(1000, start=4000)
    wait_for(lambda: dev.sender.status().ack_timeouts >= 2)  # no acks: probing, one batch at a time
    assert dev.sender.status().probing
    assert dev.outbox.stats().pending_records >= 1000
    plane.start()
    assert dev.sender.wait_drained(60), dev.sender.status()
    assert not dev.sender.status().probing
    plane.assert_exactly_once(5000)


CHILD = """
import sys, time
from pathlib import Path
from agent.manifest import load_public_key
from agent.sync.mqtt import SyncClient, topic
from agent.sync.outbox import Outbox
from agent.sync.sender import OutboxSender
from tests.sync.test_sender import payloads

path, host, port, device, password, start, count = sys.argv[1:8]
outbox = Outbox(Path(path)).open()
client = SyncClient(device, host, int(port), username=device, password=password,
                    session_expiry_s=600, reconnect_min_s=0.05, reconnect_max_s=0.4)
sender = OutboxSender(outbox, client, device, batch_records=50, ack_timeout_s=2)
client.start()
sender.start()
items = payloads(int(count), int(start))
for index in range(0, len(items), 50):  # faster than the control plane stores: a backlog builds
    seqs = outbox.append_many(items[index:index + 50])
    sender.notify()
    print("appended", seqs[-1], flush=True)
    time.sleep(0.02)
sender.wait_drained()
print("drained", flush=True)
sys.stdin.read()
sender.stop()
client.close()
outbox.close()
"""


class Child:
    """The agent's sending side in a process of its own, printing what it appended."""

    def __init__(self, plane: Plane, outbox: Path, password: str, start: int, count: int) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                str(outbox),
                plane.broker.host,
                str(plane.broker.port),
                DEVICE,
                password,
                str(start),
                str(count),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def wait_line(self, wanted: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the child did not print {wanted!r}")
            try:
                if self.lines.get(timeout=remaining) == wanted:
                    return
            except queue.Empty:
                continue

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()


def test_the_agent_killed_mid_batch_resumes_from_its_outbox(tmp_path: Path, plane: Plane) -> None:
    password = plane.enroll()
    path = tmp_path / "agent" / "outbox.db"
    first = Child(plane, path, password, 0, 100_000)  # 2,500 a second until killed
    try:
        wait_for(lambda: plane.stored_count() >= 300)
        first.process.send_signal(signal.SIGKILL)  # mid-append and mid-send
        first.process.wait(30)
        assert first.process.returncode == -signal.SIGKILL
    finally:
        first.close()
    with Outbox(path) as outbox:
        appended = outbox.stats().last_seq
        pending_at_kill = outbox.stats().pending_records
    assert pending_at_kill <= appended < 100_000  # killed mid-append (usually with records unacked)

    second = Child(plane, path, password, 100_000, 500)
    try:
        second.wait_line("drained")
    finally:
        second.close()
    assert second.process.returncode == 0
    with Outbox(path) as outbox:
        stats = outbox.stats()
    assert stats.pending_records == 0
    assert stats.last_seq == appended + 500  # numbering went on without a gap
    plane.assert_exactly_once(stats.last_seq)


class TinyQueueBroker(MosquittoBroker):
    """A broker that queues at most 10 QoS 1 messages per client beyond one in flight, so it drops
    messages silently under load (Mosquitto's ``max_queued_messages``)."""

    def _write_config(self) -> None:
        write_broker_config(
            self.base_dir,
            port=self.port,
            users=self._users.values(),
            control_plane_user=self.control_plane_user,
            bind=self.host,
            data_dir=self.data_dir,
            persistence=self.persistence,
            run_as="root" if os.geteuid() == 0 else None,
            max_queued_messages=10,
            max_inflight_messages=1,
        )


@pytest.fixture
def tiny_queue_plane(tmp_path: Path) -> Iterator[Plane]:
    broker = TinyQueueBroker.start(tmp_path / "mosquitto")
    made = Plane(tmp_path, broker)
    try:
        made.start()
        yield made
    finally:
        made.stop()
        broker.stop()


def test_messages_the_broker_drops_silently_are_sent_again(
    tmp_path: Path, tiny_queue_plane: Plane, devices: list[Device]
) -> None:
    plane = tiny_queue_plane
    dev = device(
        tmp_path,
        plane,
        devices,
        batch_records=10,
        max_inflight_records=1000,
        ack_timeout_s=1.0,
        probe_timeout_s=0.5,
        max_ack_timeout_s=1.0,
    )
    dev.start()
    assert dev.client.wait_connected(10)
    plane.stop()  # the control plane is down while far more than 10 messages arrive
    dev.append(1500)
    wait_for(lambda: dev.sender.status().ack_timeouts >= 1)
    plane.start()
    assert dev.sender.wait_drained(60), dev.sender.status()
    plane.assert_exactly_once(1500)
    status = dev.sender.status()
    assert status.resent_records > 0
    assert "Outgoing messages are being dropped" in plane.broker._log_text()


def test_a_device_offline_then_draining_its_backlog(
    tmp_path: Path, plane: Plane, devices: list[Device]
) -> None:
    """Compressed time: 100 seconds offline at 100 records/s (the full 10 minutes, 60,000 records,
    is bench/sync_drain.py's)."""
    dev = device(tmp_path, plane, devices)
    dev.start()
    assert dev.client.wait_connected(10)
    plane.broker.stop()
    wait_for(lambda: not dev.client.connected.is_set())
    for second in range(100):  # 100 records a second, appended as they would be
        dev.append(100, start=second * 100, chunk=100)
    assert dev.outbox.stats().pending_records == 10_000
    started = time.monotonic()
    plane.broker.restart()
    assert dev.sender.wait_drained(90), dev.sender.status()
    elapsed = time.monotonic() - started
    plane.assert_exactly_once(10_000)
    status = dev.sender.status()
    assert status.in_flight_records == 0
    print(f"drained 10,000 records in {elapsed:.1f} s ({10_000 / elapsed:.0f} records/s)")


# ---- the agent's telemetry, end to end -----------------------------------------------------------


def test_a_managed_agent_sends_telemetry_and_rejects_with_lineage(tmp_path: Path, plane: Plane) -> None:
    """The daemon's hooks: runs → collector → outbox → sender → the control plane's store, with
    the lineage of the running plan (rollout id and cohort from the desired state), rejects as
    events with thumbnails, and the final partial interval flushed into the outbox at stop."""
    live = plane.live
    token = live.admin().post("/api/v1/enrollment-tokens", json={}).json()["token"]
    enrolled = live.client().post("/api/v1/enroll", json={"token": token, "device_id": DEVICE}).json()
    password = str(enrolled["mqtt"]["password"])
    plane.broker.add_device(DEVICE, password)
    pem = enrolled["signing_public_key"]
    fleet = Fleet(live, DEVICE, enrolled["credential"], load_public_key(pem), pem, live.admin())
    fleet.release_surface_inspection()
    model_sha = fleet.ref("model", WORKFLOW_ID, 1).sha256

    def canary(assignment: sync_pb2.WorkflowAssignment) -> None:
        assignment.role = "canary"
        assignment.rollout_id = "rollout-7"

    desired = fleet.desired(1, edit=canary)
    with MqttTestClient(
        plane.broker, plane.broker.control_plane_user, plane.broker.control_plane_password, client_id="ops"
    ) as ops:
        assert not ops.connect().is_failure
        ops.publish(topic(DEVICE, "desired"), desired.SerializeToString(), retain=True)

    data_dir = tmp_path / "agent"
    data_dir.mkdir()
    (data_dir / "credentials.json").write_text(
        json.dumps(
            {
                "device_id": DEVICE,
                "credential": enrolled["credential"],
                "signing_public_key": pem,
                "api_url": live.url,
            }
        )
    )
    agents = Agents(tmp_path)
    try:
        agent = agents.start(
            fps=15,
            sync={
                "mqtt_host": plane.broker.host,
                "mqtt_port": plane.broker.port,
                "mqtt_password": password,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.4,
                "telemetry_interval_s": 0.5,
            },
        )
        assert agent.sync is not None
        assert agent.sync.outbox is not None

        def rows() -> list[Any]:
            with plane.live.services.db.read() as conn:
                return list(
                    conn.execute(
                        sa.select(telemetry_minutes).where(
                            telemetry_minutes.c.device_id == DEVICE, telemetry_minutes.c.cohort == "canary"
                        )
                    ).mappings()
                )

        wait_for(lambda: sum(row["failed"] for row in rows()) >= 3 and sum(r["passed"] for r in rows()) >= 3)
        row = rows()[0]
        assert (row["workflow_id"], row["workflow_version"], row["model_sha256"]) == (
            WORKFLOW_ID,
            1,
            model_sha,
        )
        assert (row["threshold_set"], row["threshold_version"], row["rollout_id"]) == (
            "surface",
            1,
            "rollout-7",
        )
        assert row["latency_ms"]["count"] == row["runs"]
        assert set(row["node_latency_ms"]) >= {"decode", "infer", "gate"}
        assert row["model_latency_ms"]["surface_inspection"]["count"] > 0

        with plane.live.services.db.read() as conn:
            rejected = list(
                conn.execute(
                    sa.select(events).where(events.c.device_id == DEVICE, events.c.kind == "part_rejected")
                )
                .mappings()
                .all()
            )
            system = conn.execute(
                sa.select(system_minutes.c.metrics).where(system_minutes.c.device_id == DEVICE)
            ).first()
        assert rejected
        event = rejected[0]
        assert event["lineage"]["cohort"] == "canary"
        assert event["lineage"]["model_sha256"] == model_sha
        assert event["attributes"]["node"] == "gate"
        assert event["attributes"]["score"] >= event["attributes"]["threshold"]
        assert any(e["thumbnail"] for e in rejected)
        thumbnail = next(e["thumbnail"] for e in rejected if e["thumbnail"])
        assert thumbnail[:2] == b"\xff\xd8"  # a JPEG
        assert system is not None
        assert system[0]["process_rss_bytes"]
        assert system[0]["memory_total_bytes"]

        status = agent.status()["sync"]
        assert status["telemetry"]["events_sent"] >= 3
        assert status["sender"]["acked_records"] > 0
        assert status["telemetry"]["record_errors"] == 0
        agents.stop(agent)
    finally:
        agents.stop_all()

    with Outbox(data_dir / "sync" / "outbox.db") as outbox:  # the final partial interval waits there
        kinds = [record.kind for record in outbox.pending(limit=100)]
    assert "telemetry" in kinds
