"""The agent's MQTT link to its control plane.

One :class:`SyncClient` per agent: paho-mqtt 2.x speaking MQTT 5 with QoS 1 and a persistent
session (``clean_start=False`` plus a Session Expiry Interval; the client id is the device id), so
messages for the device are queued by the broker while it is away. On every connection it
subscribes to its own ``desired`` (retained: the broker hands over the current desired state on
each subscribe) and ``ack`` topics, and publishes a retained ``Status(ONLINE)``; the broker
publishes the last will, a retained ``Status(OFFLINE)``, when the link dies without a clean
disconnect. :meth:`SyncClient.close` publishes ``OFFLINE`` itself and disconnects cleanly.

Threads: paho's network thread (``loop_start``) runs the socket and the callbacks. Callbacks only
decode and hand messages over (the reconciler's worker queues a desired state and returns), so a
download or an install never stalls keep-alives or acks.

Reconnects: paho's own ``reconnect_delay_set`` doubles a delay without jitter, so a fleet that
lost its broker would come back in lock-step. paho's network thread keeps reconnecting by itself,
but the wait between attempts comes from :class:`Backoff` (exponential, with jitter: the n-th wait
is uniform in ``[b/2, b]`` with ``b = min(max, min * 2**n)``). The backoff restarts from the
minimum once a connection has stayed up for ``stable_after_s``, so a broker that accepts and then
drops connections at once is not hammered.

Publishing: ``publish_reported`` keeps the latest reported state when offline and sends it on the
next connection. ``publish_batch`` refuses (returns ``False``) while offline: the outbox keeps the
records on disk and sends them later, and deletes them only when the control plane's ``ack``
says they are stored.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import paho.mqtt.client as mqtt
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.config import ResolvedSync
from protos import sync_pb2

__all__ = ["PREFIX", "Backoff", "SyncClient", "topic"]

log = logging.getLogger(__name__)

PREFIX = "edgefleet/v1/devices"
BatchKind = Literal["telemetry", "events"]


def topic(device_id: str, kind: str) -> str:
    """``edgefleet/v1/devices/{device_id}/{kind}``."""
    return f"{PREFIX}/{device_id}/{kind}"


class Backoff:
    """Exponential backoff with jitter.

    The n-th delay (from 0) is uniform in ``[b/2, b]`` with ``b = min(maximum, initial * 2**n)``:
    at least half the exponential delay (no hammering), and spread over the other half so that
    devices that lost the broker together do not return together.
    """

    def __init__(
        self, initial: float = 1.0, maximum: float = 60.0, *, rng: random.Random | None = None
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._attempt = 0
        self._lock = threading.Lock()

    @property
    def attempt(self) -> int:
        """Delays handed out since the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        with self._lock:
            base = min(self.maximum, self.initial * 2 ** min(self._attempt, 62))
            self._attempt += 1
        return self._rng.uniform(base / 2, base)

    def reset(self) -> None:
        with self._lock:
            self._attempt = 0


class _JitteredClient(mqtt.Client):
    """paho's client, whose waits between reconnect attempts come from a :class:`Backoff`.

    paho's network loop calls ``_reconnect_wait`` before every reconnect attempt (the first
    connection included, with ``loop_start``); its own version waits an unjittered doubling
    delay. This one waits the backoff's next delay, and returns at once when the client closes.
    """

    def __init__(self, client_id: str, backoff: Backoff, closing: threading.Event) -> None:
        super().__init__(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=True,
        )
        self.edgefleet_backoff = backoff
        self._edgefleet_closing = closing
        self.edgefleet_waits: list[float] = []

    def _reconnect_wait(self) -> None:
        delay = self.edgefleet_backoff.next_delay()
        self.edgefleet_waits.append(delay)
        del self.edgefleet_waits[:-100]
        log.info("MQTT: reconnecting in %.2f s (attempt %d)", delay, self.edgefleet_backoff.attempt)
        self._edgefleet_closing.wait(delay)


_M = TypeVar("_M", bound=ProtoMessage)
DesiredCallback = Callable[[sync_pb2.DesiredState], None]
AckCallback = Callable[[sync_pb2.Ack], None]


class SyncClient:
    """The device's MQTT session: desired state and acks in; reported state, records and status out.

    Call :meth:`start` once (it returns at once; the connection comes up on paho's network
    thread, ``connected`` is set while it is up) and :meth:`close` at the end.
    """

    def __init__(
        self,
        device_id: str,
        host: str,
        port: int = 1883,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        keepalive_s: int = 30,
        session_expiry_s: int = 7 * 24 * 3600,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        stable_after_s: float = 30.0,
        agent_version: str = "",
        rng: random.Random | None = None,
    ) -> None:
        if not device_id or any(c in device_id for c in "/+#\0"):
            raise ValueError(f"invalid device id {device_id!r}")
        self.device_id = device_id
        self.host = host
        self.port = port
        self.keepalive_s = keepalive_s
        self.session_expiry_s = session_expiry_s
        self.stable_after_s = stable_after_s
        self.agent_version = agent_version
        self.topics = {
            kind: topic(device_id, kind)
            for kind in ("desired", "reported", "telemetry", "events", "ack", "status")
        }
        self.connected = threading.Event()
        """Set while the broker has accepted the connection."""
        self.connections = 0
        """Successful connections so far (the first one included)."""
        self.last_error: str | None = None
        """Why the last connection attempt or connection failed, for status pages and logs."""
        self.session_present = False
        """Whether the broker resumed the device's session on the latest connection."""
        self.backoff = Backoff(reconnect_min_s, reconnect_max_s, rng=rng)
        self._closing = threading.Event()
        self._started = False
        self._lock = threading.Lock()
        self._pending_reported: bytes | None = None
        self._connected_at: float | None = None
        self._desired_callbacks: list[DesiredCallback] = []
        self._ack_callbacks: list[AckCallback] = []

        client = _JitteredClient(device_id, self.backoff, self._closing)
        client.enable_logger(logging.getLogger("edgefleet.mqtt.paho"))
        client.will_set(self.topics["status"], self._status(sync_pb2.Status.OFFLINE), qos=1, retain=True)
        if username is not None:
            client.username_pw_set(username, password)
        if tls:
            client.tls_set(
                ca_certs=str(ca_file) if ca_file else None,
                certfile=str(cert_file) if cert_file else None,
                keyfile=str(key_file) if key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        elif cert_file is not None:
            raise ValueError("a client certificate needs tls=True")
        client.max_inflight_messages_set(20)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        self._client = client

    @classmethod
    def from_settings(cls, sync: ResolvedSync, *, agent_version: str = "") -> SyncClient:
        return cls(
            sync.device_id,
            sync.mqtt_host,
            sync.mqtt_port,
            username=sync.mqtt_username,
            password=sync.mqtt_password,
            tls=sync.mqtt_tls,
            ca_file=sync.mqtt_ca_file,
            cert_file=sync.mqtt_cert_file,
            key_file=sync.mqtt_key_file,
            keepalive_s=sync.keepalive_s,
            session_expiry_s=sync.session_expiry_s,
            reconnect_min_s=sync.reconnect_min_s,
            reconnect_max_s=sync.reconnect_max_s,
            agent_version=agent_version,
        )

    # ---- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background: paho's network thread connects, retries with backoff and
        runs the callbacks."""
        if self._started:
            raise RuntimeError("SyncClient.start() was already called")
        self._started = True
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.session_expiry_s
        self._client.connect_async(
            self.host, self.port, keepalive=self.keepalive_s, clean_start=False, properties=properties
        )
        self._client.loop_start()

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self.connected.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Publish ``Status(OFFLINE)`` (retained), disconnect cleanly (so the broker does not send
        the last will) and stop the network thread."""
        if self._closing.is_set():
            return
        self._closing.set()
        if self.connected.is_set():
            info = self._client.publish(
                self.topics["status"], self._status(sync_pb2.Status.OFFLINE), qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("MQTT: the offline status was not delivered: %s", exc)
        self._client.disconnect()
        if self._started:
            self._client.loop_stop()
        self.connected.clear()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def paho(self) -> mqtt.Client:
        """The underlying paho client (for diagnostics and tests)."""
        return self._client

    @property
    def reconnect_waits(self) -> list[float]:
        """The latest waits before reconnect attempts, in seconds (for diagnostics and tests)."""
        return list(self._client.edgefleet_waits)

    # ---- subscriptions ------------------------------------------------------------------------

    def on_desired(self, callback: DesiredCallback) -> None:
        """Call ``callback(DesiredState)`` for every desired state received, on the network
        thread: it must return quickly (queue the work, do not do it)."""
        self._desired_callbacks.append(callback)

    def on_ack(self, callback: AckCallback) -> None:
        """Call ``callback(Ack)`` for every ack received (on the network thread, quickly)."""
        self._ack_callbacks.append(callback)

    # ---- publishing ---------------------------------------------------------------------------

    def publish_reported(self, state: sync_pb2.ReportedState) -> bool:
        """Publish the reported state (QoS 1). Offline, the latest one is kept and published on the
        next connection. True when it was handed to the connection now."""
        payload = state.SerializeToString()
        with self._lock:
            if self.connected.is_set():
                info = self._client.publish(self.topics["reported"], payload, qos=1)
                if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._pending_reported = None
                    return True
            self._pending_reported = payload
            return False

    def publish_batch(self, topic_kind: BatchKind, batch: sync_pb2.RecordBatch) -> bool:
        """Publish a batch of outbox records on ``telemetry`` or ``events`` (QoS 1).

        Returns False, queuing nothing, while offline: the caller keeps the records and tries
        again later. True means paho took the message; delivery to the control plane is
        confirmed by its ``ack``, not by this."""
        if topic_kind not in ("telemetry", "events"):
            raise ValueError(f"topic_kind must be 'telemetry' or 'events', not {topic_kind!r}")
        if not self.connected.is_set():
            return False
        info = self._client.publish(self.topics[topic_kind], batch.SerializeToString(), qos=1)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    # ---- paho callbacks (network thread) ------------------------------------------------------

    def _status(self, state: sync_pb2.Status.State) -> bytes:
        status = sync_pb2.Status(state=state, agent_version=self.agent_version)
        if state == sync_pb2.Status.ONLINE:
            # the last will has no time: the broker sends it whenever it notices the loss
            status.at.GetCurrentTime()
        payload: bytes = status.SerializeToString()
        return payload

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.last_error = f"the broker refused the connection: {reason_code}"
            log.error("MQTT %s:%d: %s", self.host, self.port, self.last_error)
            return
        self.connections += 1
        self.session_present = bool(flags.session_present)
        self._connected_at = time.monotonic()
        self.last_error = None
        log.info(
            "MQTT: connected to %s:%d as %s (session %s)",
            self.host,
            self.port,
            self.device_id,
            "resumed" if flags.session_present else "new",
        )
        options = SubscribeOptions(qos=1)
        client.subscribe([(self.topics["desired"], options), (self.topics["ack"], options)])
        client.publish(self.topics["status"], self._status(sync_pb2.Status.ONLINE), qos=1, retain=True)
        with self._lock:
            self.connected.set()
            pending, self._pending_reported = self._pending_reported, None
            if pending is not None:
                client.publish(self.topics["reported"], pending, qos=1)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if self._connected_at is not None and time.monotonic() - self._connected_at >= self.stable_after_s:
            self.backoff.reset()
        self._connected_at = None
        if self._closing.is_set():
            return
        if was_connected:
            self.last_error = f"connection lost: {reason_code}"
            log.warning("MQTT %s:%d: %s", self.host, self.port, self.last_error)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.last_error = f"cannot connect to {self.host}:{self.port}"
        log.warning("MQTT: %s", self.last_error)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            if message.topic == self.topics["desired"]:
                if not message.payload:  # the retained desired state was cleared
                    return
                desired = _decode(sync_pb2.DesiredState, message.payload, message.topic)
                if desired is None:
                    return
                if desired.device_id and desired.device_id != self.device_id:
                    log.warning("MQTT: ignoring a desired state for device %s", desired.device_id)
                    return
                for on_desired in list(self._desired_callbacks):
                    on_desired(desired)
            elif message.topic == self.topics["ack"]:
                ack = _decode(sync_pb2.Ack, message.payload, message.topic)
                if ack is None:
                    return
                for on_ack in list(self._ack_callbacks):
                    on_ack(ack)
            else:
                log.debug("MQTT: ignoring a message on %s", message.topic)
        except Exception:  # a callback's bug must not stop the network thread
            log.exception("MQTT: handling a message on %s failed", message.topic)


def _decode(kind: type[_M], payload: bytes | bytearray, where: str) -> _M | None:
    try:
        message: _M = kind.FromString(bytes(payload))
        return message
    except DecodeError as exc:
        log.warning("MQTT: dropping a malformed %s on %s: %s", kind.__name__, where, exc)
        return None
