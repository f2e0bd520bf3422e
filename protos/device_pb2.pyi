import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "input_json", "image", "image_key", "include_result_json")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_KEY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    input_json: str
    image: bytes
    image_key: str
    include_result_json: bool
    def __init__(self, workflow_id: _Optional[str] = ..., input_json: _Optional[str] = ..., image: _Optional[bytes] = ..., image_key: _Optional[str] = ..., include_result_json: _Optional[bool] = ...) -> None: ...

class RunError(_message.Message):
    __slots__ = ("node", "node_type", "kind", "message", "retryable")
    NODE_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    node: str
    node_type: str
    kind: str
    message: str
    retryable: bool
    def __init__(self, node: _Optional[str] = ..., node_type: _Optional[str] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class WorkflowRun(_message.Message):
    __slots__ = ("run_id", "workflow_id", "workflow_version", "status", "decision", "duration_ms", "error", "result_json")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    workflow_id: str
    workflow_version: int
    status: str
    decision: str
    duration_ms: float
    error: RunError
    result_json: str
    def __init__(self, run_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., workflow_version: _Optional[int] = ..., status: _Optional[str] = ..., decision: _Optional[str] = ..., duration_ms: _Optional[float] = ..., error: _Optional[_Union[RunError, _Mapping]] = ..., result_json: _Optional[str] = ...) -> None: ...

class InspectFrame(_message.Message):
    __slots__ = ("frame_id", "workflow_id", "image", "input_json", "image_key", "include_result_json")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    IMAGE_KEY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    workflow_id: str
    image: bytes
    input_json: str
    image_key: str
    include_result_json: bool
    def __init__(self, frame_id: _Optional[int] = ..., workflow_id: _Optional[str] = ..., image: _Optional[bytes] = ..., input_json: _Optional[str] = ..., image_key: _Optional[str] = ..., include_result_json: _Optional[bool] = ...) -> None: ...

class FrameProblem(_message.Message):
    __slots__ = ("code", "field", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    field: str
    message: str
    def __init__(self, code: _Optional[str] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class InspectResult(_message.Message):
    __slots__ = ("frame_id", "run", "problem")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    run: WorkflowRun
    problem: FrameProblem
    def __init__(self, frame_id: _Optional[int] = ..., run: _Optional[_Union[WorkflowRun, _Mapping]] = ..., problem: _Optional[_Union[FrameProblem, _Mapping]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueueDepth(_message.Message):
    __slots__ = ("workflow_id", "depth", "capacity", "dropped")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    depth: int
    capacity: int
    dropped: int
    def __init__(self, workflow_id: _Optional[str] = ..., depth: _Optional[int] = ..., capacity: _Optional[int] = ..., dropped: _Optional[int] = ...) -> None: ...

class DeviceStatus(_message.Message):
    __slots__ = ("device_id", "agent_version", "health", "health_reasons", "profile", "backends", "backend_order", "uptime_s", "queues", "inspect_in_flight", "watchers", "workflows", "models")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_REASONS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_ORDER_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    INSPECT_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    WATCHERS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    agent_version: str
    health: str
    health_reasons: _containers.RepeatedScalarFieldContainer[str]
    profile: str
    backends: _containers.RepeatedScalarFieldContainer[str]
    backend_order: _containers.RepeatedScalarFieldContainer[str]
    uptime_s: float
    queues: _containers.RepeatedCompositeFieldContainer[QueueDepth]
    inspect_in_flight: int
    watchers: int
    workflows: _containers.RepeatedCompositeFieldContainer[WorkflowInfo]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, device_id: _Optional[str] = ..., agent_version: _Optional[str] = ..., health: _Optional[str] = ..., health_reasons: _Optional[_Iterable[str]] = ..., profile: _Optional[str] = ..., backends: _Optional[_Iterable[str]] = ..., backend_order: _Optional[_Iterable[str]] = ..., uptime_s: _Optional[float] = ..., queues: _Optional[_Iterable[_Union[QueueDepth, _Mapping]]] = ..., inspect_in_flight: _Optional[int] = ..., watchers: _Optional[int] = ..., workflows: _Optional[_Iterable[_Union[WorkflowInfo, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkflowInfo(_message.Message):
    __slots__ = ("workflow_id", "version", "nodes", "models", "threshold_sets", "runs", "failed")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_SETS_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    version: int
    nodes: int
    models: _containers.RepeatedScalarFieldContainer[str]
    threshold_sets: _containers.RepeatedScalarFieldContainer[str]
    runs: int
    failed: int
    def __init__(self, workflow_id: _Optional[str] = ..., version: _Optional[int] = ..., nodes: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., threshold_sets: _Optional[_Iterable[str]] = ..., runs: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class ListWorkflowsResponse(_message.Message):
    __slots__ = ("workflows",)
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[WorkflowInfo]
    def __init__(self, workflows: _Optional[_Iterable[_Union[WorkflowInfo, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EngineBuild(_message.Message):
    __slots__ = ("backend", "state", "error")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    backend: str
    state: str
    error: str
    def __init__(self, backend: _Optional[str] = ..., state: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "version", "sha256", "backend", "builds")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BUILDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: str
    sha256: str
    backend: str
    builds: _containers.RepeatedCompositeFieldContainer[EngineBuild]
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[str] = ..., sha256: _Optional[str] = ..., backend: _Optional[str] = ..., builds: _Optional[_Iterable[_Union[EngineBuild, _Mapping]]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("kinds", "workflow_ids", "decisions")
    KINDS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_IDS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    workflow_ids: _containers.RepeatedScalarFieldContainer[str]
    decisions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kinds: _Optional[_Iterable[str]] = ..., workflow_ids: _Optional[_Iterable[str]] = ..., decisions: _Optional[_Iterable[str]] = ...) -> None: ...

class DeviceEvent(_message.Message):
    __slots__ = ("seq", "kind", "time", "workflow_id", "workflow_version", "run_id", "decision", "payload_json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    kind: str
    time: _timestamp_pb2.Timestamp
    workflow_id: str
    workflow_version: int
    run_id: str
    decision: str
    payload_json: str
    def __init__(self, seq: _Optional[int] = ..., kind: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., workflow_id: _Optional[str] = ..., workflow_version: _Optional[int] = ..., run_id: _Optional[str] = ..., decision: _Optional[str] = ..., payload_json: _Optional[str] = ...) -> None: ...

class WatchEventsResponse(_message.Message):
    __slots__ = ("event", "missed")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    event: DeviceEvent
    missed: int
    def __init__(self, event: _Optional[_Union[DeviceEvent, _Mapping]] = ..., missed: _Optional[int] = ...) -> None: ...

class SetThresholdRequest(_message.Message):
    __slots__ = ("threshold_set", "key", "value", "reason", "actor")
    THRESHOLD_SET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    threshold_set: str
    key: str
    value: float
    reason: str
    actor: str
    def __init__(self, threshold_set: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[float] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class ThresholdOverride(_message.Message):
    __slots__ = ("id", "time", "threshold_set", "key", "value", "had_previous", "previous", "version", "origin", "actor", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_SET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HAD_PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    time: _timestamp_pb2.Timestamp
    threshold_set: str
    key: str
    value: float
    had_previous: bool
    previous: float
    version: int
    origin: str
    actor: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., threshold_set: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[float] = ..., had_previous: _Optional[bool] = ..., previous: _Optional[float] = ..., version: _Optional[int] = ..., origin: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SetThresholdResponse(_message.Message):
    __slots__ = ("override", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    override: ThresholdOverride
    values: _containers.ScalarMap[str, float]
    def __init__(self, override: _Optional[_Union[ThresholdOverride, _Mapping]] = ..., values: _Optional[_Mapping[str, float]] = ...) -> None: ...
