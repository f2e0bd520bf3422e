"""A throwaway Mosquitto broker for edgefleet's tests.

``MosquittoBroker.start(base_dir)`` writes the configuration ``edgefleet broker-config`` would
(:func:`controlplane.broker.config.write_broker_config`: password file, ACL, persistence) into
``base_dir`` and runs ``mosquitto -c`` on 127.0.0.1 at a free port, independent of any system broker
the Debian package may run on 1883: own port, own configuration, own persistence directory and no
pid file. The broker logs to ``base_dir/mosquitto.log``.

As root the broker keeps running as root (``user root``): otherwise Mosquitto switches to the
``mosquitto`` user before it reads the password file, which lives in pytest's root-only temporary
directory.

:class:`MqttTestClient` wraps a paho-mqtt 2.x MQTT 5 client with the waits tests need (CONNACK,
SUBACK, PUBACK reason codes, received messages) on events and queues instead of sleeps.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from controlplane.broker.ca import CertificateAuthority
from controlplane.broker.config import (
    CONTROL_PLANE_USER,
    BrokerUser,
    TlsFiles,
    write_broker_config,
    write_password_file,
)

__all__ = [
    "Address",
    "BrokerAddress",
    "ClientTls",
    "MosquittoBroker",
    "MosquittoError",
    "MosquittoUnavailable",
    "MqttTestClient",
    "find_mosquitto",
    "free_port",
    "spawn",
    "terminate",
]

HOST = "127.0.0.1"
SETUP_HINT = "run ./scripts/setup (installs the Debian package mosquitto)"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS = 5
LOG_TAIL_LINES = 40
RELOAD_LINE = "Reloading config."


class MosquittoUnavailable(RuntimeError):
    """The ``mosquitto`` binary is not installed."""


class MosquittoError(RuntimeError):
    """The test broker could not be started, reloaded or stopped."""


def find_mosquitto() -> str:
    """The path of the ``mosquitto`` binary (``/usr/sbin`` is not on every ``PATH``)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise MosquittoUnavailable(f"mosquitto is not installed: {SETUP_HINT}")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def spawn(
    conf_path: Path, port: int, log_path: Path, *, binary: str | None = None
) -> subprocess.Popen[bytes]:
    """Run ``mosquitto -c conf_path``, logging to ``log_path``, and return once it accepts
    connections on ``HOST:port``; :class:`MosquittoError` with the log's tail if it exits or does not
    listen within ``START_TIMEOUT_S``."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [binary or find_mosquitto(), "-c", str(conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=conf_path.parent,
            start_new_session=True,  # a ^C to pytest does not reach it first
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        code = process.poll()
        if code is not None:
            raise MosquittoError(f"mosquitto exited with status {code} on start:\n{_tail(log_path)}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return process
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise MosquittoError(
                f"mosquitto did not accept connections on {HOST}:{port} within "
                f"{START_TIMEOUT_S:.0f}s:\n{_tail(log_path)}"
            )
        time.sleep(0.01)


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Mosquitto saves its persistence file) and wait; SIGKILL if it takes too long."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise MosquittoError(f"mosquitto ignored SIGTERM for {STOP_TIMEOUT_S:.0f}s") from None


@dataclass(frozen=True)
class ClientTls:
    """What an MQTT client needs for (mutual) TLS: the CA to check the broker against and, for
    mutual TLS, its certificate and key."""

    ca_certs: Path
    certfile: Path | None = None
    keyfile: Path | None = None


class MosquittoBroker:
    """A Mosquitto process on ``host:port`` with edgefleet's configuration, in its own directory."""

    host = HOST

    def __init__(
        self,
        base_dir: Path,
        *,
        port: int,
        ca: CertificateAuthority | None,
        tls_files: TlsFiles | None,
        require_certificate: bool,
        persistence: bool,
    ) -> None:
        self.base_dir = base_dir
        self.port = port
        self.ca = ca
        self.tls_files = tls_files
        self.require_certificate = require_certificate
        self.persistence = persistence
        self.control_plane_user = CONTROL_PLANE_USER
        self.control_plane_password = secrets.token_urlsafe(24)
        self.data_dir = base_dir / "data"
        self.log_path = base_dir / "mosquitto.log"
        self.conf_path = base_dir / "mosquitto.conf"
        self.password_file = base_dir / "passwd"
        self._users: dict[str, BrokerUser] = {
            self.control_plane_user: BrokerUser.with_password(
                self.control_plane_user, self.control_plane_password
            )
        }
        self._binary = find_mosquitto()
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        base_dir: Path,
        *,
        tls: CertificateAuthority | TlsFiles | None = None,
        require_certificate: bool = False,
        persistence: bool = True,
    ) -> MosquittoBroker:
        """Configure and start a broker in ``base_dir`` on a free port; returns once the port
        accepts connections. ``tls``: a CA (the broker gets a server certificate for 127.0.0.1 and
        localhost from it) or ready files. Raises :class:`MosquittoUnavailable` without mosquitto and
        :class:`MosquittoError`, with the broker's log tail, if it does not start."""
        if require_certificate and tls is None:
            raise ValueError("require_certificate needs tls")
        base_dir.mkdir(parents=True, exist_ok=True)
        ca = tls if isinstance(tls, CertificateAuthority) else None
        tls_files = tls if isinstance(tls, TlsFiles) else None
        if ca is not None:
            tls_files = ca.write_server_files(base_dir / "tls", ["localhost"], [HOST])
        broker = cls(
            base_dir,
            port=0,
            ca=ca,
            tls_files=tls_files,
            require_certificate=require_certificate,
            persistence=persistence,
        )
        last_error: MosquittoError | None = None
        for _ in range(START_ATTEMPTS):  # another process may take the free port before mosquitto binds it
            broker.port = free_port()
            broker._write_config()
            try:
                broker._launch()
            except MosquittoError as exc:
                last_error = exc
                if "Address already in use" not in broker.log_tail():
                    raise
            else:
                return broker
        assert last_error is not None
        raise last_error

    def _write_config(self) -> None:
        write_broker_config(
            self.base_dir,
            port=self.port,
            users=self._users.values(),
            control_plane_user=self.control_plane_user,
            tls=self.tls_files,
            require_certificate=self.require_certificate,
            bind=HOST,
            data_dir=self.data_dir,
            persistence=self.persistence,
            run_as="root" if os.geteuid() == 0 else None,
        )

    def _launch(self) -> None:
        self._process = spawn(self.conf_path, self.port, self.log_path, binary=self._binary)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise MosquittoError("the broker is not running")
        return self._process.pid

    def stop(self) -> None:
        """SIGTERM and wait: Mosquitto saves its persistence file (retained messages, sessions)."""
        process, self._process = self._process, None
        if process is not None:
            terminate(process)

    def kill(self) -> None:
        """SIGKILL: nothing is saved since the last autosave, as after a crash or a power cut."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()

    def restart(self) -> None:
        """Stop (SIGTERM) and start again on the same port with the same persistence directory."""
        self.stop()
        self._launch()

    def __enter__(self) -> MosquittoBroker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- users -----------------------------------------------------------------------------------

    def add_device(self, device_id: str, password: str | None = None) -> str:
        """Add (or replace) a device's user with a random password, rewrite the password file and
        make the running broker reload it (SIGHUP); returns the password once the reload is done."""
        password = secrets.token_urlsafe(24) if password is None else password
        self._users[device_id] = BrokerUser.with_password(device_id, password)
        write_password_file(self.password_file, self._users.values())
        if self.running:
            self.reload()
        return password

    def remove_device(self, device_id: str) -> None:
        """Remove a device's user and reload: on reload Mosquitto checks the clients already connected
        against the new password file and disconnects this device's."""
        self._users.pop(device_id, None)
        write_password_file(self.password_file, self._users.values())
        if self.running:
            self.reload()

    def reload(self) -> None:
        """SIGHUP, then wait for the broker to log the reload. Mosquitto logs the line right before
        rereading the password file and the ACL, in the same turn of its single-threaded loop, so any
        packet it reads after the line is checked against the new files."""
        before = self._log_text().count(RELOAD_LINE)
        os.kill(self.pid, signal.SIGHUP)
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._log_text().count(RELOAD_LINE) <= before:
            if not self.running:
                raise MosquittoError(f"mosquitto exited on SIGHUP:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise MosquittoError(f"mosquitto did not reload on SIGHUP:\n{self.log_tail()}")
            time.sleep(0.005)

    # -- TLS ---------------------------------------------------------------------------------------

    def client_tls(self, common_name: str | None = None) -> ClientTls:
        """The TLS settings of a client: the CA alone, or with ``common_name`` also a client
        certificate for that CN (key made here, signed by the broker's CA)."""
        if self.tls_files is None:
            raise MosquittoError("this broker has no TLS listener")
        if common_name is None:
            return ClientTls(ca_certs=self.tls_files.cafile)
        if self.ca is None:
            raise MosquittoError("this broker was started with TLS files, not a CA: no client certificates")
        cert_pem, key_pem = self.ca.issue_client_cert(common_name)
        return self.write_client_files(common_name, cert_pem, key_pem)

    def write_client_files(self, name: str, cert_pem: bytes, key_pem: bytes) -> ClientTls:
        """Store a client certificate and key (e.g. from a CSR signed by the CA) for paho's tls_set."""
        if self.tls_files is None:
            raise MosquittoError("this broker has no TLS listener")
        directory = self.base_dir / "clients"
        directory.mkdir(mode=0o700, exist_ok=True)
        certfile = directory / f"{name}.crt"
        keyfile = directory / f"{name}.key"
        certfile.write_bytes(cert_pem)
        keyfile.touch(mode=0o600)
        keyfile.write_bytes(key_pem)
        return ClientTls(ca_certs=self.tls_files.cafile, certfile=certfile, keyfile=keyfile)

    # -- logs ------------------------------------------------------------------------------------

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines the broker logged."""
        return _tail(self.log_path, lines)


class Address(Protocol):
    """Where a broker listens: a :class:`MosquittoBroker`, or :class:`BrokerAddress` for one started
    otherwise."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int


class MqttTestClient:
    """A paho-mqtt MQTT 5 client running its network loop in a thread, with blocking helpers that
    wait on events (short timeouts) and return the broker's reason codes.

    ``close()`` (or the context manager) disconnects and stops the loop thread.
    """

    def __init__(
        self,
        broker: Address,
        username: str | None = None,
        password: str | None = None,
        *,
        client_id: str = "",
        tls: ClientTls | None = None,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> None:
        self.broker = broker
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(
                ca_certs=str(tls.ca_certs),
                certfile=None if tls.certfile is None else str(tls.certfile),
                keyfile=None if tls.keyfile is None else str(tls.keyfile),
            )
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos=qos, retain=retain)
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.disconnect_reason: ReasonCode | None = None
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self._lock = threading.Lock()
        self._acks: dict[int, list[ReasonCode]] = {}
        self._ack_events: dict[int, threading.Event] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self._loop_started = False

    # paho callbacks (its network thread)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, props: Any
    ) -> None:
        self.connack = reason
        self.session_present = flags.session_present
        self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        props: Any,
    ) -> None:
        self.disconnect_reason = reason
        self._disconnected.set()
        self._connected.set()  # wake a connect() waiting for a CONNACK that will not come

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def _ack(self, mid: int, codes: list[ReasonCode]) -> None:
        with self._lock:
            self._acks[mid] = codes
            event = self._ack_events.setdefault(mid, threading.Event())
        event.set()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        self._ack(mid, list(codes))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, code: ReasonCode, props: Any) -> None:
        self._ack(mid, [code])

    def _wait_ack(self, mid: int, timeout: float) -> list[ReasonCode]:
        with self._lock:
            event = self._ack_events.setdefault(mid, threading.Event())
        if not event.wait(timeout):
            raise TimeoutError(f"no acknowledgement for packet {mid} within {timeout}s")
        with self._lock:
            self._ack_events.pop(mid)
            return self._acks.pop(mid)

    def _reset_connection_state(self) -> None:
        self._connected.clear()
        self._disconnected.clear()
        self.connack = None
        self.disconnect_reason = None

    # blocking helpers (the test's thread)

    def connect(self, timeout: float = 5.0) -> ReasonCode:
        """Connect and wait for the CONNACK; returns its reason code (a failure code when refused).
        Raises ``TimeoutError`` when no CONNACK arrives, ``ConnectionError`` when the broker closes
        the connection without one (as a TLS listener does to a client without a certificate)."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._session_expiry_s
        self._reset_connection_state()
        self.client.connect(
            self.broker.host,
            self.broker.port,
            keepalive=30,
            clean_start=self._clean_start,
            properties=properties,
        )
        if not self._loop_started:
            self.client.loop_start()
            self._loop_started = True
        if not self._connected.wait(timeout):
            raise TimeoutError(f"no CONNACK within {timeout}s")
        connack = self.connack
        if connack is None:
            raise ConnectionError(f"the broker closed the connection: {self.disconnect_reason}")
        return connack

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5.0) -> list[ReasonCode]:
        """Subscribe and return the SUBACK's reason codes (granted QoS, or a failure code)."""
        result, mid = self.client.subscribe(topic, qos)
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionError(f"subscribe failed: {mqtt.error_string(result)}")
        return self._wait_ack(mid, timeout)

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = 5.0
    ) -> ReasonCode | None:
        """Publish; for QoS 1 return the PUBACK's reason code, for QoS 0 ``None`` once written."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            info.wait_for_publish(timeout)
            return None
        return self._wait_ack(info.mid, timeout)[0]

    def expect_message(self, timeout: float = 5.0) -> mqtt.MQTTMessage:
        """The next message received; ``TimeoutError`` if none arrives in time."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no message within {timeout}s") from None

    def drain(self) -> Iterator[mqtt.MQTTMessage]:
        """The messages received so far, without waiting."""
        while True:
            try:
                yield self.messages.get_nowait()
            except queue.Empty:
                return

    def wait_disconnected(self, timeout: float = 5.0) -> bool:
        return self._disconnected.wait(timeout)

    def close(self) -> None:
        """Disconnect (if connected) and stop the network thread."""
        with contextlib.suppress(Exception):
            self.client.disconnect()
        if self._loop_started:
            self.client.loop_stop()
            self._loop_started = False
        # a refused connection leaves paho's socket behind; close it so no ResourceWarning follows
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> MqttTestClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
