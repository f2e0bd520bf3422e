"""The control plane's MQTT bridge: publishes desired states, ingests what devices send, acks.

One paho-mqtt client (MQTT 5, QoS 1) subscribes through shared subscriptions
(``$share/edgefleet/…``), so several control-plane replicas split the ingest load and each
message is stored once. paho's network thread only queues messages; a worker thread drains the
queue in batches, stores each batch in one transaction and only then publishes the acks, so a
device deletes a record from its outbox only once it is stored. Anything malformed — garbage,
truncated, oversized, for an unknown device, a batch naming another device than its topic — is
dropped and counted (``edgefleet_bridge_dropped_total{reason}``), and the bridge keeps serving.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from google.protobuf.message import DecodeError
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry, Counter

from controlplane.bridge import ingest
from controlplane.settings import ControlPlaneSettings
from controlplane.store import Database
from controlplane.store.schema import desired_states, devices
from protos import sync_pb2

log = logging.getLogger("edgefleet.controlplane.bridge")

PREFIX = "edgefleet/v1/devices"
SHARE = "$share/edgefleet"
INBOUND = ("reported", "telemetry", "events", "status")
BATCH_MESSAGES = 500


def topic(device_id: str, kind: str) -> str:
    return f"{PREFIX}/{device_id}/{kind}"


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "edgefleet_bridge_messages", "MQTT messages received, by topic kind.", ["kind"], registry=registry
        )
        self.records = Counter(
            "edgefleet_bridge_records",
            "Outbox records received, by outcome (stored, duplicate).",
            ["outcome"],
            registry=registry,
        )
        self.dropped = Counter(
            "edgefleet_bridge_dropped", "MQTT messages dropped, by reason.", ["reason"], registry=registry
        )
        self.desired = Counter(
            "edgefleet_bridge_desired_published", "Desired states published.", registry=registry
        )


class Bridge:
    def __init__(self, settings: ControlPlaneSettings, db: Database, registry: CollectorRegistry) -> None:
        if settings.mqtt_host is None:
            raise ValueError("the MQTT bridge needs mqtt_host")
        self.settings = settings
        self.db = db
        self.metrics = BridgeMetrics(registry)
        self.connected = threading.Event()
        self._inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=100_000)
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._work, name="edgefleet-bridge", daemon=True)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edgefleet-controlplane-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        if settings.mqtt_tls:
            self._client.tls_set(
                ca_certs=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None,
                certfile=str(settings.mqtt_cert_file) if settings.mqtt_cert_file else None,
                keyfile=str(settings.mqtt_key_file) if settings.mqtt_key_file else None,
            )
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._worker.start()
        self._client.connect_async(self.settings.mqtt_host or "", self.settings.mqtt_port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._stopping.set()
        self._inbox.put(None)
        self._worker.join(timeout=30)
        self._client.disconnect()
        self._client.loop_stop()

    # ---- paho callbacks (network thread: queue only) -------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Properties | None
    ) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the control plane: %s", reason)
            return
        client.subscribe([(f"{SHARE}/{PREFIX}/+/{kind}", 1) for kind in INBOUND])
        self.connected.set()
        log.info("MQTT bridge connected to %s:%s", self.settings.mqtt_host, self.settings.mqtt_port)
        threading.Thread(target=self.publish_all_desired, name="edgefleet-desired", daemon=True).start()

    def _on_disconnect(self, *_args: Any) -> None:
        self.connected.clear()
        if not self._stopping.is_set():
            log.warning("MQTT bridge disconnected; reconnecting")

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._inbox.put_nowait((message.topic, bytes(message.payload)))
        except queue.Full:
            # Not acked, so the device sends it again later: nothing is lost.
            self.metrics.dropped.labels("backlog").inc()

    # ---- desired state -------------------------------------------------------------------------

    def publish_desired(self, device_ids: Iterable[str]) -> None:
        """Publish the stored desired states of ``device_ids`` (retained, QoS 1)."""
        ids = list(device_ids)
        if not ids:
            return
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(desired_states.c.device_id, desired_states.c.payload).where(
                    desired_states.c.device_id.in_(ids)
                )
            ).all()
        for device_id, payload in rows:
            self._client.publish(topic(device_id, "desired"), payload, qos=1, retain=True)
            self.metrics.desired.inc()

    def clear_desired(self, device_id: str) -> None:
        self._client.publish(topic(device_id, "desired"), b"", qos=1, retain=True)

    def publish_all_desired(self) -> None:
        with self.db.read() as conn:
            ids = list(conn.execute(sa.select(desired_states.c.device_id)).scalars())
        for start in range(0, len(ids), 500):
            self.publish_desired(ids[start : start + 500])

    # ---- ingest (worker thread) ----------------------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            item = self._inbox.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < BATCH_MESSAGES:
                try:
                    more = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._stopping.set()
                    break
                batch.append(more)
            try:
                self._ingest(batch)
            except Exception:  # the database is down or refused: nothing is acked, devices re-send
                log.exception("could not store %d MQTT messages; they will be re-sent", len(batch))

    def _parse(self, topic_name: str, payload: bytes) -> tuple[str, str, Any] | None:
        parts = topic_name.split("/")
        if len(parts) != 5 or "/".join(parts[:3]) != PREFIX or parts[4] not in INBOUND:
            self.metrics.dropped.labels("topic").inc()
            return None
        device_id, kind = parts[3], parts[4]
        self.metrics.messages.labels(kind).inc()
        if len(payload) > self.settings.mqtt_max_payload:
            self.metrics.dropped.labels("oversized").inc()
            log.warning("dropped a %d-byte %s message from %s: over the limit", len(payload), kind, device_id)
            return None
        message_type: Any = {
            "reported": sync_pb2.ReportedState,
            "telemetry": sync_pb2.RecordBatch,
            "events": sync_pb2.RecordBatch,
            "status": sync_pb2.Status,
        }[kind]
        try:
            message = message_type.FromString(payload)
        except (DecodeError, ValueError, RuntimeError):
            self.metrics.dropped.labels("malformed").inc()
            log.warning("dropped a malformed %s message from %s (%d bytes)", kind, device_id, len(payload))
            return None
        claimed = getattr(message, "device_id", "")
        if claimed and claimed != device_id:
            self.metrics.dropped.labels("device_mismatch").inc()
            log.warning(
                "dropped a %s message on %s's topic that claims to be from %s", kind, device_id, claimed
            )
            return None
        return device_id, kind, message

    def _ingest(self, batch: list[tuple[str, bytes]]) -> None:
        parsed = [p for p in (self._parse(t, payload) for t, payload in batch) if p is not None]
        if not parsed:
            return
        acks: dict[str, list[int]] = defaultdict(list)
        with self.db.write() as conn:
            known = {
                row.id
                for row in conn.execute(
                    sa.select(devices.c.id).where(
                        devices.c.id.in_({device_id for device_id, _, _ in parsed}),
                        devices.c.status == "active",
                    )
                )
            }
            for device_id, kind, message in parsed:
                if device_id not in known:
                    self.metrics.dropped.labels("unknown_device").inc()
                    continue
                if kind == "reported":
                    ingest.ingest_reported(conn, device_id, message)
                elif kind == "status":
                    ingest.ingest_status(conn, device_id, message)
                else:
                    acks[device_id].extend(ingest.ingest_records(conn, device_id, message.records))
        for device_id, seqs in acks.items():
            ack = sync_pb2.Ack(stored=[sync_pb2.SeqRange(first=a, last=b) for a, b in ingest.ranges(seqs)])
            self._client.publish(topic(device_id, "ack"), ack.SerializeToString(), qos=1)
