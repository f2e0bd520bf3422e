"""The SDK against a real agent's device API on its Unix socket."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC

import pytest

from agent.device_api import DeviceServer
from edgefleet import (
    Cancelled,
    ClientClosed,
    DeviceEvent,
    Frame,
    InvalidArgument,
    NotFound,
    UnsupportedOperation,
    WorkflowClient,
    WorkflowFailed,
)
from tests.device_api.conftest import jpeg
from tests.sdk.conftest import part_jpeg


@pytest.fixture
def client(server: DeviceServer) -> Iterator[WorkflowClient]:
    with WorkflowClient(endpoint=f"unix://{server.socket_path}") as client:
        yield client


def test_a_part_frame_is_accepted_or_rejected_by_the_reference_model(client: WorkflowClient) -> None:
    decisions = {}
    for defective in (False, True):
        result = client.execute_workflow(workflow_id="surface_inspection", image=part_jpeg(defective))
        assert result.succeeded, result.error
        assert (result.workflow_id, result.workflow_version) == ("surface_inspection", 1)
        assert result.run_id
        assert result.output("gate")["decision"] == result.decision
        assert 0.0 <= result.output("gate")["score"] <= 1.0
        decisions[defective] = result.decision
    assert decisions == {False: "accept", True: "reject"}


def test_the_result_reads_as_a_dict_of_output_fields(client: WorkflowClient) -> None:
    result = client.execute_workflow("echo", {"n": 12})
    assert result.decision == "reject"
    assert result["n"] == 12
    assert result["threshold"] == 10
    assert dict(result)["decision"] == "reject"
    assert result.outputs["facts"] == {"n": 12}
    assert result.to_dict()["workflow"] == {"id": "echo", "version": 2}
    assert set(result.raw["nodes"]) == {"facts", "gate"}


def test_bad_input_is_invalid_argument_naming_the_field(client: WorkflowClient) -> None:
    with pytest.raises(InvalidArgument) as caught:
        client.execute_workflow("surface_inspection", image=b"GIF89a not a part")
    assert caught.value.field == "image"
    assert caught.value.code == "INVALID_ARGUMENT"
    assert "unix:" in str(caught.value)
    with pytest.raises(InvalidArgument) as caught:
        client.execute_workflow("echo", {"nodes": {}})
    assert caught.value.field == "input_data"
    with pytest.raises(InvalidArgument) as caught:
        client.execute_workflow("echo", {"n": object()})
    assert caught.value.field == "input_data"
    with pytest.raises(InvalidArgument) as caught:
        client.execute_workflow("")
    assert caught.value.field == "workflow_id"


def test_an_unknown_workflow_is_not_found(client: WorkflowClient) -> None:
    with pytest.raises(NotFound, match="nope") as caught:
        client.execute_workflow("nope", {})
    assert caught.value.code == "NOT_FOUND"
    assert caught.value.endpoint.startswith("device at unix:")


def test_a_run_that_fails_in_the_graph_is_a_result_unless_asked_to_raise(client: WorkflowClient) -> None:
    failed = client.execute_workflow("surface_inspection", {})  # no image: the decode node fails
    assert failed.status == "failed"
    assert failed.decision is None
    assert failed.error is not None
    assert failed.error.node == "decode"
    with pytest.raises(WorkflowFailed, match="decode") as caught:
        client.execute_workflow("surface_inspection", {}, raise_on_failure=True)
    assert caught.value.result.error is not None
    assert caught.value.result.error.node == "decode"


def test_closing_the_client_ends_its_open_streams(server: DeviceServer) -> None:
    client = WorkflowClient(endpoint=f"unix:{server.socket_path}")
    events = client.watch_events()
    client.close()
    with pytest.raises(Cancelled):
        next(events)


def test_a_version_is_for_dry_runs_only(client: WorkflowClient) -> None:
    with pytest.raises(UnsupportedOperation, match="control-plane dry run"):
        client.execute_workflow("echo", {"n": 1}, version=2)


def test_inspect_answers_200_frames_in_order_reading_them_lazily(client: WorkflowClient) -> None:
    image = jpeg()
    pulled = 0
    window = 4

    def frames() -> Iterator[Frame]:
        nonlocal pulled
        for n in range(200):
            pulled += 1
            yield Frame(image, input_data={"n": n % 20})

    received = []
    with client.inspect(frames(), "echo", window=window) as results:
        for frame in results:
            received.append(frame)
            assert pulled - len(received) <= window  # never read further ahead than the window
    assert [f.frame_id for f in received] == list(range(200))
    assert all(f.ok for f in received)
    decisions = [f.result.decision for f in received if f.result is not None]
    assert decisions[:20] == ["accept"] * 10 + ["reject"] * 10
    assert pulled == 200


def test_a_frame_that_cannot_run_gets_an_error_and_the_stream_goes_on(client: WorkflowClient) -> None:
    frames = [(10, jpeg()), (11, b"not an image"), (12, jpeg())]
    results = list(client.inspect(frames, "echo", input_data={"n": 30}))
    assert [f.frame_id for f in results] == [10, 11, 12]
    assert [f.ok for f in results] == [True, False, True]
    error = results[1].error
    assert isinstance(error, InvalidArgument)
    assert error.field == "image"
    assert results[2].result is not None
    assert results[2].result.decision == "reject"
    assert results[2].result.outputs["facts"] == {"n": 30}  # the SDK asks for the whole result


def test_an_error_of_the_callers_frames_is_raised_from_the_stream(client: WorkflowClient) -> None:
    def frames() -> Iterator[bytes]:
        yield jpeg()
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError, match="camera unplugged"):
        list(client.inspect(frames(), "echo", input_data={"n": 1}))
    with pytest.raises(TypeError, match="frame 0 is a str"):
        list(client.inspect(["not bytes"], "echo"))  # type: ignore[list-item]


def test_watch_events_sees_the_decisions_its_filter_asks_for(client: WorkflowClient) -> None:
    with client.watch_events(workflow_ids=["echo"], decisions=["reject"]) as events:
        runs = [client.execute_workflow("echo", {"n": n}) for n in (5, 20, 1, 30)]
        first, second = next(events), next(events)
    assert [(e.kind, e.run_id, e.decision, e.missed) for e in (first, second)] == [
        ("decision", runs[1].run_id, "reject", 0),
        ("decision", runs[3].run_id, "reject", 0),
    ]
    assert first.workflow_id == "echo"
    assert first.workflow_version == 2
    assert second.seq > first.seq
    assert first.time.tzinfo is UTC
    assert events.closed


def test_closing_a_watch_from_another_thread_ends_its_iteration(client: WorkflowClient) -> None:
    events = client.watch_events(kinds=["part_rejected"])
    seen: list[DeviceEvent] = []
    reader = threading.Thread(target=lambda: seen.extend(events))
    reader.start()
    events.close()
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert seen == []


def test_status_workflows_models_and_a_threshold_override(client: WorkflowClient) -> None:
    status = client.status()
    assert (status.device_id, status.health, status.serving) == ("line1-cam1", "serving", True)
    assert {w.workflow_id for w in client.list_workflows()} == {"echo", "surface_inspection"}
    (model,) = client.list_models()
    assert (model.model_id, model.version) == ("surface_inspection", "1")
    change = client.set_threshold("echo", "default", 15, reason="glare on line 1", actor="ana")
    assert (change.previous, change.value, change.version, change.actor) == (10, 15, 2, "ana")
    assert dict(change.values) == {"default": 15}
    assert client.execute_workflow("echo", {"n": 12}).decision == "accept"
    with pytest.raises(NotFound):
        client.set_threshold("ecko", "default", 1)
    with pytest.raises(InvalidArgument) as caught:
        client.set_threshold("echo", "default", float("nan"))
    assert caught.value.field == "value"


def test_a_closed_client_refuses_calls(server: DeviceServer) -> None:
    client = WorkflowClient(endpoint=f"unix:{server.socket_path}")
    assert client.execute_workflow("echo", {"n": 1}).decision == "accept"
    client.close()
    client.close()
    with pytest.raises(ClientClosed):
        client.execute_workflow("echo", {"n": 1})
    with pytest.raises(ClientClosed):
        client.status()
