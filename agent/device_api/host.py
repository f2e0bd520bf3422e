"""What the device API needs from the agent: the :class:`DeviceHost` protocol.

The gRPC server knows only this protocol; :class:`agent.device_api.agent_host.AgentHost`
implements it on top of a running :class:`agent.daemon.Agent`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agent.device_api.cancel import CancelToken
from agent.device_api.events import EventBus
from agent.device_api.overrides import ThresholdOverride
from agent.workflow import RunResult

Health = Literal["starting", "serving", "building", "stopping"]
"""``serving``: runs can be served. ``starting``: not yet. ``building``: an engine that nothing
else can serve is being built. ``stopping``: shutting down."""


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    workflow_id: str
    version: int
    nodes: int
    input_key: str = "image"
    models: tuple[str, ...] = ()
    threshold_sets: tuple[str, ...] = ()
    runs: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class EngineBuild:
    backend: str
    state: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    model_id: str
    version: str
    sha256: str
    backend: str
    builds: tuple[EngineBuild, ...] = ()


@dataclass(frozen=True, slots=True)
class QueueDepth:
    workflow_id: str
    depth: int
    capacity: int
    dropped: int


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """The agent at one moment, for ``GetStatus``."""

    device_id: str
    agent_version: str
    health: Health
    health_reasons: tuple[str, ...] = ()
    profile: str = ""
    backends: tuple[str, ...] = ()
    backend_order: tuple[str, ...] = ()
    uptime_s: float = 0.0
    queues: tuple[QueueDepth, ...] = ()
    workflows: tuple[WorkflowInfo, ...] = ()
    models: tuple[ModelInfo, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


class DeviceHost(Protocol):
    """The agent as the device API sees it. Every method is thread-safe."""

    @property
    def events(self) -> EventBus:
        """Where decisions, workflow events and threshold overrides are published."""
        ...

    def health(self) -> tuple[Health, tuple[str, ...]]:
        """The health state and the reasons for it; cheap and never blocks."""
        ...

    def workflows(self) -> list[WorkflowInfo]:
        """The workflows this device runs now, by id."""
        ...

    def models(self) -> list[ModelInfo]:
        """The models loaded now, with their serving backend and engine builds."""
        ...

    def status(self) -> StatusSnapshot: ...

    def input_key(self, workflow_id: str) -> str:
        """The key of the input document a frame goes under for this workflow (``image`` unless
        its binding says otherwise). Raises ``NotFound`` (field ``workflow_id``) or ``NotReady``."""
        ...

    def run(
        self, workflow_id: str, document: dict[str, Any], *, cancel: CancelToken | None = None
    ) -> RunResult:
        """Run the workflow's current plan on ``document`` on the calling thread and publish the
        result to :attr:`events`. Once ``cancel`` is cancelled no further node starts and the run
        fails. Raises ``NotFound`` (field ``workflow_id``), ``InvalidArgument`` (field
        ``input_json``) for an input the executor refuses, or ``NotReady``."""
        ...

    def set_threshold(
        self, threshold_set: str, key: str, value: float, *, origin: str, actor: str = "", reason: str = ""
    ) -> tuple[ThresholdOverride, Mapping[str, float]]:
        """Apply ``threshold_set[key] = value`` to the live thresholds as a new version, record the
        override durably and publish it; returns the override and the set's values now. Raises
        ``NotFound`` (field ``threshold_set``: no workflow reads it and it has no values) or
        ``InvalidArgument`` (``key``, ``value``)."""
        ...
