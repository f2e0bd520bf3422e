"""The SDK's errors: one tree, mapped from gRPC status codes (devices) and from RFC 9457 problem
responses (the control plane).

The tree::

    EdgefleetError              base; ``endpoint`` names where the call went, ``code`` what answered
    ├── InvalidEndpoint         the endpoint string has no form the SDK knows (also a ValueError)
    ├── UnsupportedOperation    a device-only method on a control-plane endpoint, or the reverse
    ├── ClientClosed            a call on a closed client
    ├── InvalidArgument         a request field that cannot be used; ``field`` names it
    ├── NotFound                an unknown workflow, workflow version or threshold set
    ├── Unauthenticated         no token, or a wrong one
    ├── PermissionDenied        a token whose role may not do this
    ├── FailedPrecondition      cannot be done in the current state (a dry run the control plane
    │                           cannot make: a model file missing, a graph that no longer compiles)
    ├── ResourceExhausted       too large or too many at once; retrying later may help
    ├── DeadlineExceeded        the call's timeout passed (a device cancels the run); retry helps
    ├── Unavailable             not reachable, starting or stopping; retrying later helps
    ├── Cancelled               the call was cancelled by the other side
    ├── ServerError             the endpoint failed in a way the caller cannot fix
    ├── WorkflowFailed          ``raise_on_failure=True`` and the run failed inside the graph;
    │                           ``result`` holds the failed run's result
    └── AmbiguousOutput         ``result[key]`` where several nodes output ``key`` with different
                                values (also a KeyError)

``retryable`` says, on each class, whether sending the same request again can succeed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from edgefleet.results import WorkflowResult

__all__ = [
    "AmbiguousOutput",
    "Cancelled",
    "ClientClosed",
    "DeadlineExceeded",
    "EdgefleetError",
    "FailedPrecondition",
    "InvalidArgument",
    "InvalidEndpoint",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedOperation",
    "WorkflowFailed",
]


class EdgefleetError(Exception):
    """Base of the SDK's errors.

    ``detail`` is what the endpoint (or the SDK) said was wrong; ``endpoint`` the endpoint the call
    went to (empty when none was involved); ``code`` the gRPC status code name or ``HTTP <status>``
    that answered (empty when the SDK itself refused). ``str(error)`` names all three.
    """

    retryable: ClassVar[bool] = False

    def __init__(self, detail: str, *, endpoint: str = "", code: str = "") -> None:
        self.detail = detail
        self.endpoint = endpoint
        self.code = code
        where = f"{endpoint}: " if endpoint else ""
        answered = f" [{code}]" if code else ""
        super().__init__(f"{where}{detail}{answered}")


class InvalidEndpoint(EdgefleetError, ValueError):
    """The endpoint string has no form the SDK knows; the message lists the forms."""


class UnsupportedOperation(EdgefleetError):
    """The method (or an argument of it) does not apply to this kind of endpoint."""


class ClientClosed(EdgefleetError):
    """The client was closed; make a new one."""


class InvalidArgument(EdgefleetError):
    """A request field that cannot be used; ``field`` names it (``image``, ``input_json``,
    ``workflow_id``, ``input`` …; empty when the endpoint did not say). Retrying never helps."""

    def __init__(self, detail: str, *, field: str = "", endpoint: str = "", code: str = "") -> None:
        super().__init__(detail, endpoint=endpoint, code=code)
        self.field = field


class NotFound(EdgefleetError):
    """Something the request names does not exist there (a workflow, a version, a threshold set)."""


class Unauthenticated(EdgefleetError):
    """The endpoint does not know the caller: no ``api_key``, or a wrong or expired one."""


class PermissionDenied(EdgefleetError):
    """The caller is known but may not do this (e.g. a viewer token asking for a dry run)."""


class FailedPrecondition(EdgefleetError):
    """The request is valid but cannot be served in the endpoint's current state (the control
    plane cannot dry-run a version whose model file is missing or whose graph no longer compiles)."""


class ResourceExhausted(EdgefleetError):
    """A message past the size limit, or more calls at once than the endpoint serves."""

    retryable = True


class DeadlineExceeded(EdgefleetError):
    """The call's timeout passed before the answer came; a device cancels the run."""

    retryable = True


class Unavailable(EdgefleetError):
    """No answer: not reachable, refused the connection or TLS, or starting or stopping."""

    retryable = True


class Cancelled(EdgefleetError):
    """The other side cancelled the call."""

    retryable = True


class ServerError(EdgefleetError):
    """The endpoint failed (an internal error, a method it does not implement)."""


class WorkflowFailed(EdgefleetError):
    """The run failed inside the graph and the caller asked for an exception
    (``raise_on_failure=True``). ``result`` is the failed run's result; ``result.error`` names the
    node."""

    def __init__(self, result: WorkflowResult, *, endpoint: str = "") -> None:
        error = result.error
        what = f"node '{error.node}' ({error.kind}): {error.message}" if error else "no error reported"
        super().__init__(
            f"workflow '{result.workflow_id}' version {result.workflow_version} failed: {what}",
            endpoint=endpoint,
        )
        self.result = result

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        """Whether the failing node said retrying may help."""
        return bool(self.result.error and self.result.error.retryable)


class AmbiguousOutput(EdgefleetError, KeyError):
    """``result[key]`` where several nodes output ``key`` with different values; ``nodes`` names
    them. Read one node's value with ``result.output(node_id)[key]``."""

    def __init__(self, key: str, nodes: tuple[str, ...]) -> None:
        super().__init__(
            f"output '{key}' is ambiguous: nodes {', '.join(nodes)} output different values; "
            f"use result.output(node_id)['{key}']"
        )
        self.key = key
        self.nodes = nodes

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return Exception.__str__(self)
