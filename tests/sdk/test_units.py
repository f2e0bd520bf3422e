"""Pure units of the SDK: endpoint forms, results as mappings, problem responses, the public API."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

import httpx
import pytest

import edgefleet
from edgefleet import (
    AmbiguousOutput,
    EdgefleetError,
    FailedPrecondition,
    InvalidArgument,
    InvalidEndpoint,
    NotFound,
    ResourceExhausted,
    ServerError,
    WorkflowResult,
    parse_endpoint,
)
from edgefleet._controlplane import problem_error


@pytest.mark.parametrize(
    ("text", "kind", "transport", "target"),
    [
        ("unix:///var/lib/edgefleet/device.sock", "device", "unix", "unix:/var/lib/edgefleet/device.sock"),
        ("unix:/run/device.sock", "device", "unix", "unix:/run/device.sock"),
        ("unix:data/device.sock", "device", "unix", "unix:data/device.sock"),
        ("grpcs://line1-cam1.local:50051", "device", "tls", "line1-cam1.local:50051"),
        ("10.0.0.5:50051", "device", "tls", "10.0.0.5:50051"),
        ("[::1]:50051", "device", "tls", "[::1]:50051"),
        ("https://cp.example:8080/", "control_plane", "http", "https://cp.example:8080"),
        ("http://127.0.0.1:8080", "control_plane", "http", "http://127.0.0.1:8080"),
    ],
)
def test_endpoint_forms(text: str, kind: str, transport: str, target: str) -> None:
    endpoint = parse_endpoint(text)
    assert (endpoint.kind, endpoint.transport, endpoint.target) == (kind, transport, target)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("grpc://10.0.0.5:50051", "only with TLS"),
        ("unix://relative/device.sock", "absolute path"),
        ("unix:", "no socket path"),
        ("https://", "no host"),
        ("10.0.0.5", "none of"),
        ("10.0.0.5:99999", "none of"),
        ("ftp://x:21", "none of"),
    ],
)
def test_endpoints_of_no_known_form_are_refused(text: str, says: str) -> None:
    with pytest.raises(InvalidEndpoint, match=says):
        edgefleet.WorkflowClient(text)
    assert issubclass(InvalidEndpoint, ValueError)


def result(outputs: dict[str, Any], status: str = "succeeded") -> WorkflowResult:
    return WorkflowResult.from_dict(
        {
            "run_id": "r1",
            "workflow": {"id": "w", "version": 2},
            "status": status,
            "duration_ms": 1.5,
            "outputs": outputs,
            "nodes": {},
            "error": None if status == "succeeded" else {"node": "a", "kind": "error", "message": "boom"},
        }
    )


def test_a_result_maps_output_fields_and_refuses_ambiguous_ones() -> None:
    run = result(
        {
            "score": {"score": 0.7, "label": "scratch"},
            "gate": {"score": 0.7, "decision": "reject", "threshold": 0.5},
            "note": {"label": "dent"},
            "raw": [1, 2, 3],
        }
    )
    assert run["score"] == 0.7  # the same value from two nodes is not ambiguous
    assert dict(run) == {"score": 0.7, "decision": "reject", "threshold": 0.5}
    assert "label" not in run
    with pytest.raises(AmbiguousOutput, match="score, note") as caught:
        run["label"]
    assert isinstance(caught.value, KeyError)
    assert caught.value.nodes == ("score", "note")
    assert run.output("note") == {"label": "dent"}
    assert run.output("raw") == [1, 2, 3]
    with pytest.raises(KeyError, match="no output"):
        run.output("missing")
    assert run.decision == "reject"
    assert (run.workflow_id, run.workflow_version, run.duration_ms) == ("w", 2, 1.5)


def test_a_failed_result_has_its_error_and_no_decision() -> None:
    failed = result({"gate": {"decision": "accept"}}, status="failed")
    assert not failed.succeeded
    assert failed.decision is None
    assert failed.error is not None
    assert (failed.error.node, failed.error.message) == ("a", "boom")


def problem(status: int, body: Any = None, text: str = "") -> EdgefleetError:
    request = httpx.Request("POST", "http://cp/api/v1/workflows/w/runs")
    response = (
        httpx.Response(status, json=body, request=request)
        if body is not None
        else httpx.Response(status, text=text, request=request)
    )
    return problem_error(response, endpoint="control plane at http://cp", what="dry run of workflow 'w'")


def test_problem_responses_map_to_errors_naming_the_field() -> None:
    invalid = problem(
        422,
        {
            "type": "https://edgefleet.dev/problems/validation",
            "status": 422,
            "detail": "invalid request: body.input: Field required",
            "errors": [{"field": "body.input", "message": "Field required"}],
        },
    )
    assert isinstance(invalid, InvalidArgument)
    assert invalid.field == "input_data"
    assert str(invalid) == (
        "control plane at http://cp: dry run of workflow 'w': invalid request: body.input: Field required"
        " [HTTP 422]"
    )
    assert isinstance(problem(404, {"detail": "workflow 'w' does not exist"}), NotFound)
    assert isinstance(problem(409, {"detail": "model file missing"}), FailedPrecondition)
    assert isinstance(problem(429, {"title": "Too Many Requests"}), ResourceExhausted)
    gateway = problem(500, text="<html>\nboom")
    assert isinstance(gateway, ServerError)
    assert "<html>" in gateway.detail
    assert type(problem(418, {"detail": "teapot"})) is EdgefleetError


def test_the_public_api_is_what_all_lists() -> None:
    public = {
        name
        for name, value in vars(edgefleet).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(edgefleet.__all__)
    for name in edgefleet.__all__:
        assert hasattr(edgefleet, name), name


def test_importing_the_sdk_loads_neither_transport_nor_the_agent() -> None:
    code = (
        "import sys, edgefleet\n"
        "loaded = {'grpc', 'httpx', 'agent', 'controlplane', 'numpy'} & set(sys.modules)\n"
        "print(sorted(loaded))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
