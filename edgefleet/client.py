"""``WorkflowClient``: run workflows on a device, or dry-run them on the control plane.

::

    from edgefleet import WorkflowClient

    with WorkflowClient(endpoint="https://cp.example:8080", api_key=token) as client:
        result = client.execute_workflow(
            workflow_id="order_processing", input_data={"product": {"id": "P1001"}, "quantity": 3}
        )
        print(result["calculated_price"])

The endpoint picks the transport (:mod:`edgefleet.endpoint`): a device (gRPC, Unix socket or
TCP with TLS) runs the workflow it runs in production; the control plane (HTTP) runs the stored
workflow version on its own CPU, a dry run. ``execute_workflow`` works on both; ``inspect``,
``watch_events``, ``status``, ``list_workflows``, ``list_models`` and ``set_threshold`` need a
device.
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

from edgefleet._inputs import FrameLike
from edgefleet.device_info import DeviceEvent, DeviceStatus, ModelInfo, ThresholdChange, WorkflowInfo
from edgefleet.endpoint import Endpoint, EndpointKind, parse_endpoint
from edgefleet.errors import ClientClosed, InvalidArgument, UnsupportedOperation, WorkflowFailed
from edgefleet.results import FrameResult, WorkflowResult
from edgefleet.streams import Stream

if TYPE_CHECKING:
    from edgefleet._controlplane import ControlPlaneTransport
    from edgefleet._device import DeviceTransport

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_TIMEOUT_S", "Pem", "WorkflowClient"]

DEFAULT_TIMEOUT_S = 30.0
"""Unary calls (``execute_workflow``, ``status`` …) give up after this long unless told otherwise."""
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest gRPC message sent or received: the device API's own default limit."""

Pem: TypeAlias = bytes | str | os.PathLike[str]
"""PEM data as bytes, or the path of a PEM file (``str`` or ``Path``)."""


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


def _read_pem(value: Pem | None, name: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{name}: cannot read {value}: {exc.strerror}", field=name) from None


@contextmanager
def _needs(package: str, what: str) -> Iterator[None]:
    """Turns a missing transport library into an ImportError that says what to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise ImportError(
            f"{what} need the '{package}' package: pip install 'edgefleet[sdk]' (or {package})"
        ) from exc


class WorkflowClient:
    """A client of one endpoint (see the module docs for the forms).

    ``api_key`` is the device API token (TCP device endpoints; not sent on a Unix socket, whose
    file permissions authorise callers) or an operator token (the control plane). TLS:
    ``root_certificates`` are the CAs to trust (default: the system's), ``client_certificate`` and
    ``client_key`` a client certificate for devices that require one, ``tls_server_name`` the name
    to check the device's certificate against when it differs from the host dialled.
    ``timeout`` is the default of every unary call, in seconds (``None``: no limit); streams have
    none unless a call gives one.

    Thread-safe; close it (or use ``with``) to release its connections. Any method of a closed
    client raises :class:`~edgefleet.errors.ClientClosed`. Constructing one does not connect:
    an unreachable endpoint is reported by the first call (``Unavailable``).
    """

    def __init__(
        self,
        endpoint: str,
        api_key: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        root_certificates: Pem | None = None,
        client_certificate: Pem | None = None,
        client_key: Pem | None = None,
        tls_server_name: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.endpoint: Endpoint = parse_endpoint(endpoint)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._state = _State.OPEN
        roots = _read_pem(root_certificates, "root_certificates")
        chain = _read_pem(client_certificate, "client_certificate")
        key = _read_pem(client_key, "client_key")
        if (chain is None) != (key is None):
            raise InvalidArgument("client_certificate and client_key go together", field="client_certificate")
        self._device: DeviceTransport | None = None
        self._control_plane: ControlPlaneTransport | None = None
        if self.endpoint.kind == "device":
            with _needs("grpcio", "device endpoints"):
                from edgefleet._device import DeviceTransport, TlsMaterial

            tls = TlsMaterial(roots, chain, key, tls_server_name)
            self._device = DeviceTransport(
                self.endpoint, api_key, tls=tls, max_message_bytes=max_message_bytes
            )
        else:
            if chain is not None or tls_server_name is not None:
                raise UnsupportedOperation(
                    "client certificates and tls_server_name apply to device endpoints only",
                    endpoint=self.endpoint.describe(),
                )
            with _needs("httpx", "control-plane endpoints"):
                from edgefleet._controlplane import ControlPlaneTransport

            self._control_plane = ControlPlaneTransport(
                self.endpoint, api_key, root_certificates=roots, timeout=timeout
            )

    @property
    def kind(self) -> EndpointKind:
        """``device`` or ``control_plane``."""
        return self.endpoint.kind

    def __repr__(self) -> str:
        return f"WorkflowClient({self.endpoint.describe()}, {self._state.value})"

    # -- both kinds -------------------------------------------------------------------------

    def execute_workflow(
        self,
        workflow_id: str,
        input_data: Mapping[str, Any] | None = None,
        *,
        image: bytes | None = None,
        image_key: str | None = None,
        version: int | None = None,
        timeout: float | None = None,
        raise_on_failure: bool = False,
    ) -> WorkflowResult:
        """Run ``workflow_id`` once on ``input_data`` (a JSON object) and return its result.

        ``image`` (JPEG or PNG bytes) goes into the input document under ``image_key``: on a
        device, the workflow's frame key unless ``image_key`` says otherwise; on the control
        plane, base64-encoded under ``image_key`` or ``image``. ``version`` picks a stored
        version for a control-plane dry run (default: the newest); a device runs the version it
        has, so ``version`` there is :class:`~edgefleet.errors.UnsupportedOperation`.
        ``timeout`` (default: the client's) bounds the whole call; when it passes, a device
        cancels the run and the call raises ``DeadlineExceeded``.

        A run that fails *inside* the graph (a node error) is returned with
        ``status == "failed"`` and ``error`` naming the node, unless ``raise_on_failure`` is true:
        then it raises :class:`~edgefleet.errors.WorkflowFailed` carrying that result. Requests the
        endpoint refuses raise: ``InvalidArgument`` (``field`` names the input), ``NotFound``
        (an unknown workflow or version), ``Unauthenticated``, ``PermissionDenied``,
        ``FailedPrecondition`` (a dry run the control plane cannot make), ``Unavailable`` …
        """
        if not isinstance(workflow_id, str) or not workflow_id:
            raise InvalidArgument(
                "workflow_id must be a non-empty string",
                field="workflow_id",
                endpoint=self.endpoint.describe(),
            )
        if image is not None and not isinstance(image, bytes | bytearray | memoryview):
            raise InvalidArgument(
                f"image must be bytes (a JPEG or PNG), got {type(image).__name__}",
                field="image",
                endpoint=self.endpoint.describe(),
            )
        image_bytes = bytes(image) if image is not None else None
        call_timeout = self.timeout if timeout is None else timeout
        self._check_open()
        if self._device is not None:
            if version is not None:
                raise UnsupportedOperation(
                    "version= picks a stored version for a control-plane dry run; "
                    "a device runs the version it has",
                    endpoint=self.endpoint.describe(),
                )
            result = self._device.execute_workflow(
                workflow_id, input_data, image=image_bytes, image_key=image_key, timeout=call_timeout
            )
        else:
            assert self._control_plane is not None
            result = self._control_plane.execute_workflow(
                workflow_id,
                input_data,
                image=image_bytes,
                image_key=image_key,
                version=version,
                timeout=call_timeout,
            )
        if raise_on_failure and not result.succeeded:
            raise WorkflowFailed(result, endpoint=self.endpoint.describe())
        return result

    # -- devices only -----------------------------------------------------------------------

    def inspect(
        self,
        frames: Iterable[FrameLike],
        workflow_id: str,
        *,
        input_data: Mapping[str, Any] | None = None,
        image_key: str | None = None,
        window: int | None = None,
        timeout: float | None = None,
    ) -> Stream[FrameResult]:
        """Stream ``frames`` through ``workflow_id`` on the device: one :class:`FrameResult` per
        frame, in the order the frames came.

        A frame is encoded image bytes, ``(frame_id, bytes)`` or a :class:`~edgefleet.Frame`;
        a frame without an id gets its position in the stream (from 0). ``input_data`` adds
        the same input fields to every frame (a ``Frame``'s own ``input_data`` is merged over
        them). ``frames`` is read lazily, one frame at a time as the device takes them: the
        device keeps at most its inspect window of frames in flight and HTTP/2 flow control
        holds the sender back, so an endless generator (a camera) is fine. ``window`` further
        limits the frames sent and not yet answered by this call.

        A frame the device cannot run (a corrupt image, an unknown workflow) gets a result whose
        ``error`` says why, and the stream goes on. An exception raised by ``frames`` itself ends
        the stream and is raised, unchanged, from the iteration. ``timeout`` bounds the whole
        stream (default: none). Close the returned stream (or leave its ``with`` block) to stop
        early: the device cancels the frames in flight.
        """
        if window is not None and window < 1:
            raise InvalidArgument("window must be at least 1", field="window")
        return self._device_only("inspect").inspect(
            frames, workflow_id, input_data=input_data, image_key=image_key, window=window, timeout=timeout
        )

    def watch_events(
        self,
        kinds: Sequence[str] = (),
        workflow_ids: Sequence[str] = (),
        decisions: Sequence[str] = (),
        *,
        timeout: float | None = None,
    ) -> Stream[DeviceEvent]:
        """The device's events from now on, filtered: ``kinds`` (``decision``, ``run_failed``,
        ``threshold_override``, or an event a workflow emits such as ``part_rejected``),
        ``workflow_ids``, ``decisions`` (``accept``, ``reject``); an empty filter lets all through.

        Returns once the device has subscribed the watcher, so every event published after the
        return is delivered (none from before). A watcher that reads too slowly loses the oldest
        events; the next event it gets says in ``missed`` how many. The stream ends on
        :meth:`Stream.close`; a device that stops ends it with ``Unavailable``. Errors of the call
        (``Unauthenticated`` …) are raised here or, at the latest, by the first ``next()``.
        """
        return self._device_only("watch_events").watch_events(
            tuple(kinds), tuple(workflow_ids), tuple(decisions), timeout=timeout
        )

    def status(self, *, timeout: float | None = None) -> DeviceStatus:
        """The device's id, agent version, health, profile, backends, queues and workflows."""
        return self._device_only("status").status(timeout=self._timeout(timeout))

    def list_workflows(self, *, timeout: float | None = None) -> list[WorkflowInfo]:
        """The workflows the device runs, with their versions and run counts."""
        return self._device_only("list_workflows").list_workflows(timeout=self._timeout(timeout))

    def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """The models the device holds, with the backend serving each."""
        return self._device_only("list_models").list_models(timeout=self._timeout(timeout))

    def set_threshold(
        self,
        threshold_set: str,
        key: str,
        value: float,
        *,
        reason: str = "",
        actor: str = "",
        timeout: float | None = None,
    ) -> ThresholdChange:
        """Override ``threshold_set[key] = value`` on the device now (a new version of the live set,
        recorded on the device with ``reason`` and ``actor`` and reported to the control plane).
        ``InvalidArgument`` names ``threshold_set``, ``key`` or ``value`` (not finite);
        ``NotFound`` when no such set exists and no running workflow reads it."""
        return self._device_only("set_threshold").set_threshold(
            threshold_set, key, value, reason=reason, actor=actor, timeout=self._timeout(timeout)
        )

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Release the connections; device streams still open end with ``Cancelled``. Closing twice
        does nothing."""
        with self._lock:
            if self._state is _State.CLOSED:
                return
            self._state = _State.CLOSED
        if self._device is not None:
            self._device.close()
        if self._control_plane is not None:
            self._control_plane.close()

    def __enter__(self) -> WorkflowClient:
        self._check_open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise ClientClosed("the client is closed", endpoint=self.endpoint.describe())

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _device_only(self, method: str) -> DeviceTransport:
        self._check_open()
        if self._device is None:
            raise UnsupportedOperation(
                f"{method}() needs a device endpoint (unix:///…/device.sock or grpcs://host:port); "
                f"this client's endpoint is the control plane, which offers execute_workflow() dry runs",
                endpoint=self.endpoint.describe(),
            )
        return self._device
