"""A throwaway Mosquitto broker for edgefleet's tests.

The broker itself lives in :mod:`controlplane.broker.process` (the demo runs it too) and is
re-exported here under the names the tests use: ``MosquittoBroker.start(base_dir)`` writes the
configuration ``edgefleet broker-config`` would (password file, ACL, persistence) into
``base_dir`` and runs ``mosquitto -c`` on 127.0.0.1 at a free port, independent of any system
broker the Debian package may run on 1883. The broker logs to ``base_dir/mosquitto.log``.

:class:`MqttTestClient` wraps a paho-mqtt 2.x MQTT 5 client with the waits tests need (CONNACK,
SUBACK, PUBACK reason codes, received messages) on events and queues instead of sleeps.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from controlplane.broker.process import (
    ClientTls,
    MosquittoBroker,
    MosquittoError,
    MosquittoUnavailable,
    find_mosquitto,
    free_port,
    spawn,
    terminate,
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
        # a refused connection leaves paho's socket (and its wake-up socket pair) behind; close them so
        # no ResourceWarning follows when the client is collected
        with contextlib.suppress(OSError):
            self.client._reset_sockets()

    def __enter__(self) -> MqttTestClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
