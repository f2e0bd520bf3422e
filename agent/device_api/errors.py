"""Errors of the device API.

The tree::

    DeviceApiError            base
    ├── InvalidArgument       a request field that cannot be used (``field`` names it);
    │                         gRPC INVALID_ARGUMENT; retrying the same request never helps
    ├── NotFound              an unknown workflow or threshold set; gRPC NOT_FOUND
    ├── NotReady              the agent is starting or stopping; gRPC UNAVAILABLE; retry later
    ├── RunCancelled          a run stopped because its caller went away or its deadline passed
    └── ServerError           the server cannot start: a socket or TLS file that cannot be used
"""

from __future__ import annotations

from agent.workflow import NodeError


class DeviceApiError(Exception):
    """Base of the device API's errors."""


class InvalidArgument(DeviceApiError):
    """A request field that cannot be used; ``field`` names it (``image``, ``input_json``, …)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(DeviceApiError):
    """Something the request names does not exist on this device; ``field`` names the request
    field that named it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class NotReady(DeviceApiError):
    """The agent cannot run anything now (starting or stopping); retrying later helps."""


class RunCancelled(NodeError):
    """Raised in place of a node when its run was cancelled: the nodes after it do not run."""

    retryable = False


class ServerError(DeviceApiError):
    """The server cannot start with its settings (a socket, TLS or token file)."""
