"""What a device reports: its status, workflows, models, events and threshold overrides, as typed
values (the messages of ``protos/device.proto``, with empty strings read as ``None`` where the
proto means "not set")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "DeviceEvent",
    "DeviceStatus",
    "EngineBuild",
    "ModelInfo",
    "QueueDepth",
    "ThresholdChange",
    "WorkflowInfo",
]


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A workflow the device runs: its version, node count, the models and threshold sets it
    uses, and how many runs it made and how many of them failed."""

    workflow_id: str
    version: int
    nodes: int
    models: tuple[str, ...]
    threshold_sets: tuple[str, ...]
    runs: int
    failed: int


@dataclass(frozen=True, slots=True)
class EngineBuild:
    """An engine build for a model on one backend: ``state`` is building, ready or failed."""

    backend: str
    state: str
    error: str


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model the device holds: its version, sha256, the backend serving it now, engine builds."""

    model_id: str
    version: str
    sha256: str
    backend: str
    builds: tuple[EngineBuild, ...]


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """A workflow's source queue: frames waiting, its capacity, and frames it dropped so far."""

    workflow_id: str
    depth: int
    capacity: int
    dropped: int


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """The device now. ``health`` is ``starting``, ``serving``, ``building`` or ``stopping``
    (``health_reasons`` say why when not serving)."""

    device_id: str
    agent_version: str
    health: str
    health_reasons: tuple[str, ...]
    profile: str
    backends: tuple[str, ...]
    backend_order: tuple[str, ...]
    uptime_s: float
    queues: tuple[QueueDepth, ...]
    inspect_in_flight: int
    watchers: int
    workflows: tuple[WorkflowInfo, ...]
    models: tuple[ModelInfo, ...]

    @property
    def serving(self) -> bool:
        """True when the device runs workflows (health ``serving``)."""
        return self.health == "serving"


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One event from :meth:`WorkflowClient.watch_events`.

    ``kind`` is ``decision``, ``run_failed``, ``threshold_override`` or an event a workflow's
    ``emit`` node fired (e.g. ``part_rejected``); ``seq`` numbers every event published on the
    device; ``missed`` is how many events this watcher lost (it read too slowly) just before this
    one. ``decision`` is ``accept``/``reject`` for decision events, else ``None``; ``payload`` is
    the event's own fields.
    """

    seq: int
    kind: str
    time: datetime
    workflow_id: str | None
    workflow_version: int | None
    run_id: str | None
    decision: str | None
    payload: Mapping[str, Any]
    missed: int = 0


@dataclass(frozen=True, slots=True)
class ThresholdChange:
    """A threshold override recorded by the device (:meth:`WorkflowClient.set_threshold`):
    ``threshold_set[key]`` went from ``previous`` (``None``: the key had no value) to ``value``,
    making ``version`` of the set; ``values`` is the whole set now. ``origin`` is the connection's
    peer as the device saw it."""

    id: str
    time: datetime
    threshold_set: str
    key: str
    value: float
    previous: float | None
    version: int
    origin: str
    actor: str
    reason: str
    values: Mapping[str, float]
