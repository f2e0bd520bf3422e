"""edgefleet's MQTT broker: Mosquitto's generated configuration, password file, ACL and CA, checked
against a real broker.

Negative checks (a message must *not* arrive) never sleep: after the forbidden publish the same
client publishes an allowed "sentinel" message. Mosquitto handles a client's packets in order and
delivers to a subscriber in order, so once the sentinel has arrived, a forbidden message that had
got through would have arrived before it.
"""

from __future__ import annotations

import base64
import os
import queue
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from typer.testing import CliRunner

from agent.sync.csr import make_key_and_csr
from controlplane.broker.ca import (
    CertificateAuthority,
    CertificateAuthorityError,
    CsrRejected,
    certificate_serial,
)
from controlplane.broker.config import (
    CONTROL_PLANE_USER,
    BrokerUser,
    TlsFiles,
    device_topic,
    password_hash,
    render_acl,
    render_mosquitto_conf,
    shared_subscription,
    verify_password,
    write_broker_config,
)
from tests.mosquitto import (
    BrokerAddress,
    ClientTls,
    MosquittoBroker,
    MqttTestClient,
    free_port,
    spawn,
    terminate,
)
from tests.mqtt_fixtures import mosquitto, mosquitto_ca, mosquitto_tls  # noqa: F401

GRANTED_QOS1 = 1
NOT_AUTHORIZED = 0x87
NO_MATCHING_SUBSCRIBERS = 0x10


@pytest.fixture
def control_plane(mosquitto: MosquittoBroker) -> Iterator[MqttTestClient]:  # noqa: F811
    """The control plane's connection, subscribed to everything under edgefleet/v1/."""
    with MqttTestClient(mosquitto, mosquitto.control_plane_user, mosquitto.control_plane_password) as client:
        assert client.connect() == 0
        assert client.subscribe("edgefleet/v1/#") == [GRANTED_QOS1]
        yield client


def device(broker: MosquittoBroker, device_id: str) -> MqttTestClient:
    client = MqttTestClient(broker, device_id, broker.add_device(device_id))
    assert client.connect() == 0
    return client


def topics(messages: list[tuple[str, bytes]]) -> list[str]:
    return [topic for topic, _ in messages]


def receive_until(client: MqttTestClient, payload: bytes, timeout: float = 5.0) -> list[tuple[str, bytes]]:
    """Messages received up to and including the first with ``payload``."""
    received: list[tuple[str, bytes]] = []
    while True:
        message = client.expect_message(timeout)
        received.append((message.topic, bytes(message.payload)))
        if message.payload == payload:
            return received


# -- password file -----------------------------------------------------------------------------


def test_password_hash_format() -> None:
    hashed = password_hash("s3cret")
    match = re.fullmatch(r"\$7\$101\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)", hashed)
    assert match is not None
    assert len(base64.b64decode(match.group(1))) == 12
    assert len(base64.b64decode(match.group(2))) == 64
    assert verify_password("s3cret", hashed)
    assert not verify_password("s3cret!", hashed)


def test_password_hash_is_deterministic_for_a_salt() -> None:
    salt = bytes(range(12))
    assert password_hash("pw", salt=salt) == password_hash("pw", salt=salt)
    assert password_hash("pw", salt=salt) != password_hash("pw", salt=bytes(12))
    assert password_hash("pw") != password_hash("pw")  # a fresh salt each time
    assert password_hash("pw", salt=salt, iterations=1000).startswith("$7$1000$")
    with pytest.raises(ValueError, match="12-byte salt"):
        password_hash("pw", salt=b"short")
    with pytest.raises(ValueError, match="empty"):
        password_hash("")


def test_password_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.fail(
            "mosquitto_passwd is missing: run ./scripts/setup (installs the Debian package mosquitto)"
        )
    passwd = tmp_path / "passwd"
    passwd.touch()
    subprocess.run([tool, "-b", str(passwd), "dev-1", "hunter2"], check=True, capture_output=True, timeout=30)
    user, _, theirs = passwd.read_text().strip().partition(":")
    assert user == "dev-1"
    salt = base64.b64decode(theirs.split("$")[3])
    assert password_hash("hunter2", salt=salt) == theirs
    assert verify_password("hunter2", theirs)


def test_broker_user_rejects_names_that_would_widen_the_acl() -> None:
    for bad in ("", "dev/1", "dev+", "#", "dev 1", "a:b", "-dev"):
        with pytest.raises(ValueError, match="invalid MQTT username"):
            BrokerUser.with_password(bad, "pw")
    with pytest.raises(ValueError, match="not a Mosquitto"):
        BrokerUser("dev-1", "plaintext")


# -- rendering ---------------------------------------------------------------------------------


def test_render_acl() -> None:
    rules = [line for line in render_acl("cp").splitlines() if line and not line.startswith("#")]
    assert rules == [
        "pattern write edgefleet/v1/devices/%u/reported",
        "pattern write edgefleet/v1/devices/%u/telemetry",
        "pattern write edgefleet/v1/devices/%u/events",
        "pattern write edgefleet/v1/devices/%u/status",
        "pattern read edgefleet/v1/devices/%u/desired",
        "pattern read edgefleet/v1/devices/%u/ack",
        "user cp",
        "topic readwrite edgefleet/v1/#",
    ]


def test_render_conf_tls_and_checks(tmp_path: Path) -> None:
    tls = TlsFiles(tmp_path / "ca.crt", tmp_path / "server.crt", tmp_path / "server.key")
    conf = render_mosquitto_conf(
        port=8883,
        data_dir=tmp_path / "data",
        password_file=None,
        acl_file=tmp_path / "acl",
        tls=tls,
        require_certificate=True,
        bind=None,
    )
    lines = conf.splitlines()
    for expected in (
        "per_listener_settings false",
        "allow_anonymous false",
        "listener 8883",
        f"cafile {tmp_path / 'ca.crt'}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "persistence true",
        f"persistence_location {tmp_path / 'data'}/",
        "max_queued_messages 100000",
        "log_dest stderr",
    ):
        assert expected in lines
    assert not any(line.startswith(("password_file", "pid_file", "user ")) for line in lines)
    with pytest.raises(ValueError, match="password file"):
        render_mosquitto_conf(port=1883, data_dir=tmp_path, password_file=None, acl_file=tmp_path / "acl")
    with pytest.raises(ValueError, match="needs TLS"):
        render_mosquitto_conf(
            port=1883,
            data_dir=tmp_path,
            password_file=tmp_path / "p",
            acl_file=tmp_path / "a",
            require_certificate=True,
        )


def test_write_broker_config_files(tmp_path: Path) -> None:
    users = [BrokerUser.with_password("cp", "a"), BrokerUser.with_password("dev-1", "b")]
    conf = write_broker_config(tmp_path / "broker", port=1883, users=users, control_plane_user="cp")
    directory = tmp_path / "broker"
    assert conf == directory / "mosquitto.conf"
    for name in ("mosquitto.conf", "passwd", "acl"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    assert (directory / "passwd").read_text() == "".join(f"{u.username}:{u.password_hash}\n" for u in users)
    assert (directory / "data").is_dir()
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]  # no temporary files left
    with pytest.raises(ValueError, match="no password-file entry"):
        write_broker_config(tmp_path / "other", port=1883, users=users[1:], control_plane_user="cp")
    with pytest.raises(ValueError, match="listed twice"):
        write_broker_config(tmp_path / "other", port=1883, users=users * 2, control_plane_user="cp")


# -- authentication ----------------------------------------------------------------------------


def test_anonymous_connect_is_refused(mosquitto: MosquittoBroker) -> None:  # noqa: F811
    with MqttTestClient(mosquitto) as client:
        # Mosquitto 2.0 answers "not authorized" (0x87) to anonymous clients and wrong passwords alike
        assert client.connect() == NOT_AUTHORIZED


def test_wrong_password_and_unknown_user_are_refused(mosquitto: MosquittoBroker) -> None:  # noqa: F811
    mosquitto.add_device("dev-1")
    with MqttTestClient(mosquitto, "dev-1", "wrong") as client:
        assert client.connect() == NOT_AUTHORIZED
    with MqttTestClient(mosquitto, "dev-2", "whatever") as client:
        assert client.connect() == NOT_AUTHORIZED
    with MqttTestClient(mosquitto, mosquitto.control_plane_user, "wrong") as client:
        assert client.connect() == NOT_AUTHORIZED


def test_added_device_logs_in_after_reload(mosquitto: MosquittoBroker) -> None:  # noqa: F811
    with MqttTestClient(mosquitto, "dev-new", "not-yet") as client:
        assert client.connect() == NOT_AUTHORIZED
    first = device(mosquitto, "dev-first")  # connected before the next reload, stays connected
    password = mosquitto.add_device("dev-new")
    with MqttTestClient(mosquitto, "dev-new", password) as client:
        assert client.connect() == 0
    # nobody subscribes: MQTT 5's PUBACK says "no matching subscribers" (0x10), a success code
    assert first.publish(device_topic("dev-first", "reported"), b"still here") == NO_MATCHING_SUBSCRIBERS
    first.close()


def test_removed_device_is_disconnected_on_reload(mosquitto: MosquittoBroker) -> None:  # noqa: F811
    """Revoking a device's password takes effect at the SIGHUP: Mosquitto rechecks connected clients."""
    with device(mosquitto, "dev-a") as dev, device(mosquitto, "dev-b") as other:
        mosquitto.remove_device("dev-a")
        assert dev.wait_disconnected(timeout=5)
        assert other.publish(device_topic("dev-b", "reported"), b"still here") == NO_MATCHING_SUBSCRIBERS


# -- authorization -----------------------------------------------------------------------------


def test_device_publishes_its_own_topics(
    mosquitto: MosquittoBroker,  # noqa: F811
    control_plane: MqttTestClient,
) -> None:
    with device(mosquitto, "dev-a") as dev:
        for leaf in ("reported", "telemetry", "events", "status"):
            assert dev.publish(device_topic("dev-a", leaf), leaf.encode()) == 0
        received = receive_until(control_plane, b"status")
    assert received == [
        (device_topic("dev-a", leaf), leaf.encode()) for leaf in ("reported", "telemetry", "events", "status")
    ]


def test_control_plane_replicas_share_telemetry(
    mosquitto: MosquittoBroker,  # noqa: F811
) -> None:
    share = shared_subscription("telemetry")
    assert share == "$share/edgefleet/edgefleet/v1/devices/+/telemetry"
    user, password = mosquitto.control_plane_user, mosquitto.control_plane_password
    with (
        MqttTestClient(mosquitto, user, password) as one,
        MqttTestClient(mosquitto, user, password) as two,
        device(mosquitto, "dev-a") as dev,
    ):
        inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        for name, replica in (("one", one), ("two", two)):
            replica.client.on_message = partial(_forward, inbox, name)
            assert replica.connect() == 0
            assert replica.subscribe(share) == [GRANTED_QOS1]
        sent = [f"t{i}".encode() for i in range(10)]
        for payload in sent:
            assert dev.publish(device_topic("dev-a", "telemetry"), payload) == 0
        got = [inbox.get(timeout=5) for _ in sent]
    assert sorted(payload for _, payload in got) == sorted(sent)  # each message once
    assert {name for name, _ in got} == {"one", "two"}  # Mosquitto deals them out round-robin


def _forward(inbox: queue.Queue[tuple[str, bytes]], name: str, *args: Any) -> None:
    inbox.put((name, args[-1].payload))


def test_shared_subscription_queues_for_an_offline_persistent_replica(
    mosquitto: MosquittoBroker,  # noqa: F811
) -> None:
    """Mosquitto 2.0 keeps dealing a shared subscription's messages to a member whose persistent
    session is offline: they wait in that session's queue rather than going to the replicas online.
    Control-plane replicas therefore subscribe with sessions that end with the connection."""
    share = shared_subscription("telemetry")
    user, password = mosquitto.control_plane_user, mosquitto.control_plane_password

    def replica(client_id: str) -> MqttTestClient:
        return MqttTestClient(
            mosquitto, user, password, client_id=client_id, clean_start=False, session_expiry_s=3600
        )

    with replica("online") as online, device(mosquitto, "dev-a") as dev:
        assert online.connect() == 0
        assert online.subscribe(share) == [GRANTED_QOS1]
        with replica("offline") as offline:
            assert offline.connect() == 0
            assert offline.subscribe(share) == [GRANTED_QOS1]
        for i in range(6):
            assert dev.publish(device_topic("dev-a", "telemetry"), f"t{i}".encode()) == 0
        with replica("offline") as offline:
            assert offline.connect() == 0
            assert offline.session_present
            queued = [offline.expect_message().payload for _ in range(3)]
        live = [online.expect_message().payload for _ in range(3)]
    assert sorted(queued + live) == [f"t{i}".encode() for i in range(6)]


def test_device_cannot_publish_to_another_device(
    mosquitto: MosquittoBroker,  # noqa: F811
    control_plane: MqttTestClient,
) -> None:
    mosquitto.add_device("dev-b")
    with device(mosquitto, "dev-a") as dev:
        for leaf in ("reported", "telemetry", "events", "status"):
            # QoS 1: MQTT 5 PUBACK with "not authorized"; the message is dropped
            assert dev.publish(device_topic("dev-b", leaf), b"forged") == NOT_AUTHORIZED
        # QoS 0: dropped silently, nothing comes back
        assert dev.publish(device_topic("dev-b", "reported"), b"forged", qos=0) is None
        assert dev.publish("edgefleet/v1/devices/dev-b/ack", b"forged") == NOT_AUTHORIZED
        assert dev.publish("elsewhere/topic", b"forged") == NOT_AUTHORIZED
        assert dev.publish(device_topic("dev-a", "reported"), b"sentinel") == 0
        assert receive_until(control_plane, b"sentinel") == [(device_topic("dev-a", "reported"), b"sentinel")]


def test_device_cannot_write_its_own_desired_or_ack(
    mosquitto: MosquittoBroker,  # noqa: F811
    control_plane: MqttTestClient,
) -> None:
    with device(mosquitto, "dev-a") as dev:
        assert dev.publish(device_topic("dev-a", "desired"), b"forged", retain=True) == NOT_AUTHORIZED
        assert dev.publish(device_topic("dev-a", "ack"), b"forged") == NOT_AUTHORIZED
        assert dev.publish(device_topic("dev-a", "desired"), b"forged", qos=0) is None
        assert dev.publish(device_topic("dev-a", "reported"), b"sentinel") == 0
        assert topics(receive_until(control_plane, b"sentinel")) == [device_topic("dev-a", "reported")]
    # and nothing was retained on its desired topic
    with device(mosquitto, "dev-a") as dev:
        assert dev.subscribe(device_topic("dev-a", "desired")) == [GRANTED_QOS1]
        assert control_plane.publish(device_topic("dev-a", "desired"), b"real", retain=True) == 0
        assert dev.expect_message().payload == b"real"


def test_device_reads_only_its_own_desired_and_ack(
    mosquitto: MosquittoBroker,  # noqa: F811
    control_plane: MqttTestClient,
) -> None:
    """Mosquitto 2.0's ACL file does not restrict SUBSCRIBE: a subscription to another device's
    topics, or to ``#``, is granted (SUBACK QoS 1, not 0x87). The read rules are applied to every
    message instead, retained ones included, so nothing of another device's ever arrives."""
    mosquitto.add_device("dev-b")
    assert control_plane.publish(device_topic("dev-b", "desired"), b"b retained", retain=True) == 0
    with device(mosquitto, "dev-a") as dev:
        for subscription in (
            device_topic("dev-b", "desired"),
            "#",
            "edgefleet/v1/devices/+/desired",
            "$SYS/#",
        ):
            assert dev.subscribe(subscription) == [GRANTED_QOS1]
        assert dev.subscribe(device_topic("dev-a", "desired")) == [GRANTED_QOS1]
        assert dev.subscribe(device_topic("dev-a", "ack")) == [GRANTED_QOS1]
        for topic, payload in (
            (device_topic("dev-b", "desired"), b"for b"),
            (device_topic("dev-b", "ack"), b"ack for b"),
            (device_topic("dev-a", "reported"), b"a's own report: write-only"),
            (device_topic("dev-a", "ack"), b"ack for a"),
            (device_topic("dev-a", "desired"), b"for a"),
        ):
            assert control_plane.publish(topic, payload) == 0
        # "#", "+/desired" and the exact subscription overlap: the broker sends each message once per
        # matching subscription, so a's own messages may come more than once, b's never
        received = receive_until(dev, b"for a")
        assert {payload for _, payload in received} <= {b"ack for a", b"for a"}
        assert b"ack for a" in {payload for _, payload in received}


def test_retained_desired_survives_restart(mosquitto: MosquittoBroker) -> None:  # noqa: F811
    password = mosquitto.add_device("dev-a")
    with MqttTestClient(mosquitto, mosquitto.control_plane_user, mosquitto.control_plane_password) as cp:
        assert cp.connect() == 0
        # no subscriber yet: PUBACK "no matching subscribers" (0x10), and the message is retained
        rc = cp.publish(device_topic("dev-a", "desired"), b"generation 7", retain=True)
        assert rc == NO_MATCHING_SUBSCRIBERS
    mosquitto.restart()
    with MqttTestClient(mosquitto, "dev-a", password) as dev:
        assert dev.connect() == 0
        assert dev.subscribe(device_topic("dev-a", "desired")) == [GRANTED_QOS1]
        message = dev.expect_message()
        assert (message.payload, message.retain) == (b"generation 7", True)


def test_persistent_session_survives_restart(mosquitto: MosquittoBroker) -> None:  # noqa: F811
    """The control plane's persistent session keeps its subscription and queues QoS 1 messages
    while it is away, across a broker restart."""
    user, password = mosquitto.control_plane_user, mosquitto.control_plane_password

    def control_plane_session() -> MqttTestClient:
        return MqttTestClient(
            mosquitto, user, password, client_id="cp-1", clean_start=False, session_expiry_s=3600
        )

    with control_plane_session() as cp:
        assert cp.connect() == 0
        assert cp.subscribe("edgefleet/v1/devices/+/events") == [GRANTED_QOS1]
    with device(mosquitto, "dev-a") as dev:
        assert dev.publish(device_topic("dev-a", "events"), b"while away") == 0
    mosquitto.restart()
    with control_plane_session() as cp:
        assert cp.connect() == 0
        assert cp.session_present
        message = cp.expect_message()
        assert (message.topic, message.payload) == (device_topic("dev-a", "events"), b"while away")


def test_last_will_on_status(
    mosquitto: MosquittoBroker,  # noqa: F811
    control_plane: MqttTestClient,
) -> None:
    status = device_topic("dev-a", "status")
    password = mosquitto.add_device("dev-a")
    # MQTT 5's "disconnect with will message" (0x04) fires the will as if the connection had dropped
    with_will = ReasonCode(PacketTypes.DISCONNECT, identifier=0x04)
    with MqttTestClient(mosquitto, "dev-a", password, will=(status, b"OFFLINE", 1, True)) as dev:
        assert dev.connect() == 0
        assert dev.publish(status, b"ONLINE", retain=True) == 0
        assert control_plane.expect_message().payload == b"ONLINE"
        dev.client.disconnect(reasoncode=with_will)
        message = control_plane.expect_message()
        assert (message.topic, message.payload, message.retain) == (status, b"OFFLINE", False)
    # Mosquitto 2.0 accepts a will on another device's topic at CONNECT, and drops it when it fires
    with MqttTestClient(
        mosquitto, "dev-a", password, will=(device_topic("dev-b", "status"), b"x", 1, True)
    ) as dev:
        assert dev.connect() == 0
        dev.client.disconnect(reasoncode=with_will)
    with device(mosquitto, "dev-a") as dev:
        assert dev.publish(device_topic("dev-a", "events"), b"sentinel") == 0
    assert topics(receive_until(control_plane, b"sentinel")) == [device_topic("dev-a", "events")]


# -- CA ----------------------------------------------------------------------------------------


def test_sign_csr_forces_the_device_id(mosquitto_ca: CertificateAuthority) -> None:  # noqa: F811
    key_pem, csr_pem = make_key_and_csr("dev-b")
    cert = x509.load_pem_x509_certificate(mosquitto_ca.sign_csr(csr_pem, "dev-a", days=30))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-a"
    assert cert.issuer == mosquitto_ca.certificate.subject
    cert.verify_directly_issued_by(mosquitto_ca.certificate)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key() == key.public_key()
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_sign_csr_rejects_a_tampered_csr(mosquitto_ca: CertificateAuthority) -> None:  # noqa: F811
    _, csr_pem = make_key_and_csr("dev-a")
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    assert der.count(b"dev-a") == 1
    tampered = x509.load_der_x509_csr(der.replace(b"dev-a", b"dev-b"))  # parses; signature no longer matches
    with pytest.raises(CsrRejected, match="signature does not verify"):
        mosquitto_ca.sign_csr(tampered.public_bytes(serialization.Encoding.PEM), "dev-b")
    with pytest.raises(CsrRejected, match="not a PEM"):
        mosquitto_ca.sign_csr(
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "x"
        )
    with pytest.raises(ValueError, match="invalid MQTT username"):
        mosquitto_ca.sign_csr(csr_pem, "dev/+")


def test_ca_load_or_create(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    ca = CertificateAuthority.load_or_create(directory)
    assert stat.S_IMODE((directory / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    again = CertificateAuthority.load_or_create(directory)
    assert again.ca_pem == ca.ca_pem
    basic = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca
    (directory / "ca.key").chmod(0o644)
    with pytest.raises(CertificateAuthorityError, match="group or others"):
        CertificateAuthority.load_or_create(directory)
    (directory / "ca.key").chmod(0o600)
    (directory / "ca.crt").write_bytes(CertificateAuthority.generate().ca_pem)
    with pytest.raises(CertificateAuthorityError, match="does not belong"):
        CertificateAuthority.load_or_create(directory)


# -- TLS and mutual TLS ------------------------------------------------------------------------


def test_mutual_tls_device_is_its_certificate(
    mosquitto_tls: MosquittoBroker,  # noqa: F811
    mosquitto_ca: CertificateAuthority,  # noqa: F811
) -> None:
    broker = mosquitto_tls
    with MqttTestClient(broker, tls=broker.client_tls(broker.control_plane_user)) as cp:
        assert cp.connect() == 0
        assert cp.subscribe("edgefleet/v1/#") == [GRANTED_QOS1]
        key_pem, csr_pem = make_key_and_csr("dev-a")
        tls = broker.write_client_files("dev-a", mosquitto_ca.sign_csr(csr_pem, "dev-a"), key_pem)
        # a username and password next to the certificate are ignored: the CN is the username
        with MqttTestClient(broker, CONTROL_PLANE_USER, "ignored", tls=tls) as dev:
            assert dev.connect() == 0
            assert dev.publish(device_topic("dev-a", "reported"), b"mine") == 0
            assert dev.publish(device_topic("dev-b", "reported"), b"forged") == NOT_AUTHORIZED
            assert dev.publish(device_topic("dev-a", "desired"), b"forged") == NOT_AUTHORIZED
            assert dev.publish(device_topic("dev-a", "telemetry"), b"sentinel") == 0
            assert receive_until(cp, b"sentinel") == [
                (device_topic("dev-a", "reported"), b"mine"),
                (device_topic("dev-a", "telemetry"), b"sentinel"),
            ]


def test_csr_claiming_another_cn_gets_the_device_id(
    mosquitto_tls: MosquittoBroker,  # noqa: F811
    mosquitto_ca: CertificateAuthority,  # noqa: F811
) -> None:
    broker = mosquitto_tls
    key_pem, csr_pem = make_key_and_csr(broker.control_plane_user)  # asks for the control plane's name
    tls = broker.write_client_files("dev-a", mosquitto_ca.sign_csr(csr_pem, "dev-a"), key_pem)
    with (
        MqttTestClient(broker, tls=broker.client_tls(broker.control_plane_user)) as cp,
        MqttTestClient(broker, tls=tls) as dev,
    ):
        assert cp.connect() == 0
        assert cp.subscribe("edgefleet/v1/#") == [GRANTED_QOS1]
        assert dev.connect() == 0
        assert dev.publish(device_topic("dev-b", "desired"), b"forged") == NOT_AUTHORIZED
        assert dev.publish(device_topic("dev-a", "status"), b"sentinel") == 0
        assert topics(receive_until(cp, b"sentinel")) == [device_topic("dev-a", "status")]


def test_a_revoked_certificate_cannot_connect_again_and_the_others_can(
    mosquitto_tls: MosquittoBroker,  # noqa: F811
    mosquitto_ca: CertificateAuthority,  # noqa: F811
) -> None:
    broker = mosquitto_tls
    certificates = {}
    for device in ("dev-a", "dev-b"):
        key_pem, csr_pem = make_key_and_csr(device)
        cert_pem = mosquitto_ca.sign_csr(csr_pem, device)
        certificates[device] = (
            certificate_serial(cert_pem),
            broker.write_client_files(device, cert_pem, key_pem),
        )
    for _serial, tls in certificates.values():
        with MqttTestClient(broker, tls=tls) as dev:
            assert dev.connect() == 0

    broker.revoke([(certificates["dev-a"][0], datetime.now(UTC))])  # dev-a decommissioned
    with MqttTestClient(broker, tls=certificates["dev-a"][1]) as dev, pytest.raises(OSError):  # noqa: PT011
        dev.connect()  # the handshake fails: "certificate revoked"
    with MqttTestClient(broker, tls=certificates["dev-b"][1]) as dev:
        assert dev.connect() == 0


def test_the_crl_names_exactly_the_revoked_serials_and_the_ca_signed_it(
    mosquitto_ca: CertificateAuthority,  # noqa: F811
) -> None:
    when = datetime(2026, 11, 26, 1, 30, tzinfo=UTC)
    crl = x509.load_pem_x509_crl(mosquitto_ca.issue_crl([("1f", when), ("abc123", when)]))
    assert crl.is_signature_valid(mosquitto_ca.certificate.public_key())
    assert sorted(r.serial_number for r in crl) == [0x1F, 0xABC123]
    assert crl.next_update_utc is not None
    assert crl.next_update_utc >= mosquitto_ca.certificate.not_valid_after_utc
    assert x509.load_pem_x509_crl(mosquitto_ca.issue_crl([])).is_signature_valid(
        mosquitto_ca.certificate.public_key()
    )


def test_tls_client_without_certificate_is_refused(mosquitto_tls: MosquittoBroker) -> None:  # noqa: F811
    # TLS 1.3 reports the missing certificate after the client's handshake completes: paho sees the
    # connection closed (or, under TLS 1.2, a handshake error): either way an OSError
    tls = mosquitto_tls.client_tls()
    with MqttTestClient(mosquitto_tls, "dev-a", "pw", tls=tls) as client, pytest.raises(OSError):  # noqa: PT011
        client.connect()


def test_tls_client_with_foreign_certificate_is_refused(mosquitto_tls: MosquittoBroker) -> None:  # noqa: F811
    cert_pem, key_pem = CertificateAuthority.generate().issue_client_cert("dev-a")
    tls = mosquitto_tls.write_client_files("rogue", cert_pem, key_pem)
    with MqttTestClient(mosquitto_tls, tls=tls) as client, pytest.raises(OSError):  # noqa: PT011
        client.connect()


# -- edgefleet broker-config ------------------------------------------------------------------


def test_broker_config_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane.cli import app

    monkeypatch.setenv("EDGEFLEET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("EDGEFLEET_MQTT_PASSWORD", raising=False)
    out = tmp_path / "broker"
    runner = CliRunner()
    args = [
        "broker-config",
        "--out",
        str(out),
        "--require-certificate",
        "--host",
        "mqtt.example",
        "--host",
        "10.0.0.5",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    generated = re.search(r"EDGEFLEET_MQTT_PASSWORD\): (\S+)", result.output)
    assert generated is not None
    entry = (out / "passwd").read_text().strip()
    assert entry.startswith(f"{CONTROL_PLANE_USER}:")
    assert verify_password(generated.group(1), entry.partition(":")[2])
    conf = (out / "mosquitto.conf").read_text().splitlines()
    assert "listener 8883" in conf
    assert "use_identity_as_username true" in conf
    server = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mqtt.example"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert (tmp_path / "data" / "ca" / "ca.crt").read_bytes() == (out / "ca.crt").read_bytes()
    client = x509.load_pem_x509_certificate((tmp_path / "data" / "mqtt" / "client.crt").read_bytes())
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CONTROL_PLANE_USER

    # again: the CA and the control plane's password are kept
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "kept the existing password" in result.output
    assert (out / "passwd").read_text().strip() == entry
    assert (tmp_path / "data" / "ca" / "ca.crt").read_bytes() == (out / "ca.crt").read_bytes()

    monkeypatch.setenv("EDGEFLEET_MQTT_PASSWORD", "from-the-environment")
    result = runner.invoke(app, ["broker-config", "--out", str(out), "--port", "18830"])
    assert result.exit_code == 0, result.output
    assert "shown once" not in result.output
    assert verify_password("from-the-environment", (out / "passwd").read_text().strip().partition(":")[2])
    assert "listener 18830" in (out / "mosquitto.conf").read_text().splitlines()
    if os.geteuid() == 0:
        assert (out / "passwd").stat().st_uid == _uid("mosquitto")


def _uid(name: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


@pytest.mark.parametrize("mode", ["password", "mutual-tls"])
def test_broker_config_output_runs_a_broker(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``edgefleet broker-config`` writes runs as is. Started as root, Mosquitto switches to
    the ``mosquitto`` user before reading the password file, the ACL and the server key, which the
    command gave to that user: the directory must be one that user can enter, so not pytest's."""
    from controlplane.cli import app

    base = Path(tempfile.mkdtemp(prefix="edgefleet-broker-"))
    try:
        base.chmod(0o755)
        data_dir, out, port = base / "data", base / "broker", free_port()
        monkeypatch.setenv("EDGEFLEET_DATA_DIR", str(data_dir))
        monkeypatch.setenv("EDGEFLEET_MQTT_PASSWORD", "control-plane-secret")
        args = ["broker-config", "--out", str(out), "--port", str(port), "--bind", "127.0.0.1"]
        if mode == "mutual-tls":
            args += ["--require-certificate", "--host", "127.0.0.1"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        process = spawn(out / "mosquitto.conf", port, base / "mosquitto.log")
        try:
            address = BrokerAddress("127.0.0.1", port)
            if mode == "password":
                cp = MqttTestClient(address, CONTROL_PLANE_USER, "control-plane-secret")
                dev = MqttTestClient(address, "dev-a", "no device users yet")
            else:
                ca = CertificateAuthority.load_or_create(data_dir / "ca")
                cp = MqttTestClient(
                    address,
                    tls=ClientTls(
                        out / "ca.crt", data_dir / "mqtt" / "client.crt", data_dir / "mqtt" / "client.key"
                    ),
                )
                key_pem, csr_pem = make_key_and_csr("dev-a")
                (base / "dev-a.crt").write_bytes(ca.sign_csr(csr_pem, "dev-a"))
                (base / "dev-a.key").write_bytes(key_pem)
                dev = MqttTestClient(
                    address, tls=ClientTls(out / "ca.crt", base / "dev-a.crt", base / "dev-a.key")
                )
            with cp, dev:
                assert cp.connect() == 0
                assert cp.subscribe("edgefleet/v1/#") == [GRANTED_QOS1]
                if mode == "password":
                    assert dev.connect() == NOT_AUTHORIZED
                else:
                    assert dev.connect() == 0
                    assert dev.publish(device_topic("dev-a", "reported"), b"hello") == 0
                    assert dev.publish(device_topic("dev-b", "reported"), b"forged") == NOT_AUTHORIZED
                assert cp.publish(device_topic("dev-a", "desired"), b"sentinel", retain=True) == 0
                received = receive_until(cp, b"sentinel")
                assert [payload for _, payload in received] == (
                    [b"sentinel"] if mode == "password" else [b"hello", b"sentinel"]
                )
        finally:
            terminate(process)
    finally:
        shutil.rmtree(base, ignore_errors=True)
