import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Lineage(_message.Message):
    __slots__ = ("model_sha256", "workflow_id", "workflow_version", "threshold_set", "threshold_version", "rollout_id", "cohort")
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_SET_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    model_sha256: str
    workflow_id: str
    workflow_version: int
    threshold_set: str
    threshold_version: int
    rollout_id: str
    cohort: str
    def __init__(self, model_sha256: _Optional[str] = ..., workflow_id: _Optional[str] = ..., workflow_version: _Optional[int] = ..., threshold_set: _Optional[str] = ..., threshold_version: _Optional[int] = ..., rollout_id: _Optional[str] = ..., cohort: _Optional[str] = ...) -> None: ...

class ArtifactRef(_message.Message):
    __slots__ = ("kind", "name", "version", "sha256", "size", "url", "signed_manifest")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SIGNED_MANIFEST_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    version: int
    sha256: str
    size: int
    url: str
    signed_manifest: bytes
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ..., url: _Optional[str] = ..., signed_manifest: _Optional[bytes] = ...) -> None: ...

class WorkflowAssignment(_message.Message):
    __slots__ = ("workflow", "models", "threshold_sets", "role", "rollout_id", "bundle", "bundle_manifest")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_SETS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_MANIFEST_FIELD_NUMBER: _ClassVar[int]
    workflow: ArtifactRef
    models: _containers.RepeatedCompositeFieldContainer[ArtifactRef]
    threshold_sets: _containers.RepeatedCompositeFieldContainer[ArtifactRef]
    role: str
    rollout_id: str
    bundle: bytes
    bundle_manifest: bytes
    def __init__(self, workflow: _Optional[_Union[ArtifactRef, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ArtifactRef, _Mapping]]] = ..., threshold_sets: _Optional[_Iterable[_Union[ArtifactRef, _Mapping]]] = ..., role: _Optional[str] = ..., rollout_id: _Optional[str] = ..., bundle: _Optional[bytes] = ..., bundle_manifest: _Optional[bytes] = ...) -> None: ...

class DesiredState(_message.Message):
    __slots__ = ("device_id", "generation", "issued_at", "workflows")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    generation: int
    issued_at: _timestamp_pb2.Timestamp
    workflows: _containers.RepeatedCompositeFieldContainer[WorkflowAssignment]
    def __init__(self, device_id: _Optional[str] = ..., generation: _Optional[int] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., workflows: _Optional[_Iterable[_Union[WorkflowAssignment, _Mapping]]] = ...) -> None: ...

class WorkflowStatus(_message.Message):
    __slots__ = ("workflow_id", "active_version", "candidate_version", "lineage", "backend", "rollout_id", "role", "bundle_sha256", "shadow_version")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_SHA256_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    active_version: int
    candidate_version: int
    lineage: Lineage
    backend: str
    rollout_id: str
    role: str
    bundle_sha256: str
    shadow_version: int
    def __init__(self, workflow_id: _Optional[str] = ..., active_version: _Optional[int] = ..., candidate_version: _Optional[int] = ..., lineage: _Optional[_Union[Lineage, _Mapping]] = ..., backend: _Optional[str] = ..., rollout_id: _Optional[str] = ..., role: _Optional[str] = ..., bundle_sha256: _Optional[str] = ..., shadow_version: _Optional[int] = ...) -> None: ...

class RolloutFailure(_message.Message):
    __slots__ = ("rollout_id", "workflow_id", "bundle_sha256", "kind", "reason", "at")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[RolloutFailure.Kind]
        REFUSED: _ClassVar[RolloutFailure.Kind]
        WARMUP: _ClassVar[RolloutFailure.Kind]
        HEALTH_GATE: _ClassVar[RolloutFailure.Kind]
        CRASH_LOOP: _ClassVar[RolloutFailure.Kind]
    KIND_UNSPECIFIED: RolloutFailure.Kind
    REFUSED: RolloutFailure.Kind
    WARMUP: RolloutFailure.Kind
    HEALTH_GATE: RolloutFailure.Kind
    CRASH_LOOP: RolloutFailure.Kind
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_SHA256_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    workflow_id: str
    bundle_sha256: str
    kind: RolloutFailure.Kind
    reason: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, rollout_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., bundle_sha256: _Optional[str] = ..., kind: _Optional[_Union[RolloutFailure.Kind, str]] = ..., reason: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Health(_message.Message):
    __slots__ = ("state", "problems")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Health.State]
        OK: _ClassVar[Health.State]
        DEGRADED: _ClassVar[Health.State]
        FAILING: _ClassVar[Health.State]
    STATE_UNSPECIFIED: Health.State
    OK: Health.State
    DEGRADED: Health.State
    FAILING: Health.State
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    state: Health.State
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, state: _Optional[_Union[Health.State, str]] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class ReportedState(_message.Message):
    __slots__ = ("device_id", "generation", "attempted_generation", "phase", "error", "workflows", "health", "agent_version", "profile", "at", "rollout_failures")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[ReportedState.Phase]
        CONVERGED: _ClassVar[ReportedState.Phase]
        APPLYING: _ClassVar[ReportedState.Phase]
        FAILED: _ClassVar[ReportedState.Phase]
    PHASE_UNSPECIFIED: ReportedState.Phase
    CONVERGED: ReportedState.Phase
    APPLYING: ReportedState.Phase
    FAILED: ReportedState.Phase
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FAILURES_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    generation: int
    attempted_generation: int
    phase: ReportedState.Phase
    error: str
    workflows: _containers.RepeatedCompositeFieldContainer[WorkflowStatus]
    health: Health
    agent_version: str
    profile: str
    at: _timestamp_pb2.Timestamp
    rollout_failures: _containers.RepeatedCompositeFieldContainer[RolloutFailure]
    def __init__(self, device_id: _Optional[str] = ..., generation: _Optional[int] = ..., attempted_generation: _Optional[int] = ..., phase: _Optional[_Union[ReportedState.Phase, str]] = ..., error: _Optional[str] = ..., workflows: _Optional[_Iterable[_Union[WorkflowStatus, _Mapping]]] = ..., health: _Optional[_Union[Health, _Mapping]] = ..., agent_version: _Optional[str] = ..., profile: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rollout_failures: _Optional[_Iterable[_Union[RolloutFailure, _Mapping]]] = ...) -> None: ...

class Histogram(_message.Message):
    __slots__ = ("bounds", "counts", "sum", "count")
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    bounds: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    sum: float
    count: int
    def __init__(self, bounds: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ..., sum: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class WorkflowTelemetry(_message.Message):
    __slots__ = ("workflow_id", "lineage", "runs", "passed", "failed", "errors", "skipped", "latency_ms", "node_latency_ms", "model_latency_ms", "batch_size", "dropped_frames", "shadow_compared", "shadow_agreed", "shadow_score_drift_sum", "shadow_scored")
    class NodeLatencyMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Histogram
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Histogram, _Mapping]] = ...) -> None: ...
    class ModelLatencyMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Histogram
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Histogram, _Mapping]] = ...) -> None: ...
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    NODE_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_COMPARED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_AGREED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SCORE_DRIFT_SUM_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SCORED_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    lineage: Lineage
    runs: int
    passed: int
    failed: int
    errors: int
    skipped: int
    latency_ms: Histogram
    node_latency_ms: _containers.MessageMap[str, Histogram]
    model_latency_ms: _containers.MessageMap[str, Histogram]
    batch_size: Histogram
    dropped_frames: int
    shadow_compared: int
    shadow_agreed: int
    shadow_score_drift_sum: float
    shadow_scored: int
    def __init__(self, workflow_id: _Optional[str] = ..., lineage: _Optional[_Union[Lineage, _Mapping]] = ..., runs: _Optional[int] = ..., passed: _Optional[int] = ..., failed: _Optional[int] = ..., errors: _Optional[int] = ..., skipped: _Optional[int] = ..., latency_ms: _Optional[_Union[Histogram, _Mapping]] = ..., node_latency_ms: _Optional[_Mapping[str, Histogram]] = ..., model_latency_ms: _Optional[_Mapping[str, Histogram]] = ..., batch_size: _Optional[_Union[Histogram, _Mapping]] = ..., dropped_frames: _Optional[int] = ..., shadow_compared: _Optional[int] = ..., shadow_agreed: _Optional[int] = ..., shadow_score_drift_sum: _Optional[float] = ..., shadow_scored: _Optional[int] = ...) -> None: ...

class GpuMetrics(_message.Message):
    __slots__ = ("name", "utilization_percent", "memory_used_bytes", "memory_total_bytes", "temperature_c")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    name: str
    utilization_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: float
    def __init__(self, name: _Optional[str] = ..., utilization_percent: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., temperature_c: _Optional[float] = ...) -> None: ...

class SystemMetrics(_message.Message):
    __slots__ = ("cpu_percent", "memory_used_bytes", "memory_total_bytes", "disk_used_bytes", "disk_total_bytes", "temperatures_c", "gpus", "process_rss_bytes")
    class TemperaturesCEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURES_C_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    PROCESS_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    disk_used_bytes: int
    disk_total_bytes: int
    temperatures_c: _containers.ScalarMap[str, float]
    gpus: _containers.RepeatedCompositeFieldContainer[GpuMetrics]
    process_rss_bytes: int
    def __init__(self, cpu_percent: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., disk_used_bytes: _Optional[int] = ..., disk_total_bytes: _Optional[int] = ..., temperatures_c: _Optional[_Mapping[str, float]] = ..., gpus: _Optional[_Iterable[_Union[GpuMetrics, _Mapping]]] = ..., process_rss_bytes: _Optional[int] = ...) -> None: ...

class TelemetryRecord(_message.Message):
    __slots__ = ("window_start", "window_end", "workflows", "system", "outbox_dropped")
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_DROPPED_FIELD_NUMBER: _ClassVar[int]
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    workflows: _containers.RepeatedCompositeFieldContainer[WorkflowTelemetry]
    system: SystemMetrics
    outbox_dropped: int
    def __init__(self, window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., workflows: _Optional[_Iterable[_Union[WorkflowTelemetry, _Mapping]]] = ..., system: _Optional[_Union[SystemMetrics, _Mapping]] = ..., outbox_dropped: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("at", "kind", "severity", "workflow_id", "run_id", "lineage", "message", "attributes_json", "thumbnail_jpeg")
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_JSON_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_JPEG_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    kind: str
    severity: str
    workflow_id: str
    run_id: str
    lineage: Lineage
    message: str
    attributes_json: str
    thumbnail_jpeg: bytes
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., severity: _Optional[str] = ..., workflow_id: _Optional[str] = ..., run_id: _Optional[str] = ..., lineage: _Optional[_Union[Lineage, _Mapping]] = ..., message: _Optional[str] = ..., attributes_json: _Optional[str] = ..., thumbnail_jpeg: _Optional[bytes] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("seq", "created_at", "telemetry", "event")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    created_at: _timestamp_pb2.Timestamp
    telemetry: TelemetryRecord
    event: Event
    def __init__(self, seq: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., telemetry: _Optional[_Union[TelemetryRecord, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...

class RecordBatch(_message.Message):
    __slots__ = ("device_id", "records")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    records: _containers.RepeatedCompositeFieldContainer[Record]
    def __init__(self, device_id: _Optional[str] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ...) -> None: ...

class SeqRange(_message.Message):
    __slots__ = ("first", "last")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    first: int
    last: int
    def __init__(self, first: _Optional[int] = ..., last: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: _containers.RepeatedCompositeFieldContainer[SeqRange]
    def __init__(self, stored: _Optional[_Iterable[_Union[SeqRange, _Mapping]]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("state", "at", "agent_version")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Status.State]
        ONLINE: _ClassVar[Status.State]
        OFFLINE: _ClassVar[Status.State]
    STATE_UNSPECIFIED: Status.State
    ONLINE: Status.State
    OFFLINE: Status.State
    STATE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    state: Status.State
    at: _timestamp_pb2.Timestamp
    agent_version: str
    def __init__(self, state: _Optional[_Union[Status.State, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent_version: _Optional[str] = ...) -> None: ...
