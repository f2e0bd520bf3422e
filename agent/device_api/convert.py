"""Between the host's values and the messages of ``protos/device.proto``."""

from __future__ import annotations

import json
import math
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from agent.device_api.errors import InvalidArgument
from agent.device_api.events import DeviceEvent, run_decision
from agent.device_api.host import DeviceHost, ModelInfo, StatusSnapshot, WorkflowInfo
from agent.device_api.overrides import ThresholdOverride
from agent.workflow import RunResult
from agent.workflow.result import json_default
from protos import device_pb2 as pb


def parse_input(text: str, field: str = "input_json") -> dict[str, Any]:
    """The run input document from its JSON text (empty text: an empty document).
    ``InvalidArgument`` naming ``field`` when it is not a JSON object."""
    if not text:
        return {}
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(field, f"not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidArgument(field, f"must be a JSON object, got {type(document).__name__}")
    return document


def check_image(image: bytes, field: str = "image") -> None:
    """``InvalidArgument`` naming ``field`` unless ``image`` has the structure of a JPEG or PNG
    (headers only: microseconds, no pixel is decoded)."""
    from agent.imaging.errors import ImageError
    from agent.imaging.formats import read_header

    try:
        read_header(image)
    except ImageError as exc:
        raise InvalidArgument(field, str(exc)) from None


def timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    whole = math.floor(seconds)
    stamp.seconds, stamp.nanos = whole, int((seconds - whole) * 1e9)
    return stamp


def workflow_run(result: RunResult, *, include_result_json: bool = False) -> pb.WorkflowRun:
    """The run's message: its summary fields always, ``result_json`` (the whole result, encoded
    here once) only when ``include_result_json`` — encoding it costs more than the rest."""
    message = pb.WorkflowRun(
        run_id=result.run_id,
        workflow_id=result.workflow_id,
        workflow_version=result.workflow_version,
        status=result.status,
        decision=run_decision(result) if result.ok else "",
        duration_ms=result.duration_s * 1000.0,
    )
    if include_result_json:
        message.result_json = json.dumps(result.to_dict(), default=json_default)
    if result.error is not None:
        error = result.error
        message.error.CopyFrom(
            pb.RunError(
                node=error.node,
                node_type=error.node_type,
                kind=error.kind,
                message=error.message,
                retryable=error.retryable,
            )
        )
    return message


def workflow_info(info: WorkflowInfo) -> pb.WorkflowInfo:
    return pb.WorkflowInfo(
        workflow_id=info.workflow_id,
        version=info.version,
        nodes=info.nodes,
        models=list(info.models),
        threshold_sets=list(info.threshold_sets),
        runs=info.runs,
        failed=info.failed,
    )


def model_info(info: ModelInfo) -> pb.ModelInfo:
    return pb.ModelInfo(
        model_id=info.model_id,
        version=info.version,
        sha256=info.sha256,
        backend=info.backend,
        builds=[pb.EngineBuild(backend=b.backend, state=b.state, error=b.error) for b in info.builds],
    )


def device_status(snapshot: StatusSnapshot, *, inspect_in_flight: int, watchers: int) -> pb.DeviceStatus:
    return pb.DeviceStatus(
        device_id=snapshot.device_id,
        agent_version=snapshot.agent_version,
        health=snapshot.health,
        health_reasons=list(snapshot.health_reasons),
        profile=snapshot.profile,
        backends=list(snapshot.backends),
        backend_order=list(snapshot.backend_order),
        uptime_s=snapshot.uptime_s,
        queues=[
            pb.QueueDepth(workflow_id=q.workflow_id, depth=q.depth, capacity=q.capacity, dropped=q.dropped)
            for q in snapshot.queues
        ],
        inspect_in_flight=inspect_in_flight,
        watchers=watchers,
        workflows=[workflow_info(w) for w in snapshot.workflows],
        models=[model_info(m) for m in snapshot.models],
    )


def device_event(event: DeviceEvent) -> pb.DeviceEvent:
    return pb.DeviceEvent(
        seq=event.seq,
        kind=event.kind,
        time=timestamp(event.time),
        workflow_id=event.workflow_id,
        workflow_version=event.workflow_version,
        run_id=event.run_id,
        decision=event.decision,
        payload_json=event.payload_json(),
    )


def threshold_override(override: ThresholdOverride) -> pb.ThresholdOverride:
    return pb.ThresholdOverride(
        id=override.id,
        time=timestamp(override.time),
        threshold_set=override.threshold_set,
        key=override.key,
        value=override.value,
        had_previous=override.previous is not None,
        previous=override.previous if override.previous is not None else 0.0,
        version=override.version,
        origin=override.origin,
        actor=override.actor,
        reason=override.reason,
    )


def run_document(
    host: DeviceHost, workflow_id: str, input_json: str, image: bytes, image_key: str
) -> dict[str, Any]:
    """The run input of a request: ``input_json`` with ``image`` (checked) under ``image_key`` or
    the workflow's frame key. ``InvalidArgument`` naming the field, ``NotFound`` for an unknown
    workflow."""
    if not workflow_id:
        raise InvalidArgument("workflow_id", "required")
    document = parse_input(input_json)
    if image:
        key = image_key or host.input_key(workflow_id)
        check_image(image)
        if key in document:
            raise InvalidArgument(
                "image_key", f"input_json already has a '{key}' field; the image goes there"
            )
        document[key] = image
    elif image_key:
        raise InvalidArgument("image_key", "set without an image")
    return document
