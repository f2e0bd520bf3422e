"""edgefleet's Python SDK: run workflows on a device, or dry-run them on the control plane.

::

    from edgefleet import WorkflowClient

    with WorkflowClient(endpoint="unix:///var/lib/edgefleet/device.sock") as device:
        result = device.execute_workflow(workflow_id="surface_inspection", image=jpeg_bytes)
        print(result.decision)

The public API is what ``__all__`` lists; docs/sdk.md is the guide.
"""

from edgefleet.client import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TIMEOUT_S, Pem, WorkflowClient
from edgefleet.device_info import (
    DeviceEvent,
    DeviceStatus,
    EngineBuild,
    ModelInfo,
    QueueDepth,
    ThresholdChange,
    WorkflowInfo,
)
from edgefleet.endpoint import Endpoint, EndpointKind, parse_endpoint
from edgefleet.errors import (
    AmbiguousOutput,
    Cancelled,
    ClientClosed,
    DeadlineExceeded,
    EdgefleetError,
    FailedPrecondition,
    InvalidArgument,
    InvalidEndpoint,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    Unauthenticated,
    Unavailable,
    UnsupportedOperation,
    WorkflowFailed,
)
from edgefleet.results import Frame, FrameResult, RunError, WorkflowResult
from edgefleet.streams import Stream

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TIMEOUT_S",
    "AmbiguousOutput",
    "Cancelled",
    "ClientClosed",
    "DeadlineExceeded",
    "DeviceEvent",
    "DeviceStatus",
    "EdgefleetError",
    "Endpoint",
    "EndpointKind",
    "EngineBuild",
    "FailedPrecondition",
    "Frame",
    "FrameResult",
    "InvalidArgument",
    "InvalidEndpoint",
    "ModelInfo",
    "NotFound",
    "Pem",
    "PermissionDenied",
    "QueueDepth",
    "ResourceExhausted",
    "RunError",
    "ServerError",
    "Stream",
    "ThresholdChange",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedOperation",
    "WorkflowClient",
    "WorkflowFailed",
    "WorkflowInfo",
    "WorkflowResult",
    "parse_endpoint",
]
