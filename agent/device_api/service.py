"""``edgefleet.v1.DeviceService``: the gRPC methods, on top of a :class:`DeviceHost`.

Every method checks the caller first (:mod:`agent.device_api.auth`). Host errors become status
codes here: ``InvalidArgument`` → INVALID_ARGUMENT (the message starts with the field),
``NotFound`` → NOT_FOUND, ``NotReady`` → UNAVAILABLE. A run whose deadline passes is cancelled
and the call ends with DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NoReturn

import grpc

from agent.device_api import convert
from agent.device_api.auth import Authoriser
from agent.device_api.cancel import CancelToken
from agent.device_api.errors import DeviceApiError, InvalidArgument, NotFound, NotReady
from agent.device_api.events import EventFilter, Subscription
from agent.device_api.host import DeviceHost
from agent.device_api.inflight import Gauge
from agent.device_api.inspect_stream import InspectStream
from agent.device_api.settings import DeviceApiSettings
from protos import device_pb2 as pb
from protos import device_pb2_grpc

WATCH_POLL_S = 1.0
"""How often a quiet ``WatchEvents`` call checks that it is still wanted."""


def abort(context: grpc.ServicerContext, exc: DeviceApiError) -> NoReturn:
    """End the call with the status code for ``exc``."""
    if isinstance(exc, InvalidArgument):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, NotFound):
        context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    if isinstance(exc, NotReady):
        context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    context.abort(grpc.StatusCode.INTERNAL, str(exc))


class DeviceServicer(device_pb2_grpc.DeviceServiceServicer):
    """The methods of ``DeviceService``. :meth:`shutdown` ends the long-lived calls."""

    def __init__(
        self, host: DeviceHost, settings: DeviceApiSettings, authoriser: Authoriser, pool: ThreadPoolExecutor
    ) -> None:
        self.host = host
        self.settings = settings
        self.auth = authoriser
        self.pool = pool
        self.inspect_in_flight = Gauge()
        self._watchers: set[Subscription] = set()
        self._streams: set[InspectStream] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def shutdown(self) -> None:
        """End every ``WatchEvents`` call (UNAVAILABLE) and stop reading ``Inspect`` frames; calls
        in progress finish."""
        with self._lock:
            self._stopping = True
            watchers, streams = list(self._watchers), list(self._streams)
        for subscription in watchers:
            subscription.close()
        for stream in streams:
            stream.stop("the device API is stopping")

    # ---- runs -----------------------------------------------------------------------------------

    def RunWorkflow(self, request: pb.RunWorkflowRequest, context: grpc.ServicerContext) -> pb.WorkflowRun:
        self.auth.check(context)
        token = CancelToken()

        def ended() -> None:
            remaining = context.time_remaining()
            token.cancel("deadline exceeded" if remaining is not None and remaining <= 0 else "call ended")

        context.add_callback(ended)
        try:
            document = convert.run_document(
                self.host, request.workflow_id, request.input_json, request.image, request.image_key
            )
            result = self.host.run(request.workflow_id, document, cancel=token)
        except DeviceApiError as exc:
            abort(context, exc)
        if token.cancelled:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED, f"run {result.run_id} cancelled at the deadline"
                )
            context.abort(grpc.StatusCode.CANCELLED, f"run {result.run_id} cancelled: {token.reason}")
        return convert.workflow_run(result, include_result_json=request.include_result_json)

    def Inspect(
        self, request_iterator: Iterator[pb.InspectFrame], context: grpc.ServicerContext
    ) -> Iterator[pb.InspectResult]:
        self.auth.check(context)
        stream = InspectStream(
            self.host, self.pool, self.settings.inspect_window, self.inspect_in_flight, context
        )
        with self._lock:
            if self._stopping:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the device API is stopping")
            self._streams.add(stream)
        try:
            yield from stream.responses(request_iterator)
        finally:
            with self._lock:
                self._streams.discard(stream)

    # ---- reading --------------------------------------------------------------------------------

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.DeviceStatus:
        self.auth.check(context)
        return convert.device_status(
            self.host.status(),
            inspect_in_flight=self.inspect_in_flight.value,
            watchers=self.host.events.subscribers,
        )

    def ListWorkflows(
        self, request: pb.ListWorkflowsRequest, context: grpc.ServicerContext
    ) -> pb.ListWorkflowsResponse:
        self.auth.check(context)
        return pb.ListWorkflowsResponse(workflows=[convert.workflow_info(w) for w in self.host.workflows()])

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        self.auth.check(context)
        return pb.ListModelsResponse(models=[convert.model_info(m) for m in self.host.models()])

    def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchEventsResponse]:
        self.auth.check(context)
        wanted = EventFilter(
            kinds=frozenset(request.kinds),
            workflow_ids=frozenset(request.workflow_ids),
            decisions=frozenset(request.decisions),
        )
        subscription = self.host.events.subscribe(wanted, self.settings.event_buffer)
        with self._lock:
            if self._stopping:
                subscription.close()
                context.abort(grpc.StatusCode.UNAVAILABLE, "the device API is stopping")
            self._watchers.add(subscription)
        context.add_callback(subscription.close)
        context.send_initial_metadata(())  # tells the caller it is subscribed
        try:
            with subscription:
                while context.is_active():
                    item = subscription.next(WATCH_POLL_S)
                    if item is None:
                        if subscription.closed:
                            break
                        continue
                    event, missed = item
                    yield pb.WatchEventsResponse(event=convert.device_event(event), missed=missed)
        finally:
            with self._lock:
                self._watchers.discard(subscription)
        if self._stopping:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the device API is stopping")

    # ---- thresholds -----------------------------------------------------------------------------

    def SetThreshold(
        self, request: pb.SetThresholdRequest, context: grpc.ServicerContext
    ) -> pb.SetThresholdResponse:
        self.auth.check(context)
        try:
            override, values = self.host.set_threshold(
                request.threshold_set,
                request.key,
                request.value,
                origin=context.peer(),
                actor=request.actor,
                reason=request.reason,
            )
        except DeviceApiError as exc:
            abort(context, exc)
        except OSError as exc:
            context.abort(
                grpc.StatusCode.INTERNAL, f"the threshold was applied but could not be recorded: {exc}"
            )
        return pb.SetThresholdResponse(override=convert.threshold_override(override), values=dict(values))
