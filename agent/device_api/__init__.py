"""The device API: a local gRPC server through which the systems of a line (a PLC gateway, an
MES, a script) run workflows, stream frames, read status and events and override thresholds
(``protos/device.proto``, docs/device-api.md).

Typical use, inside the agent::

    host = AgentHost(agent, events)
    server = DeviceServer(host, settings.device_api, data_dir=settings.data_dir)
    server.start()
    ...
    server.stop()
"""

from agent.device_api.agent_host import AgentHost
from agent.device_api.cancel import CancelToken
from agent.device_api.errors import (
    DeviceApiError,
    InvalidArgument,
    NotFound,
    NotReady,
    RunCancelled,
    ServerError,
)
from agent.device_api.events import DeviceEvent, EventBus, EventFilter, Subscription
from agent.device_api.host import (
    DeviceHost,
    EngineBuild,
    Health,
    ModelInfo,
    QueueDepth,
    StatusSnapshot,
    WorkflowInfo,
)
from agent.device_api.overrides import OverrideLog, ThresholdOverride
from agent.device_api.server import DeviceServer
from agent.device_api.settings import DeviceApiSettings

__all__ = [
    "AgentHost",
    "CancelToken",
    "DeviceApiError",
    "DeviceApiSettings",
    "DeviceEvent",
    "DeviceHost",
    "DeviceServer",
    "EngineBuild",
    "EventBus",
    "EventFilter",
    "Health",
    "InvalidArgument",
    "ModelInfo",
    "NotFound",
    "NotReady",
    "OverrideLog",
    "QueueDepth",
    "RunCancelled",
    "ServerError",
    "StatusSnapshot",
    "Subscription",
    "ThresholdOverride",
    "WorkflowInfo",
]
