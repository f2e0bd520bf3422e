"""``Inspect``: a stream of frames in, a stream of results out, in order, with flow control.

A reader thread takes a frame from the client only when fewer than ``window`` frames of the
stream are in flight (read and not yet answered), so a client faster than the device is held
back by HTTP/2 flow control instead of filling the device's memory; each frame runs on the
server's bounded run pool. Results go out in the order the frames came, each with
``result_json`` only when its frame set ``include_result_json``. A frame that cannot be
run (bad image, bad JSON, unknown workflow) gets a result with a ``problem`` and the stream goes
on. When the call ends early (the client cancels, the deadline passes, the server stops) the
runs in flight are cancelled.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc

from agent.device_api import convert
from agent.device_api.cancel import CancelToken
from agent.device_api.errors import DeviceApiError, InvalidArgument, NotFound, NotReady
from agent.device_api.host import DeviceHost
from agent.device_api.inflight import Gauge
from protos import device_pb2 as pb

_END = object()


def problem(exc: DeviceApiError) -> pb.FrameProblem:
    """The frame problem an error becomes: its gRPC code name, the field and the message."""
    if isinstance(exc, InvalidArgument):
        return pb.FrameProblem(code="INVALID_ARGUMENT", field=exc.field, message=str(exc))
    if isinstance(exc, NotFound):
        return pb.FrameProblem(code="NOT_FOUND", field=exc.field, message=str(exc))
    if isinstance(exc, NotReady):
        return pb.FrameProblem(code="UNAVAILABLE", message=str(exc))
    return pb.FrameProblem(code="INTERNAL", message=str(exc))


class InspectStream:
    """One ``Inspect`` call. ``in_flight`` is shared by every stream of the server (for status
    and tests); this stream adds at most ``window`` to it."""

    def __init__(
        self,
        host: DeviceHost,
        pool: ThreadPoolExecutor,
        window: int,
        in_flight: Gauge,
        context: grpc.ServicerContext,
    ) -> None:
        self._host = host
        self._pool = pool
        self._window = window
        self._slots = threading.Semaphore(window)
        self._in_flight = in_flight
        self._context = context
        self._results: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._tokens: set[CancelToken] = set()
        self._tokens_lock = threading.Lock()
        self._workflow_id = ""
        self._lock = threading.Lock()
        self._mine = 0  # this stream's frames in flight

    def responses(self, requests: Iterator[pb.InspectFrame]) -> Iterator[pb.InspectResult]:
        """The response stream for ``requests``; runs until the client stops sending and every
        result is out, or the call ends."""
        self._context.add_callback(self.stop)
        reader = threading.Thread(
            target=self._read, args=(requests,), name="edgefleet-inspect-reader", daemon=True
        )
        reader.start()
        try:
            while True:
                item = self._results.get()
                if item is _END:
                    return
                assert isinstance(item, Future)
                response: pb.InspectResult = item.result()
                yield response
                # resumed by gRPC once the result was sent: the frame is no longer in flight
                with self._lock:
                    self._mine -= 1
                    self._in_flight.sub()
                self._slots.release()
        finally:
            self.stop()
            with self._lock:  # frames read but never answered (the call ended early)
                self._in_flight.sub(self._mine)
                self._mine = 0

    def stop(self, reason: str = "the Inspect call ended") -> None:
        """End the stream: no further frame is read, runs in flight are cancelled."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        with self._tokens_lock:
            tokens = list(self._tokens)
        for token in tokens:
            token.cancel(reason)
        self._slots.release(self._window)  # wake the reader so that it sees the stop

    def _read(self, requests: Iterator[pb.InspectFrame]) -> None:
        try:
            while True:
                self._slots.acquire()
                if self._stopped.is_set():
                    return
                try:
                    frame = next(requests)
                except (StopIteration, grpc.RpcError):
                    return
                with self._lock:
                    if self._stopped.is_set():
                        return
                    self._mine += 1
                    self._in_flight.add()
                self._results.put(self._start(frame))
        finally:
            self._results.put(_END)

    def _start(self, frame: pb.InspectFrame) -> Future[pb.InspectResult]:
        workflow_id = frame.workflow_id or self._workflow_id
        self._workflow_id = workflow_id
        try:
            if not workflow_id:
                raise InvalidArgument("workflow_id", "required on the first frame of a stream")
            document = convert.run_document(
                self._host, workflow_id, frame.input_json, frame.image, frame.image_key
            )
        except DeviceApiError as exc:
            done: Future[pb.InspectResult] = Future()
            done.set_result(pb.InspectResult(frame_id=frame.frame_id, problem=problem(exc)))
            return done
        return self._pool.submit(self._run, frame.frame_id, workflow_id, document, frame.include_result_json)

    def _run(
        self, frame_id: int, workflow_id: str, document: dict[str, object], include_result_json: bool
    ) -> pb.InspectResult:
        token = CancelToken()
        with self._tokens_lock:
            self._tokens.add(token)
        if self._stopped.is_set():
            token.cancel("the Inspect call ended")
        try:
            result = self._host.run(workflow_id, document, cancel=token)
            run = convert.workflow_run(result, include_result_json=include_result_json)
            return pb.InspectResult(frame_id=frame_id, run=run)
        except DeviceApiError as exc:
            return pb.InspectResult(frame_id=frame_id, problem=problem(exc))
        finally:
            with self._tokens_lock:
                self._tokens.discard(token)
