"""Every DeviceService method against a real agent, over the Unix socket."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator

import cv2
import grpc
import pytest

from agent.daemon import Agent
from agent.device_api import AgentHost, DeviceServer
from agent.sources.synthetic import SurfaceGenerator
from protos import device_pb2 as pb
from protos import device_pb2_grpc
from tests.device_api.conftest import jpeg

Stub = device_pb2_grpc.DeviceServiceStub


def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    assert isinstance(call, grpc.RpcError)
    return call.code(), call.details()  # type: ignore[attr-defined]


def test_the_socket_is_owner_and_group_only(server: DeviceServer) -> None:
    assert stat.S_ISSOCK(server.socket_path.stat().st_mode)
    assert stat.S_IMODE(server.socket_path.stat().st_mode) == 0o660


def test_run_workflow_returns_the_decision_and_the_whole_result(stub: Stub, agent: Agent) -> None:
    run = stub.RunWorkflow(
        pb.RunWorkflowRequest(workflow_id="echo", input_json='{"n": 12}', include_result_json=True)
    )
    assert (run.workflow_id, run.workflow_version, run.status, run.decision) == (
        "echo",
        2,
        "succeeded",
        "reject",
    )
    result = json.loads(run.result_json)
    assert result["run_id"] == run.run_id
    assert result["outputs"]["gate"]["threshold"] == 10
    service = agent.service("echo")
    assert service is not None
    assert service.stats.runs == 1  # counted with the agent's own runs


def test_run_workflow_sends_the_whole_result_only_when_asked(stub: Stub) -> None:
    run = stub.RunWorkflow(pb.RunWorkflowRequest(workflow_id="echo", input_json='{"n": 12}'))
    assert (run.status, run.decision, run.result_json) == ("succeeded", "reject", "")
    assert run.run_id
    assert run.duration_ms > 0


def test_run_workflow_inspects_a_camera_frame_with_the_reference_model(stub: Stub) -> None:
    sample = SurfaceGenerator(4321).sample(0)
    ok, frame = cv2.imencode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    run = stub.RunWorkflow(
        pb.RunWorkflowRequest(
            workflow_id="surface_inspection", image=frame.tobytes(), include_result_json=True
        )
    )
    assert run.status == "succeeded", run.error
    assert run.decision in {"accept", "reject"}
    assert 0.0 <= json.loads(run.result_json)["outputs"]["gate"]["score"] <= 1.0


@pytest.mark.parametrize(
    ("request_fields", "code", "field"),
    [
        ({"workflow_id": "echo", "input_json": "{not json"}, grpc.StatusCode.INVALID_ARGUMENT, "input_json"),
        ({"workflow_id": "echo", "input_json": "[1, 2]"}, grpc.StatusCode.INVALID_ARGUMENT, "input_json"),
        (
            {"workflow_id": "echo", "input_json": '{"nodes": {}}'},
            grpc.StatusCode.INVALID_ARGUMENT,
            "input_json",
        ),
        (
            {"workflow_id": "surface_inspection", "image": b"GIF89a..."},
            grpc.StatusCode.INVALID_ARGUMENT,
            "image",
        ),
        (
            {"workflow_id": "surface_inspection", "image": b"\x00" * 32},
            grpc.StatusCode.INVALID_ARGUMENT,
            "image",
        ),
        ({"workflow_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "workflow_id"),
        ({"workflow_id": "nope", "input_json": "{}"}, grpc.StatusCode.NOT_FOUND, "nope"),
        ({"workflow_id": "nope", "image": jpeg()}, grpc.StatusCode.NOT_FOUND, "nope"),
    ],
)
def test_bad_requests_get_the_status_code_naming_the_field(
    stub: Stub, request_fields: dict[str, object], code: grpc.StatusCode, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.RunWorkflow(pb.RunWorkflowRequest(**request_fields))  # type: ignore[arg-type]
    got_code, details = code_of(caught.value)
    assert got_code == code
    assert field in details


def test_a_message_past_the_limit_is_resource_exhausted(stub: Stub, server: DeviceServer) -> None:
    too_big = b"\xff\xd8\xff" + b"\x00" * server.settings.max_message_bytes
    with pytest.raises(grpc.RpcError) as caught:
        stub.RunWorkflow(pb.RunWorkflowRequest(workflow_id="surface_inspection", image=too_big))
    assert code_of(caught.value)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    # the server is fine afterwards
    assert (
        stub.RunWorkflow(pb.RunWorkflowRequest(workflow_id="echo", input_json='{"n": 1}')).decision
        == "accept"
    )


def test_status_lists_versions_health_backend_profile_and_queues(stub: Stub) -> None:
    status = stub.GetStatus(pb.GetStatusRequest())
    assert status.device_id == "line1-cam1"
    assert status.agent_version
    assert status.health == "serving"
    assert status.profile == "x86-cpu"
    assert list(status.backends) == ["onnxruntime-cpu"]
    assert status.uptime_s >= 0
    assert {(q.workflow_id, q.capacity) for q in status.queues} == {("echo", 8), ("surface_inspection", 8)}
    assert {(w.workflow_id, w.version) for w in status.workflows} == {("echo", 2), ("surface_inspection", 1)}


def test_list_workflows_and_models(stub: Stub) -> None:
    workflows = {w.workflow_id: w for w in stub.ListWorkflows(pb.ListWorkflowsRequest()).workflows}
    assert set(workflows) == {"echo", "surface_inspection"}
    assert list(workflows["surface_inspection"].models) == ["surface_inspection"]
    assert list(workflows["surface_inspection"].threshold_sets) == ["surface"]
    assert workflows["echo"].nodes == 2
    (model,) = stub.ListModels(pb.ListModelsRequest()).models
    assert (model.model_id, model.version, model.backend) == ("surface_inspection", "1", "onnxruntime-cpu")
    assert model.sha256 == "d2e492fb54a9f8fb40a4a2df998ce750e0257281eb93899b4f8554a7932f795e"


def watch(stub: Stub, request: pb.WatchEventsRequest) -> Iterator[pb.WatchEventsResponse]:
    """A subscribed WatchEvents stream (returns once the server has subscribed it)."""
    call = stub.WatchEvents(request)
    call.initial_metadata()  # sent by the server once subscribed
    return call  # type: ignore[no-any-return]


def test_watch_events_streams_the_decisions_its_filter_asks_for(stub: Stub) -> None:
    events = watch(stub, pb.WatchEventsRequest(workflow_ids=["echo"], decisions=["reject"]))
    runs = [
        stub.RunWorkflow(pb.RunWorkflowRequest(workflow_id="echo", input_json=json.dumps({"n": n})))
        for n in (5, 20, 1, 30)
    ]
    first, second = next(events), next(events)
    assert [(r.event.kind, r.event.run_id, r.event.decision, r.missed) for r in (first, second)] == [
        ("decision", runs[1].run_id, "reject", 0),
        ("decision", runs[3].run_id, "reject", 0),
    ]
    assert second.event.seq > first.event.seq
    events.cancel()  # type: ignore[attr-defined]


def test_set_threshold_changes_the_next_run_and_is_recorded(
    stub: Stub, agent: Agent, host: AgentHost
) -> None:
    overrides = watch(stub, pb.WatchEventsRequest(kinds=["threshold_override"]))
    before = stub.RunWorkflow(pb.RunWorkflowRequest(workflow_id="echo", input_json='{"n": 12}'))
    assert before.decision == "reject"
    reply = stub.SetThreshold(
        pb.SetThresholdRequest(
            threshold_set="echo", key="default", value=15, reason="glare on line 1", actor="ana"
        )
    )
    assert (reply.override.version, reply.override.previous, reply.override.had_previous) == (2, 10, True)
    assert dict(reply.values) == {"default": 15}
    after = stub.RunWorkflow(pb.RunWorkflowRequest(workflow_id="echo", input_json='{"n": 12}'))
    assert after.decision == "accept"
    live = agent.thresholds.get("echo")
    assert live is not None
    assert live.version == 2
    (recorded,) = host.overrides.entries()
    assert (recorded.id, recorded.value, recorded.actor, recorded.reason) == (
        reply.override.id,
        15,
        "ana",
        "glare on line 1",
    )
    assert recorded.origin.startswith("unix:")
    assert not recorded.reported
    event = next(overrides).event
    assert event.kind == "threshold_override"
    assert json.loads(event.payload_json)["id"] == reply.override.id
    overrides.cancel()  # type: ignore[attr-defined]


def test_a_threshold_set_no_workflow_reads_is_not_found(stub: Stub, agent: Agent) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.SetThreshold(pb.SetThresholdRequest(threshold_set="ecko", key="default", value=1))
    assert code_of(caught.value)[0] == grpc.StatusCode.NOT_FOUND
    assert agent.thresholds.get("ecko") is None
    # a set read by a workflow but with only inline defaults so far can be overridden
    reply = stub.SetThreshold(pb.SetThresholdRequest(threshold_set="surface", key="default", value=0.6))
    assert (reply.override.version, reply.override.had_previous) == (1, False)


@pytest.mark.parametrize(("key", "value", "field"), [("", 1.0, "key"), ("default", float("nan"), "value")])
def test_a_bad_threshold_is_invalid_naming_the_field(stub: Stub, key: str, value: float, field: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.SetThreshold(pb.SetThresholdRequest(threshold_set="echo", key=key, value=value))
    got_code, details = code_of(caught.value)
    assert got_code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(field)
