"""The device transport: ``edgefleet.v1.DeviceService`` over gRPC, on the agent's Unix socket or
over TCP with TLS and a bearer token. grpc errors do not leave this module: every
``grpc.RpcError`` becomes an :class:`~edgefleet.errors.EdgefleetError`."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from edgefleet import _device_convert as convert
from edgefleet._inputs import FrameLike, input_json
from edgefleet.device_info import DeviceEvent, DeviceStatus, ModelInfo, ThresholdChange, WorkflowInfo
from edgefleet.endpoint import Endpoint
from edgefleet.errors import EdgefleetError
from edgefleet.results import Frame, FrameResult, WorkflowResult
from edgefleet.streams import Stream
from protos import device_pb2 as pb

__all__ = ["DeviceTransport", "TlsMaterial"]

SERVICE = "/edgefleet.v1.DeviceService/"
WINDOW_POLL_S = 0.2
"""How often a request feeder blocked on a full client window checks whether the stream ended."""

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """PEM bytes for a TLS device endpoint: the CAs to trust (``None``: the system's), and a
    client certificate and key for devices that require one."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None


class DeviceTransport:
    """One channel to one device. Thread-safe: calls and streams may run from several threads."""

    def __init__(
        self,
        endpoint: Endpoint,
        api_key: str | None,
        *,
        tls: TlsMaterial,
        max_message_bytes: int,
    ) -> None:
        self.endpoint = endpoint
        self.where = endpoint.describe()
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if endpoint.transport == "unix":
            # the socket's file permissions authorise callers; the token is not sent there
            self._channel = grpc.insecure_channel(endpoint.target, options=options)
            self._metadata: tuple[tuple[str, str], ...] = ()
        else:
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls.root_certificates,
                private_key=tls.private_key,
                certificate_chain=tls.certificate_chain,
            )
            self._channel = grpc.secure_channel(endpoint.target, credentials, options=options)
            self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        channel = self._channel
        self._run = channel.unary_unary(
            SERVICE + "RunWorkflow",
            request_serializer=pb.RunWorkflowRequest.SerializeToString,
            response_deserializer=pb.WorkflowRun.FromString,
        )
        self._inspect = channel.stream_stream(
            SERVICE + "Inspect",
            request_serializer=pb.InspectFrame.SerializeToString,
            response_deserializer=pb.InspectResult.FromString,
        )
        self._status = channel.unary_unary(
            SERVICE + "GetStatus",
            request_serializer=pb.GetStatusRequest.SerializeToString,
            response_deserializer=pb.DeviceStatus.FromString,
        )
        self._workflows = channel.unary_unary(
            SERVICE + "ListWorkflows",
            request_serializer=pb.ListWorkflowsRequest.SerializeToString,
            response_deserializer=pb.ListWorkflowsResponse.FromString,
        )
        self._models = channel.unary_unary(
            SERVICE + "ListModels",
            request_serializer=pb.ListModelsRequest.SerializeToString,
            response_deserializer=pb.ListModelsResponse.FromString,
        )
        self._watch = channel.unary_stream(
            SERVICE + "WatchEvents",
            request_serializer=pb.WatchEventsRequest.SerializeToString,
            response_deserializer=pb.WatchEventsResponse.FromString,
        )
        self._threshold = channel.unary_unary(
            SERVICE + "SetThreshold",
            request_serializer=pb.SetThresholdRequest.SerializeToString,
            response_deserializer=pb.SetThresholdResponse.FromString,
        )

    def error(self, exc: grpc.RpcError, method: str) -> EdgefleetError:
        """The SDK error for a failed call of ``method``."""
        return convert.status_error(exc.code().name, exc.details() or "", endpoint=self.where, method=method)

    def _unary(
        self, method: str, call: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req, timeout: float | None
    ) -> Resp:
        try:
            return call(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self.error(exc, method) from exc

    def execute_workflow(
        self,
        workflow_id: str,
        input_data: Mapping[str, Any] | None,
        *,
        image: bytes | None,
        image_key: str | None,
        timeout: float | None,
    ) -> WorkflowResult:
        request = pb.RunWorkflowRequest(
            workflow_id=workflow_id,
            input_json=input_json(input_data, endpoint=self.where),
            image=image or b"",
            image_key=image_key or "",
            include_result_json=True,  # the result's outputs and node outcomes
        )
        return convert.workflow_result(self._unary("RunWorkflow", self._run, request, timeout))

    def inspect(
        self,
        frames: Iterable[FrameLike],
        workflow_id: str,
        *,
        input_data: Mapping[str, Any] | None,
        image_key: str | None,
        window: int | None,
        timeout: float | None,
    ) -> Stream[FrameResult]:
        feed = _InspectFeed(self, frames, workflow_id, input_data, image_key, window)
        call = self._inspect(feed.requests(), timeout=timeout, metadata=self._metadata)
        feed.attach(call)
        return Stream(feed.results(call), feed.close)

    def watch_events(
        self,
        kinds: Sequence[str],
        workflow_ids: Sequence[str],
        decisions: Sequence[str],
        *,
        timeout: float | None,
    ) -> Stream[DeviceEvent]:
        request = pb.WatchEventsRequest(kinds=kinds, workflow_ids=workflow_ids, decisions=decisions)
        call = self._watch(request, timeout=timeout, metadata=self._metadata)
        closed = threading.Event()
        call.initial_metadata()  # the device sends it once the watcher is subscribed
        # a call refused at once (no token …) may have ended already; else the first next() says
        if isinstance(call, grpc.Future) and call.done() and call.code() != grpc.StatusCode.OK:
            raise convert.status_error(
                call.code().name, call.details() or "", endpoint=self.where, method="WatchEvents"
            )

        def events() -> Iterator[DeviceEvent]:
            try:
                for response in call:
                    yield convert.device_event(response)
            except grpc.RpcError as exc:
                if closed.is_set():
                    return
                raise self.error(exc, "WatchEvents") from exc

        def cancel() -> None:
            closed.set()
            call.cancel()

        return Stream(events(), cancel)

    def status(self, *, timeout: float | None) -> DeviceStatus:
        return convert.device_status(self._unary("GetStatus", self._status, pb.GetStatusRequest(), timeout))

    def list_workflows(self, *, timeout: float | None) -> list[WorkflowInfo]:
        reply = self._unary("ListWorkflows", self._workflows, pb.ListWorkflowsRequest(), timeout)
        return [convert.workflow_info(w) for w in reply.workflows]

    def list_models(self, *, timeout: float | None) -> list[ModelInfo]:
        reply = self._unary("ListModels", self._models, pb.ListModelsRequest(), timeout)
        return [convert.model_info(m) for m in reply.models]

    def set_threshold(
        self, threshold_set: str, key: str, value: float, *, reason: str, actor: str, timeout: float | None
    ) -> ThresholdChange:
        request = pb.SetThresholdRequest(
            threshold_set=threshold_set, key=key, value=value, reason=reason, actor=actor
        )
        return convert.threshold_change(self._unary("SetThreshold", self._threshold, request, timeout))

    def close(self) -> None:
        self._channel.close()


class _InspectFeed:
    """Feeds one Inspect stream from the caller's frames, lazily: gRPC pulls the next frame only
    when the previous one was written, and with a ``window`` no more than that many frames are
    sent and not yet answered. An error from the caller's iterable (or a frame of the wrong type)
    ends the stream and is raised to the reader as it was raised."""

    def __init__(
        self,
        transport: DeviceTransport,
        frames: Iterable[FrameLike],
        workflow_id: str,
        input_data: Mapping[str, Any] | None,
        image_key: str | None,
        window: int | None,
    ) -> None:
        self._transport = transport
        self._frames = frames
        self._workflow_id = workflow_id
        self._input_data = dict(input_data or {})
        self._input_json = input_json(input_data, endpoint=transport.where) if input_data else ""
        self._image_key = image_key or ""
        self._window = threading.Semaphore(window) if window else None
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._call: grpc.RpcContext | None = None
        self._failure: BaseException | None = None
        self._closed = False

    def requests(self) -> Iterator[pb.InspectFrame]:
        try:
            frames = iter(self._frames)
            position = 0
            while self._take_slot():  # the slot first: no frame is read before it can be sent
                try:
                    frame = next(frames)
                except StopIteration:
                    return
                yield self._message(position, frame)
                position += 1
        except Exception as exc:  # noqa: BLE001 - the caller's own error, handed to the reader
            self._fail(exc)

    def _take_slot(self) -> bool:
        """Wait for room in the window; false once the stream ended (the reader closed it, or
        the call is over even though nobody reads its results)."""
        if self._window is not None:
            while not self._window.acquire(timeout=WINDOW_POLL_S):
                if self._ended.is_set() or (self._call is not None and not self._call.is_active()):
                    return False
        return not self._ended.is_set()

    def _message(self, position: int, frame: FrameLike) -> pb.InspectFrame:
        extra: Mapping[str, Any] | None = None
        frame_id: int | None = None
        if isinstance(frame, Frame):
            image, frame_id, extra = frame.image, frame.frame_id, frame.input_data
        elif isinstance(frame, bytes | bytearray | memoryview):
            image = bytes(frame)
        elif isinstance(frame, tuple) and len(frame) == 2:
            frame_id, image = frame
        else:
            raise TypeError(
                f"inspect: frame {position} is a {type(frame).__name__}; "
                "expected bytes, (frame_id, bytes) or edgefleet.Frame"
            )
        text = self._input_json
        if extra:
            text = input_json({**self._input_data, **extra}, endpoint=self._transport.where)
        return pb.InspectFrame(
            frame_id=position if frame_id is None else frame_id,
            workflow_id=self._workflow_id if position == 0 else "",
            image=bytes(image),
            input_json=text,
            image_key=self._image_key,
            include_result_json=True,  # the result's outputs and node outcomes
        )

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._failure = exc
            call = self._call
        if call is not None:
            call.cancel()

    def attach(self, call: grpc.RpcContext) -> None:
        with self._lock:
            self._call = call
            failed = self._failure is not None
        if failed:
            call.cancel()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            call = self._call
        self._ended.set()
        if call is not None:
            call.cancel()

    def results(self, call: Iterator[pb.InspectResult]) -> Iterator[FrameResult]:
        where = self._transport.where
        try:
            for message in call:
                if self._window is not None:
                    self._window.release()
                if message.HasField("problem") and message.problem.code:
                    problem = message.problem
                    error = convert.status_error(
                        problem.code, problem.message, endpoint=where, method="Inspect", field=problem.field
                    )
                    yield FrameResult(message.frame_id, error=error)
                else:
                    yield FrameResult(message.frame_id, result=convert.workflow_result(message.run))
        except grpc.RpcError as exc:
            if self._failure is not None:
                raise self._failure from None
            if self._closed:
                return
            raise self._transport.error(exc, "Inspect") from exc
        finally:
            self._ended.set()
        if self._failure is not None:
            raise self._failure
