"""The control plane's MQTT bridge against a real Mosquitto: desired state out (retained), records
in with end-to-end acks, idempotent on re-delivery, and garbage dropped and counted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controlplane.settings import ControlPlaneSettings
from protos import sync_pb2
from tests.controlplane.live import LiveControlPlane, live_control_plane
from tests.controlplane.test_sync_store import event_record, telemetry_record
from tests.mosquitto import MosquittoBroker, MqttTestClient

REPO = Path(__file__).resolve().parents[2]
PREFIX = "edgefleet/v1/devices"


@pytest.fixture
def bridged(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[LiveControlPlane]:
    settings = ControlPlaneSettings(
        data_dir=tmp_path / "cp",
        schema_dirs=[REPO / "examples" / "schemas"],
        mqtt_host=mosquitto.host,
        mqtt_port=mosquitto.port,
        mqtt_username=mosquitto.control_plane_user,
        mqtt_password=mosquitto.control_plane_password,
    )
    with live_control_plane(settings) as live:
        bridge = live.services.bridge
        assert bridge is not None
        assert bridge.connected.wait(10), mosquitto.log_tail()
        yield live


def enroll(live: LiveControlPlane, broker: MosquittoBroker, device_id: str) -> str:
    """Enroll through the API and give the broker the MQTT password it handed out."""
    token = live.admin().post("/api/v1/enrollment-tokens", json={}).json()["token"]
    enrolled = live.client().post("/api/v1/enroll", json={"token": token, "device_id": device_id}).json()
    assert enrolled["mqtt"]["username"] == device_id
    broker.add_device(device_id, enrolled["mqtt"]["password"])
    return str(enrolled["mqtt"]["password"])


def connect(
    broker: MosquittoBroker, device_id: str, password: str, client_id: str | None = None
) -> MqttTestClient:
    client = MqttTestClient(broker, device_id, password, client_id=client_id or device_id)
    assert not client.connect().is_failure
    return client


def device_client(live: LiveControlPlane, broker: MosquittoBroker, device_id: str) -> MqttTestClient:
    return connect(broker, device_id, enroll(live, broker, device_id))


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def metric(live: LiveControlPlane, name: str) -> float:
    text = live.client().get("/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_desired_state_reaches_the_device_retained(
    bridged: LiveControlPlane, mosquitto: MosquittoBroker
) -> None:
    live = bridged
    password = enroll(live, mosquitto, "cam-1")
    with connect(mosquitto, "cam-1", password):
        admin = live.admin()
        admin.post(
            "/api/v1/models/surface_inspection/versions",
            content=(REPO / "models" / "surface_inspection_v1.onnx").read_bytes(),
        ).raise_for_status()
        graph = (REPO / "examples" / "workflows" / "surface_inspection.json").read_text()
        admin.post(
            "/api/v1/workflows", content=graph, headers={"content-type": "application/json"}
        ).raise_for_status()
        admin.put(
            "/api/v1/workflows/surface_inspection/assignments/device/cam-1", json={"version": 1}
        ).raise_for_status()
    # Subscribing afterwards still gets it: the desired state is retained.
    with connect(mosquitto, "cam-1", password, client_id="cam-1-late") as late:
        late.subscribe(f"{PREFIX}/cam-1/desired")
        message = late.expect_message(timeout=10)
        assert message.retain
        state = sync_pb2.DesiredState.FromString(message.payload)
        assert state.device_id == "cam-1"
        assert [w.workflow.name for w in state.workflows] == ["surface_inspection"]
        assert state.workflows[0].models[0].url.endswith("/models/surface_inspection/versions/1/content")


def test_records_are_stored_then_acked_once(bridged: LiveControlPlane, mosquitto: MosquittoBroker) -> None:
    live = bridged
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    with device_client(live, mosquitto, "cam-1") as device:
        device.subscribe(f"{PREFIX}/cam-1/ack")
        batch = sync_pb2.RecordBatch(
            device_id="cam-1", records=[telemetry_record(1, now, 10, 1), telemetry_record(2, now, 5, 0)]
        )
        assert not device.publish(f"{PREFIX}/cam-1/telemetry", batch.SerializeToString(), qos=1).is_failure
        ack = sync_pb2.Ack.FromString(device.expect_message(timeout=10).payload)
        assert [(r.first, r.last) for r in ack.stored] == [(1, 2)]
        # A lost ack: the device sends the same records again. Acked again, counted once.
        device.publish(f"{PREFIX}/cam-1/telemetry", batch.SerializeToString(), qos=1)
        again = sync_pb2.Ack.FromString(device.expect_message(timeout=10).payload)
        assert [(r.first, r.last) for r in again.stored] == [(1, 2)]
        events = sync_pb2.RecordBatch(device_id="cam-1", records=[event_record(3, now)])
        device.publish(f"{PREFIX}/cam-1/events", events.SerializeToString(), qos=1)
        assert [
            (r.first, r.last)
            for r in sync_pb2.Ack.FromString(device.expect_message(timeout=10).payload).stored
        ] == [(3, 3)]
    params = {
        "from": (now - timedelta(minutes=5)).isoformat(),
        "to": (now + timedelta(minutes=5)).isoformat(),
    }
    points = live.admin().get("/api/v1/devices/cam-1/telemetry", params=params).json()["points"]
    assert points[0]["runs"] == 15
    assert [
        e["seq"] for e in live.admin().get("/api/v1/events", params={"device": "cam-1"}).json()["items"]
    ] == [3]


def test_reported_state_and_status(bridged: LiveControlPlane, mosquitto: MosquittoBroker) -> None:
    live = bridged
    with device_client(live, mosquitto, "cam-1") as device:
        reported = sync_pb2.ReportedState(
            device_id="cam-1", generation=2, phase=sync_pb2.ReportedState.CONVERGED
        )
        device.publish(f"{PREFIX}/cam-1/reported", reported.SerializeToString(), qos=1)
        status = sync_pb2.Status(state=sync_pb2.Status.ONLINE)
        device.publish(f"{PREFIX}/cam-1/status", status.SerializeToString(), qos=1, retain=True)
        assert wait_for(
            lambda: (
                (live.admin().get("/api/v1/devices/cam-1").json()["reported_state"] or {}).get("phase")
                == "CONVERGED"
            )
        )
        assert wait_for(lambda: live.admin().get("/api/v1/devices/cam-1").json()["online"] is True)


@pytest.mark.parametrize(
    ("topic_leaf", "payload", "reason"),
    [
        ("telemetry", b"\xff\x00garbage\x13", "malformed"),
        ("telemetry", sync_pb2.RecordBatch(device_id="cam-2").SerializeToString(), "device_mismatch"),
        ("reported", b"\x0a" * 10, "malformed"),
    ],
)
def test_garbage_is_dropped_and_counted(
    bridged: LiveControlPlane, mosquitto: MosquittoBroker, topic_leaf: str, payload: bytes, reason: str
) -> None:
    live = bridged
    now = datetime.now(UTC)
    with device_client(live, mosquitto, "cam-1") as device:
        device.subscribe(f"{PREFIX}/cam-1/ack")
        before = metric(live, f'edgefleet_bridge_dropped_total{{reason="{reason}"}}')
        device.publish(f"{PREFIX}/cam-1/{topic_leaf}", payload, qos=1)
        assert wait_for(
            lambda: metric(live, f'edgefleet_bridge_dropped_total{{reason="{reason}"}}') == before + 1
        )
        # The bridge keeps serving.
        good = sync_pb2.RecordBatch(device_id="cam-1", records=[telemetry_record(1, now, 1, 0)])
        device.publish(f"{PREFIX}/cam-1/telemetry", good.SerializeToString(), qos=1)
        assert sync_pb2.Ack.FromString(device.expect_message(timeout=10).payload).stored[0].first == 1


def test_oversized_payload_is_dropped(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    settings = ControlPlaneSettings(
        data_dir=tmp_path / "cp",
        mqtt_host=mosquitto.host,
        mqtt_port=mosquitto.port,
        mqtt_username=mosquitto.control_plane_user,
        mqtt_password=mosquitto.control_plane_password,
        mqtt_max_payload=1000,
    )
    with live_control_plane(settings) as live:
        assert live.services.bridge is not None
        assert live.services.bridge.connected.wait(10)
        with device_client(live, mosquitto, "cam-1") as device:
            device.publish(f"{PREFIX}/cam-1/telemetry", b"\x00" * 5000, qos=1)
            assert wait_for(lambda: metric(live, 'edgefleet_bridge_dropped_total{reason="oversized"}') == 1)


def test_bridge_reconnects_after_a_broker_restart(
    bridged: LiveControlPlane, mosquitto: MosquittoBroker
) -> None:
    live = bridged
    bridge = live.services.bridge
    assert bridge is not None
    password = enroll(live, mosquitto, "cam-1")
    mosquitto.restart()
    assert bridge.connected.wait(40), "the bridge did not reconnect"
    with connect(mosquitto, "cam-1", password) as device:
        device.subscribe(f"{PREFIX}/cam-1/ack")
        batch = sync_pb2.RecordBatch(
            device_id="cam-1", records=[telemetry_record(1, datetime.now(UTC), 1, 0)]
        )
        device.publish(f"{PREFIX}/cam-1/telemetry", batch.SerializeToString(), qos=1)
        assert sync_pb2.Ack.FromString(device.expect_message(timeout=15).payload).stored[0].first == 1


def test_enrollment_and_decommission_update_the_broker(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(str(mosquitto.pid))
    settings = ControlPlaneSettings(
        data_dir=tmp_path / "cp",
        mqtt_host=mosquitto.host,
        mqtt_port=mosquitto.port,
        mqtt_username=mosquitto.control_plane_user,
        mqtt_password=mosquitto.control_plane_password,
        broker_password_file=mosquitto.password_file,
        broker_pid_file=pid_file,
    )
    with live_control_plane(settings) as live:
        token = live.admin().post("/api/v1/enrollment-tokens", json={}).json()["token"]
        enrolled = live.client().post("/api/v1/enroll", json={"token": token, "device_id": "cam-1"}).json()
        password = enrolled["mqtt"]["password"]
        # No add_device: the control plane rewrote the password file and made the broker reload it.
        client = None
        assert wait_for(
            lambda: not MqttTestClient(mosquitto, "cam-1", password, client_id="probe").connect().is_failure
        )
        client = connect(mosquitto, "cam-1", password)
        with client:
            live.admin().post("/api/v1/devices/cam-1/decommission").raise_for_status()
            assert client.wait_disconnected(timeout=10)
        refused = MqttTestClient(mosquitto, "cam-1", password, client_id="again")
        with refused:
            assert refused.connect().is_failure
        # The control plane's own entry survived the rewrites.
        assert live.services.bridge is not None
        assert live.services.bridge.connected.is_set()


def test_enrollment_signs_the_devices_csr_for_mutual_tls(
    tmp_path: Path, sqlite_control_plane: LiveControlPlane
) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from agent.sync.csr import make_key_and_csr
    from controlplane.broker.ca import CertificateAuthority

    live = sqlite_control_plane
    key_pem, csr_pem = make_key_and_csr("someone-else")  # the CN asked for is ignored
    token = live.admin().post("/api/v1/enrollment-tokens", json={}).json()["token"]
    enrolled = live.client().post(
        "/api/v1/enroll", json={"token": token, "device_id": "cam-9", "csr": csr_pem.decode()}
    )
    assert enrolled.status_code == 201, enrolled.text
    mqtt_access = enrolled.json()["mqtt"]
    cert = x509.load_pem_x509_certificate(mqtt_access["client_certificate"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cam-9"

    # The broker trusts the control plane's CA; the device logs in with its own key, no password.
    authority = CertificateAuthority.load_or_create(live.settings.data_dir / "ca")
    assert authority.ca_pem.decode() == mqtt_access["ca_certificate"]
    broker = MosquittoBroker.start(tmp_path / "broker", tls=authority, require_certificate=True)
    try:
        tls = broker.write_client_files("cam-9", mqtt_access["client_certificate"].encode(), key_pem)
        with MqttTestClient(broker, tls=tls, client_id="cam-9") as device:
            assert not device.connect().is_failure
            assert not device.publish(f"{PREFIX}/cam-9/reported", b"", qos=1).is_failure
            assert device.publish(f"{PREFIX}/cam-8/reported", b"", qos=1).is_failure
    finally:
        broker.stop()

    token = live.admin().post("/api/v1/enrollment-tokens", json={}).json()["token"]
    garbage = live.client().post(
        "/api/v1/enroll", json={"token": token, "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"}
    )
    assert garbage.status_code == 422
    assert garbage.json()["detail"].startswith("body.csr")
    retry = live.client().post("/api/v1/enroll", json={"token": token})
    assert retry.status_code == 201  # the refused CSR did not use the token up


def test_a_decommissioned_devices_certificate_is_revoked_at_the_broker(tmp_path: Path) -> None:
    from cryptography import x509

    from agent.sync.csr import make_key_and_csr
    from controlplane.broker.ca import CertificateAuthority

    data_dir = tmp_path / "cp"
    authority = CertificateAuthority.load_or_create(data_dir / "ca")  # the CA the control plane uses
    broker = MosquittoBroker.start(tmp_path / "broker", tls=authority, require_certificate=True)
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(str(broker.pid))
    assert broker.tls_files is not None
    assert broker.tls_files.crlfile is not None
    settings = ControlPlaneSettings(
        data_dir=data_dir, broker_crl_file=broker.tls_files.crlfile, broker_pid_file=pid_file
    )
    try:
        with live_control_plane(settings) as live:
            tls, cert_serials = {}, {}
            for device in ("cam-1", "cam-2"):
                key_pem, csr_pem = make_key_and_csr(device)
                token = live.admin().post("/api/v1/enrollment-tokens", json={}).json()["token"]
                enrolled = live.client().post(
                    "/api/v1/enroll", json={"token": token, "device_id": device, "csr": csr_pem.decode()}
                )
                assert enrolled.status_code == 201, enrolled.text
                cert_pem = enrolled.json()["mqtt"]["client_certificate"].encode()
                cert_serials[device] = x509.load_pem_x509_certificate(cert_pem).serial_number
                tls[device] = broker.write_client_files(device, cert_pem, key_pem)
                with MqttTestClient(broker, tls=tls[device], client_id=f"{device}-first") as client:
                    assert not client.connect().is_failure

            live.admin().post("/api/v1/devices/cam-1/decommission").raise_for_status()
            # the control plane rewrote the broker's CRL and made it reload: cam-1's handshake fails
            crl = x509.load_pem_x509_crl(broker.tls_files.crlfile.read_bytes())
            assert [r.serial_number for r in crl] == [cert_serials["cam-1"]]

            def refused() -> bool:
                with MqttTestClient(broker, tls=tls["cam-1"], client_id="cam-1-again") as client:
                    try:
                        return client.connect().is_failure
                    except OSError:  # the handshake failed: "certificate revoked"
                        return True

            assert wait_for(refused)  # once the broker has handled its SIGHUP
            with MqttTestClient(broker, tls=tls["cam-2"], client_id="cam-2-again") as still:
                assert not still.connect().is_failure
    finally:
        broker.stop()


def test_two_replicas_share_the_ingest_without_double_counting(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    common = {
        "database_url": f"sqlite:///{tmp_path}/shared.db",
        "signing_key": tmp_path / "signing_key.pem",
        "mqtt_host": mosquitto.host,
        "mqtt_port": mosquitto.port,
        "mqtt_username": mosquitto.control_plane_user,
        "mqtt_password": mosquitto.control_plane_password,
    }
    first_settings = ControlPlaneSettings(data_dir=tmp_path / "a", **common)
    second_settings = ControlPlaneSettings(data_dir=tmp_path / "b", **common)
    with (
        live_control_plane(first_settings) as first,
        live_control_plane(second_settings, admin=False) as second,
    ):
        bridges = [first.services.bridge, second.services.bridge]
        assert all(b is not None and b.connected.wait(10) for b in bridges)
        password = enroll(first, mosquitto, "cam-1")
        now = datetime.now(UTC)
        with connect(mosquitto, "cam-1", password) as device:
            device.subscribe(f"{PREFIX}/cam-1/ack")
            for seq in range(1, 101):
                batch = sync_pb2.RecordBatch(device_id="cam-1", records=[telemetry_record(seq, now, 1, 0)])
                device.publish(f"{PREFIX}/cam-1/telemetry", batch.SerializeToString(), qos=1)
            acked: set[int] = set()
            while len(acked) < 100:
                for stored in sync_pb2.Ack.FromString(device.expect_message(timeout=15).payload).stored:
                    acked.update(range(stored.first, stored.last + 1))
        assert acked == set(range(1, 101))
        handled = [
            metric(live, 'edgefleet_bridge_messages_total{kind="telemetry"}') for live in (first, second)
        ]
        assert sum(handled) == 100
        assert all(count > 0 for count in handled), f"one replica took everything: {handled}"
        params = {
            "from": (now - timedelta(minutes=5)).isoformat(),
            "to": (now + timedelta(minutes=5)).isoformat(),
        }
        points = first.admin().get("/api/v1/devices/cam-1/telemetry", params=params).json()["points"]
        assert sum(p["runs"] for p in points) == 100
