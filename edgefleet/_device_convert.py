"""Between the messages of ``protos/device.proto`` and the SDK's values, and gRPC status codes to
the SDK's errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from edgefleet import errors
from edgefleet.device_info import (
    DeviceEvent,
    DeviceStatus,
    EngineBuild,
    ModelInfo,
    QueueDepth,
    ThresholdChange,
    WorkflowInfo,
)
from edgefleet.results import WorkflowResult
from protos import device_pb2 as pb

_ERRORS: Mapping[str, type[errors.EdgefleetError]] = {
    "INVALID_ARGUMENT": errors.InvalidArgument,
    "OUT_OF_RANGE": errors.InvalidArgument,
    "NOT_FOUND": errors.NotFound,
    "UNAUTHENTICATED": errors.Unauthenticated,
    "PERMISSION_DENIED": errors.PermissionDenied,
    "FAILED_PRECONDITION": errors.FailedPrecondition,
    "RESOURCE_EXHAUSTED": errors.ResourceExhausted,
    "DEADLINE_EXCEEDED": errors.DeadlineExceeded,
    "UNAVAILABLE": errors.Unavailable,
    "CANCELLED": errors.Cancelled,
    "ABORTED": errors.Unavailable,
}
"""gRPC status code names → SDK errors; any other code (UNKNOWN, INTERNAL, UNIMPLEMENTED …) is a
:class:`~edgefleet.errors.ServerError`."""


SDK_FIELDS: Mapping[str, str] = {"input_json": "input_data"}
"""Request fields the SDK takes under another name: errors name the SDK's argument."""


def field_of(detail: str) -> str:
    """The request field an INVALID_ARGUMENT message starts with (``image: not a JPEG`` →
    ``image``), or empty."""
    head, sep, _ = detail.partition(":")
    return head if sep and head.isidentifier() else ""


def status_error(
    code: str, detail: str, *, endpoint: str, method: str = "", field: str = ""
) -> errors.EdgefleetError:
    """The SDK error for gRPC status ``code`` (its name) with ``detail``."""
    cls = _ERRORS.get(code, errors.ServerError)
    text = f"{method}: {detail}" if method else detail
    if cls is errors.InvalidArgument:
        name = field or field_of(detail)
        return errors.InvalidArgument(text, field=SDK_FIELDS.get(name, name), endpoint=endpoint, code=code)
    return cls(text, endpoint=endpoint, code=code)


def timestamp(value: Any) -> datetime:
    """A ``google.protobuf.Timestamp`` as an aware UTC datetime."""
    return datetime.fromtimestamp(int(value.seconds) + int(value.nanos) / 1e9, UTC)


def _json_object(text: str) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}


def workflow_result(run: pb.WorkflowRun) -> WorkflowResult:
    """The result of a device's ``WorkflowRun``: its ``result_json`` document, with the device's
    decision and exact duration."""
    raw = _json_object(run.result_json)
    if not raw:  # a device that sends only the summary fields
        raw = {
            "run_id": run.run_id,
            "workflow": {"id": run.workflow_id, "version": run.workflow_version},
            "status": run.status,
            "duration_ms": run.duration_ms,
            "outputs": {},
        }
        if run.HasField("error"):
            raw["error"] = {
                "node": run.error.node,
                "node_type": run.error.node_type,
                "kind": run.error.kind,
                "message": run.error.message,
                "retryable": run.error.retryable,
            }
    return WorkflowResult.from_dict(raw, decision=run.decision, duration_ms=run.duration_ms)


def workflow_info(info: pb.WorkflowInfo) -> WorkflowInfo:
    return WorkflowInfo(
        workflow_id=info.workflow_id,
        version=info.version,
        nodes=info.nodes,
        models=tuple(info.models),
        threshold_sets=tuple(info.threshold_sets),
        runs=info.runs,
        failed=info.failed,
    )


def model_info(info: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        model_id=info.model_id,
        version=info.version,
        sha256=info.sha256,
        backend=info.backend,
        builds=tuple(EngineBuild(b.backend, b.state, b.error) for b in info.builds),
    )


def device_status(status: pb.DeviceStatus) -> DeviceStatus:
    return DeviceStatus(
        device_id=status.device_id,
        agent_version=status.agent_version,
        health=status.health,
        health_reasons=tuple(status.health_reasons),
        profile=status.profile,
        backends=tuple(status.backends),
        backend_order=tuple(status.backend_order),
        uptime_s=status.uptime_s,
        queues=tuple(QueueDepth(q.workflow_id, q.depth, q.capacity, q.dropped) for q in status.queues),
        inspect_in_flight=status.inspect_in_flight,
        watchers=status.watchers,
        workflows=tuple(workflow_info(w) for w in status.workflows),
        models=tuple(model_info(m) for m in status.models),
    )


def device_event(response: pb.WatchEventsResponse) -> DeviceEvent:
    event = response.event
    return DeviceEvent(
        seq=event.seq,
        kind=event.kind,
        time=timestamp(event.time),
        workflow_id=event.workflow_id or None,
        workflow_version=event.workflow_version or None,
        run_id=event.run_id or None,
        decision=event.decision or None,
        payload=_json_object(event.payload_json),
        missed=response.missed,
    )


def threshold_change(response: pb.SetThresholdResponse) -> ThresholdChange:
    override = response.override
    return ThresholdChange(
        id=override.id,
        time=timestamp(override.time),
        threshold_set=override.threshold_set,
        key=override.key,
        value=override.value,
        previous=override.previous if override.had_previous else None,
        version=override.version,
        origin=override.origin,
        actor=override.actor,
        reason=override.reason,
        values=dict(response.values),
    )
