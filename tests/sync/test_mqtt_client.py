"""The agent's MQTT client against a real Mosquitto (edgefleet's password file and ACL)."""

from __future__ import annotations

import queue
import re
import socket
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from agent.cli import app as agent_app
from agent.sync.mqtt import Backoff, SyncClient, topic
from protos import sync_pb2
from tests.controlplane.live import LiveControlPlane
from tests.mosquitto import MosquittoBroker, MqttTestClient
from tests.mqtt_fixtures import mosquitto, mosquitto_ca, mosquitto_tls  # noqa: F401
from tests.sync.fleet import WORKFLOW_ID, Agents, Fleet, wait_for

DEVICE = "cam-1"


def control_plane_session(broker: MosquittoBroker) -> MqttTestClient:
    """A persistent session (it keeps its subscriptions and messages across a broker restart)."""
    return MqttTestClient(
        broker,
        broker.control_plane_user,
        broker.control_plane_password,
        client_id="cp-test",
        clean_start=False,
        session_expiry_s=300,
    )


@pytest.fixture
def control_plane_client(mosquitto: MosquittoBroker) -> Iterator[MqttTestClient]:  # noqa: F811
    """The control plane's side of the broker: subscribed to what the device sends."""
    client = control_plane_session(mosquitto)
    try:
        assert not client.connect().is_failure
        for kind in ("status", "reported", "telemetry"):
            assert not client.subscribe(topic(DEVICE, kind))[0].is_failure
        yield client
    finally:
        client.close()


@pytest.fixture
def clients() -> Iterator[list[SyncClient]]:
    made: list[SyncClient] = []
    yield made
    for client in made:
        client.close()


def device_client(
    broker: MosquittoBroker, password: str, made: list[SyncClient], **options: object
) -> SyncClient:
    client = SyncClient(
        DEVICE,
        broker.host,
        broker.port,
        username=DEVICE,
        password=password,
        session_expiry_s=300,
        reconnect_min_s=0.05,
        reconnect_max_s=0.4,
        agent_version="test",
        **options,  # type: ignore[arg-type]
    )
    made.append(client)
    return client


def next_on(client: MqttTestClient, kind: str, timeout: float = 10.0) -> bytes:
    """The payload of the next message on the device's ``kind`` topic (others are skipped)."""
    wanted = topic(DEVICE, kind)
    while True:
        message = client.expect_message(timeout)
        if message.topic == wanted:
            return bytes(message.payload)


def next_status(client: MqttTestClient) -> sync_pb2.Status.State:
    status = sync_pb2.Status.FromString(next_on(client, "status"))
    state: sync_pb2.Status.State = status.state
    return state


def test_persistent_session_retained_desired_state_status_and_reported_state(
    mosquitto: MosquittoBroker,  # noqa: F811
    control_plane_client: MqttTestClient,
    clients: list[SyncClient],
) -> None:
    password = mosquitto.add_device(DEVICE)
    desired = sync_pb2.DesiredState(device_id=DEVICE, generation=7)
    control_plane_client.publish(topic(DEVICE, "desired"), desired.SerializeToString(), retain=True)

    client = device_client(mosquitto, password, clients)
    received: queue.Queue[sync_pb2.DesiredState] = queue.Queue()
    acks: queue.Queue[sync_pb2.Ack] = queue.Queue()
    client.on_desired(received.put)
    client.on_ack(acks.put)
    batch = sync_pb2.RecordBatch(device_id=DEVICE)
    assert client.publish_batch("telemetry", batch) is False  # offline: the outbox keeps it
    client.start()
    assert client.wait_connected(10)
    assert client.session_present is False
    assert received.get(timeout=10).generation == 7
    assert next_status(control_plane_client) == sync_pb2.Status.ONLINE

    report = sync_pb2.ReportedState(device_id=DEVICE, generation=7, phase=sync_pb2.ReportedState.CONVERGED)
    assert client.publish_reported(report) is True
    assert sync_pb2.ReportedState.FromString(next_on(control_plane_client, "reported")) == report
    assert client.publish_batch("telemetry", batch) is True
    assert sync_pb2.RecordBatch.FromString(next_on(control_plane_client, "telemetry")) == batch

    client.close()  # clean: OFFLINE by the device itself, no last will
    assert next_status(control_plane_client) == sync_pb2.Status.OFFLINE
    assert not client.connected.is_set()

    # while the device is away, the broker keeps what is sent to it (persistent session, QoS 1)
    ack = sync_pb2.Ack(stored=[sync_pb2.SeqRange(first=1, last=5)])
    control_plane_client.publish(topic(DEVICE, "ack"), ack.SerializeToString())
    # a report made offline is sent on the next connection
    offline_report = sync_pb2.ReportedState(device_id=DEVICE, generation=8)

    again = device_client(mosquitto, password, clients)
    assert again.publish_reported(offline_report) is False
    again.on_desired(received.put)
    again.on_ack(acks.put)
    again.start()
    assert again.wait_connected(10)
    assert again.session_present is True
    assert acks.get(timeout=10) == ack
    assert received.get(timeout=10).generation == 7  # the retained desired state, again
    assert next_status(control_plane_client) == sync_pb2.Status.ONLINE
    assert sync_pb2.ReportedState.FromString(next_on(control_plane_client, "reported")) == offline_report


def test_last_will_on_an_abrupt_disconnect_then_a_jittered_reconnect(
    mosquitto: MosquittoBroker,  # noqa: F811
    control_plane_client: MqttTestClient,
    clients: list[SyncClient],
) -> None:
    password = mosquitto.add_device(DEVICE)
    client = device_client(mosquitto, password, clients)
    client.start()
    assert client.wait_connected(10)
    assert next_status(control_plane_client) == sync_pb2.Status.ONLINE

    sock = client.paho.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)  # the link dies: no DISCONNECT packet
    assert next_status(control_plane_client) == sync_pb2.Status.OFFLINE  # the broker's last will
    assert next_status(control_plane_client) == sync_pb2.Status.ONLINE  # back by itself
    wait_for(lambda: client.connections == 2)
    (wait,) = client.reconnect_waits
    assert 0.025 <= wait <= 0.05  # the first delay: [min/2, min]


def test_refused_login_is_retried_with_growing_jittered_delays(
    mosquitto: MosquittoBroker,  # noqa: F811
    clients: list[SyncClient],
) -> None:
    mosquitto.add_device(DEVICE)
    client = device_client(mosquitto, "wrong-password", clients)
    client.start()
    wait_for(lambda: len(client.reconnect_waits) >= 4)
    assert not client.connected.is_set()
    assert client.last_error is not None
    waits = client.reconnect_waits[:4]
    for attempt, wait in enumerate(waits):
        ceiling = min(0.4, 0.05 * 2**attempt)
        assert ceiling / 2 <= wait <= ceiling, waits


def test_backoff_is_exponential_with_jitter_and_resets() -> None:
    import random

    backoff = Backoff(1.0, 8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered, not lock-step
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0


def test_mutual_tls(mosquitto_tls: MosquittoBroker, clients: list[SyncClient]) -> None:  # noqa: F811
    tls = mosquitto_tls.client_tls(DEVICE)
    client = SyncClient(
        DEVICE,
        "localhost",
        mosquitto_tls.port,
        tls=True,
        ca_file=tls.ca_certs,
        cert_file=tls.certfile,
        key_file=tls.keyfile,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
    )
    clients.append(client)
    received: queue.Queue[sync_pb2.DesiredState] = queue.Queue()
    client.on_desired(received.put)
    client.start()
    assert client.wait_connected(10), client.last_error


def content_downloads(cp: LiveControlPlane) -> float:
    """Artifact content requests the control plane answered, from its /metrics."""
    text = cp.client().get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("edgefleet_http_requests_total{") and re.search(r'route="[^"]*/content"', line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_an_enrolled_agent_reconciles_over_mqtt_and_again_idempotently_after_a_broker_restart(
    sqlite_control_plane: LiveControlPlane,
    mosquitto: MosquittoBroker,  # noqa: F811
    control_plane_client: MqttTestClient,
    agents: Agents,
) -> None:
    cp = sqlite_control_plane
    fleet_admin = Fleet.enroll(cp, device_id="release-only")  # for the release helpers
    fleet_admin.release_surface_inspection()
    token = fleet_admin.admin.post("/api/v1/enrollment-tokens", json={}).json()["token"]
    data_dir = agents.root / "agent"
    enrolled = CliRunner().invoke(
        agent_app,
        ["enroll", "--url", cp.url, "--token", token, "--device-id", DEVICE, "--data-dir", str(data_dir)],
    )
    assert enrolled.exit_code == 0, enrolled.output
    assert enrolled.output.strip() == DEVICE
    device = Fleet(cp, DEVICE, "", fleet_admin.public_key, fleet_admin.public_key_pem, fleet_admin.admin)
    desired = device.desired(1)
    control_plane_client.publish(topic(DEVICE, "desired"), desired.SerializeToString(), retain=True)

    password = mosquitto.add_device(DEVICE)
    agent = agents.start(
        sync={
            "control_plane_url": cp.url,
            "mqtt_host": mosquitto.host,
            "mqtt_port": mosquitto.port,
            "mqtt_password": password,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.4,
        }
    )
    assert agent.sync is not None
    reported = sync_pb2.ReportedState.FromString(next_on(control_plane_client, "reported"))
    while reported.phase != sync_pb2.ReportedState.CONVERGED:
        assert reported.phase == sync_pb2.ReportedState.APPLYING
        reported = sync_pb2.ReportedState.FromString(next_on(control_plane_client, "reported"))
    assert (reported.generation, reported.error, reported.device_id) == (1, "", DEVICE)
    assert reported.workflows[0].workflow_id == WORKFLOW_ID
    plan = agent.plans()[WORKFLOW_ID]
    downloads = content_downloads(cp)
    assert downloads == 3
    applied = agent.sync.worker.applied

    mosquitto.restart()
    control_plane_client.close()
    with control_plane_session(mosquitto) as resumed:
        assert not resumed.connect().is_failure
        assert resumed.session_present
        wait_for(lambda: agent.sync is not None and agent.sync.client.connections >= 2)
        reported = sync_pb2.ReportedState.FromString(next_on(resumed, "reported"))
        assert (reported.phase, reported.generation) == (sync_pb2.ReportedState.CONVERGED, 1)
        assert agent.sync.worker.applied == applied + 1  # the retained desired state, once more
        assert agent.plans()[WORKFLOW_ID] is plan  # nothing recompiled
        assert content_downloads(cp) == downloads  # nothing downloaded
        assert agent.sync.client.reconnect_waits

        agents.stop(agent)  # a clean stop says OFFLINE itself
        while next_status(resumed) != sync_pb2.Status.OFFLINE:
            pass
