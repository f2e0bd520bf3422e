"""A witness on the broker: every desired state the control plane publishes to any device, and
every reported state any device sends, as MQTT delivers them.

:class:`FleetRecorder` logs in with the control plane's own broker user (the ACL lets it read
everything under ``edgefleet/v1/``) and subscribes to ``edgefleet/v1/devices/+/desired`` and
``…/+/reported`` before a rollout is created. The retained desired states arrive first (what every
device was told before the rollout), then every new one, so "no device outside the cohort ever
received the candidate" is checked on what was really sent, not on what the database says now.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from controlplane.broker.config import DEVICES_TOPIC
from controlplane.broker.process import MosquittoBroker
from protos import sync_pb2
from tests.mosquitto import MqttTestClient

__all__ = ["Desired", "FleetRecorder", "Reported"]


@dataclass(frozen=True)
class Desired:
    device_id: str
    state: sync_pb2.DesiredState
    retained: bool
    """Delivered at subscription: published before the recorder subscribed."""


@dataclass(frozen=True)
class Reported:
    device_id: str
    state: sync_pb2.ReportedState


class FleetRecorder:
    """Records desired and reported states from subscription on (see the module docstring).
    A context manager: subscribed on entry, disconnected on exit."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self._client = MqttTestClient(
            broker,
            broker.control_plane_user,
            broker.control_plane_password,
            client_id=f"e2e-recorder-{uuid.uuid4().hex[:8]}",
        )
        self._desired: list[Desired] = []
        self._reported: list[Reported] = []

    def __enter__(self) -> FleetRecorder:
        reason = self._client.connect()
        assert not reason.is_failure, f"the recorder was refused by the broker: {reason}"
        for leaf in ("desired", "reported"):
            (granted,) = self._client.subscribe(f"{DEVICES_TOPIC}/+/{leaf}", qos=1)
            assert not granted.is_failure, f"subscribing to {leaf}: {granted}"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.close()

    def _collect(self) -> None:
        for message in self._client.drain():
            device_id, leaf = message.topic.split("/")[-2:]
            if not message.payload:
                continue  # a retained desired state cleared
            if leaf == "desired":
                state = sync_pb2.DesiredState.FromString(message.payload)
                self._desired.append(Desired(device_id, state, bool(message.retain)))
            elif leaf == "reported":
                self._reported.append(Reported(device_id, sync_pb2.ReportedState.FromString(message.payload)))

    def desired(self) -> list[Desired]:
        """Every desired state received so far, in order."""
        self._collect()
        return list(self._desired)

    def reported(self) -> list[Reported]:
        """Every reported state received so far, in order."""
        self._collect()
        return list(self._reported)

    def wait_desired(
        self, device_id: str, check: Callable[[sync_pb2.DesiredState], bool], timeout_s: float = 30.0
    ) -> Desired:
        """The first desired state of ``device_id`` for which ``check(state)`` holds, waiting for it;
        ``TimeoutError`` when none arrives within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            for desired in self.desired():
                if desired.device_id == device_id and check(desired.state):
                    return desired
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching desired state for {device_id} within {timeout_s:.0f}s")
            time.sleep(0.2)
