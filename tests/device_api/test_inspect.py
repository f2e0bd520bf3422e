"""Inspect: frames in, results out in order, never more than the window in flight."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from agent.device_api import DeviceServer
from protos import device_pb2 as pb
from protos import device_pb2_grpc
from tests.device_api.conftest import jpeg

Stub = device_pb2_grpc.DeviceServiceStub


def test_a_thousand_frames_to_a_slow_reader_keep_at_most_the_window_in_flight(
    stub: Stub, server: DeviceServer
) -> None:
    image = jpeg()
    sent = 0

    def frames() -> Iterator[pb.InspectFrame]:
        nonlocal sent
        for n in range(1000):
            sent += 1
            yield pb.InspectFrame(
                frame_id=n,
                workflow_id="echo" if n == 0 else "",
                image=image,
                input_json=json.dumps({"n": n % 20}),
            )

    results = []
    for response in stub.Inspect(frames()):
        results.append(response)
        if len(results) % 10 == 0:
            time.sleep(0.005)  # a reader slower than the device
    assert [r.frame_id for r in results] == list(range(1000))
    assert all(r.run.status == "succeeded" for r in results)
    assert [r.run.decision for r in results[:20]] == ["accept"] * 10 + ["reject"] * 10
    assert sent == 1000
    window = server.settings.inspect_window
    assert 1 <= server.inspect_peak_in_flight <= window
    assert server.servicer.inspect_in_flight.value == 0


def test_a_frame_that_cannot_run_gets_a_problem_and_the_stream_goes_on(stub: Stub) -> None:
    frames = [
        pb.InspectFrame(frame_id=1, image=jpeg()),  # no workflow yet
        pb.InspectFrame(frame_id=2, workflow_id="echo", input_json='{"n": 3}'),
        pb.InspectFrame(frame_id=3, image=b"not an image"),
        pb.InspectFrame(frame_id=4, input_json="{bad"),
        pb.InspectFrame(frame_id=5, workflow_id="nope", input_json="{}"),
        pb.InspectFrame(frame_id=6, workflow_id="echo", input_json='{"n": 30}'),
    ]
    results = list(stub.Inspect(iter(frames)))
    summary = [(r.frame_id, r.problem.code, r.problem.field, r.run.decision) for r in results]
    assert summary == [
        (1, "INVALID_ARGUMENT", "workflow_id", ""),
        (2, "", "", "accept"),
        (3, "INVALID_ARGUMENT", "image", ""),
        (4, "INVALID_ARGUMENT", "input_json", ""),
        (5, "NOT_FOUND", "workflow_id", ""),
        (6, "", "", "reject"),
    ]


def test_the_whole_result_comes_with_the_frames_that_ask_for_it(stub: Stub) -> None:
    frames = [
        pb.InspectFrame(frame_id=n, workflow_id="echo", input_json='{"n": 12}', include_result_json=n == 1)
        for n in range(3)
    ]
    results = list(stub.Inspect(iter(frames)))
    assert [r.run.decision for r in results] == ["reject"] * 3
    assert [bool(r.run.result_json) for r in results] == [False, True, False]
    whole = json.loads(results[1].run.result_json)
    assert whole["run_id"] == results[1].run.run_id
    assert whole["outputs"]["gate"]["threshold"] == 10


def test_a_client_that_goes_away_frees_its_frames(stub: Stub, server: DeviceServer) -> None:
    release = threading.Event()

    def frames() -> Iterator[pb.InspectFrame]:
        for n in range(3):
            yield pb.InspectFrame(frame_id=n, workflow_id="echo", input_json='{"n": 1}')
        release.wait()  # keeps the stream open

    call = stub.Inspect(frames())
    assert next(call).frame_id == 0
    call.cancel()  # type: ignore[attr-defined]
    release.set()
    with pytest.raises(grpc.RpcError) as caught:
        for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
    status = stub.GetStatus(pb.GetStatusRequest())
    while status.inspect_in_flight:  # the server notices the cancel on its own threads
        time.sleep(0.01)
        status = stub.GetStatus(pb.GetStatusRequest())
    assert status.inspect_in_flight == 0
