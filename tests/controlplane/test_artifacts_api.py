"""Models, workflows and threshold sets through the API: streamed uploads, signed manifests a
device can verify, resumable downloads, and bad input that leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import pytest

from agent.manifest import load_public_key, verify_artifact, verify_digest, verify_manifest
from controlplane.settings import ControlPlaneSettings
from tests.controlplane.live import LiveControlPlane, live_control_plane

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "surface_inspection_v1.onnx"
PRICING = REPO / "examples" / "models" / "pricing_model_v3.onnx"
WORKFLOW = REPO / "examples" / "workflows" / "surface_inspection.json"


def push(live: LiveControlPlane, name: str, path: Path, **params: str | int) -> dict:  # type: ignore[type-arg]
    response = live.admin().post(f"/api/v1/models/{name}/versions", params=params, content=path.read_bytes())
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def stored_blobs(live: LiveControlPlane) -> list[Path]:
    root = live.settings.artifacts_dir
    return [p for p in root.rglob("*") if p.is_file()]


def test_upload_reads_onnx_metadata_and_signs_a_manifest(
    control_plane: LiveControlPlane, tmp_path: Path
) -> None:
    model = push(control_plane, "surface_inspection", MODEL, description="v1 reference")
    digest = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert model["sha256"] == digest
    assert model["size"] == MODEL.stat().st_size
    assert model["version"] == 1
    assert [t["name"] for t in model["onnx"]["inputs"]] == ["image"]
    assert model["onnx"]["inputs"][0]["shape"] == ["batch", 3, 224, 224]
    assert model["onnx"]["opset"]["ai.onnx"] >= 13

    _, credential = control_plane.enroll("cam-1")
    device = control_plane.client(credential)
    me = device.get("/api/v1/device/self").json()
    key = load_public_key(me["signing_public_key"])
    signed = device.get("/api/v1/models/surface_inspection/versions/1/manifest").content
    manifest = verify_manifest(signed, key)
    assert (manifest.kind, manifest.name, manifest.version, manifest.sha256) == (
        "model",
        "surface_inspection",
        1,
        digest,
    )
    content = device.get(model["download_url"].removeprefix(control_plane.url))
    assert content.status_code == 200
    target = tmp_path / "model.onnx"
    target.write_bytes(content.content)
    verify_artifact(manifest, target)


def test_download_resumes_with_range(control_plane: LiveControlPlane) -> None:
    push(control_plane, "m", MODEL)
    data = MODEL.read_bytes()
    client = control_plane.admin()
    url = "/api/v1/models/m/versions/1/content"
    head = client.get(url, headers={"Range": "bytes=0-999"})
    assert head.status_code == 206
    assert head.content == data[:1000]
    rest = client.get(url, headers={"Range": "bytes=1000-"})
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    assert head.content + rest.content == data
    unsatisfiable = client.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
    assert unsatisfiable.status_code == 416


def test_versions_are_immutable_and_go_up(control_plane: LiveControlPlane) -> None:
    assert push(control_plane, "m", MODEL)["version"] == 1
    assert push(control_plane, "m", PRICING, version=5)["version"] == 5
    older = control_plane.admin().post(
        "/api/v1/models/m/versions", params={"version": 3}, content=MODEL.read_bytes()
    )
    assert older.status_code == 409
    assert "immutable" in older.json()["detail"]
    assert push(control_plane, "m", MODEL)["version"] == 6
    listed = control_plane.admin().get("/api/v1/models", params={"name": "m"}).json()["items"]
    assert [m["version"] for m in listed] == [1, 5, 6]
    # Same bytes under two versions: stored once.
    assert len([p for p in stored_blobs(control_plane) if "sha256" in p.parts]) == 2


def test_a_digest_mismatch_keeps_nothing(control_plane: LiveControlPlane) -> None:
    response = control_plane.admin().post(
        "/api/v1/models/m/versions", params={"sha256": "0" * 64}, content=MODEL.read_bytes()
    )
    assert response.status_code == 422
    assert "sha256" in response.json()["detail"]
    assert stored_blobs(control_plane) == []
    assert control_plane.admin().get("/api/v1/models").json()["items"] == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10, "not an ONNX model"),
        (b"name,price\nwidget,3\n", "not an ONNX model"),
        (MODEL.read_bytes()[:5000], "truncated"),
    ],
    ids=["png", "csv", "truncated-onnx"],
)
def test_files_that_are_not_onnx_are_refused(
    control_plane: LiveControlPlane, body: bytes, fragment: str
) -> None:
    response = control_plane.admin().post("/api/v1/models/m/versions", content=body)
    assert response.status_code == 415
    detail = response.json()["detail"]
    assert fragment in detail
    assert str(control_plane.settings.data_dir) not in detail  # no server paths in errors
    assert stored_blobs(control_plane) == []


def test_an_empty_upload_is_refused(control_plane: LiveControlPlane) -> None:
    response = control_plane.admin().post("/api/v1/models/m/versions", content=b"")
    assert response.status_code == 400
    assert stored_blobs(control_plane) == []


def test_an_interrupted_upload_keeps_nothing(sqlite_control_plane: LiveControlPlane) -> None:
    live = sqlite_control_plane
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            (
                "POST /api/v1/models/m/versions HTTP/1.1\r\n"
                f"Host: {host}\r\nAuthorization: Bearer {live.admin_token}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n"
            ).encode()
            + MODEL.read_bytes()[:200_000]
        )
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while stored_blobs(live) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored_blobs(live) == []
    assert live.admin().get("/api/v1/models").json()["items"] == []
    assert live.admin().get("/healthz").status_code == 200


def test_upload_size_limit(tmp_path: Path) -> None:
    settings = ControlPlaneSettings(data_dir=tmp_path / "cp", max_model_bytes=100_000)
    with live_control_plane(settings) as live:
        response = live.admin().post("/api/v1/models/m/versions", content=MODEL.read_bytes())
        assert response.status_code == 413
        assert stored_blobs(live) == []


def test_json_body_size_limit(tmp_path: Path) -> None:
    settings = ControlPlaneSettings(data_dir=tmp_path / "cp", max_body_bytes=10_000)
    with live_control_plane(settings) as live:
        big = {"values": {f"class{i}": 0.5 for i in range(2000)}}
        response = live.admin().post("/api/v1/thresholds/t/versions", json=big)
        assert response.status_code == 413
        assert response.headers["content-type"].startswith("application/problem+json")

        def chunks():  # type: ignore[no-untyped-def]
            yield json.dumps(big).encode()

        chunked = live.admin().post(
            "/api/v1/thresholds/t/versions", content=chunks(), headers={"content-type": "application/json"}
        )
        assert chunked.status_code == 413
        assert live.admin().get("/api/v1/thresholds").json()["items"] == []


@pytest.mark.parametrize("name", ["..", ".hidden", "a%2Fb", "x" * 129])
def test_names_cannot_traverse(sqlite_control_plane: LiveControlPlane, name: str) -> None:
    response = sqlite_control_plane.admin().post(
        f"/api/v1/models/{name}/versions", content=MODEL.read_bytes()
    )
    assert response.status_code in (404, 422)
    assert stored_blobs(sqlite_control_plane) == []


def test_workflow_upload_is_compiled_against_the_registry(control_plane: LiveControlPlane) -> None:
    admin = control_plane.admin()
    graph = WORKFLOW.read_text()
    missing = admin.post("/api/v1/workflows", content=graph, headers={"content-type": "application/json"})
    assert missing.status_code == 422
    errors = missing.json()["errors"]
    assert any(e["field"] == "config.model_id" and "control plane" in e["message"] for e in errors)

    push(control_plane, "surface_inspection", MODEL)
    stored = admin.post("/api/v1/workflows", content=graph, headers={"content-type": "application/json"})
    assert stored.status_code == 201, stored.text
    body = stored.json()
    assert body["models"] == [{"name": "surface_inspection", "version": 1}]
    again = admin.post("/api/v1/workflows", content=graph, headers={"content-type": "application/json"})
    assert again.status_code == 409

    _, credential = control_plane.enroll("cam-1")
    device = control_plane.client(credential)
    key = load_public_key(device.get("/api/v1/device/self").json()["signing_public_key"])
    name, version = body["name"], body["version"]
    manifest = verify_manifest(
        device.get(f"/api/v1/workflows/{name}/versions/{version}/manifest").content, key
    )
    content = device.get(f"/api/v1/workflows/{name}/versions/{version}/content").content
    verify_digest(manifest, hashlib.sha256(content).hexdigest(), len(content))
    assert json.loads(content)["id"] == name


def test_workflow_errors_name_node_and_field(control_plane: LiveControlPlane) -> None:
    push(control_plane, "pricing_model_v3", PRICING)
    graph = """
id: broken
nodes:
  - {id: a, type: condition, config: {conditions: [{when: "$.x >", then: b}]}}
  - {id: b, type: model_inference, config: {model_id: pricing_model_v3, input_mapping: {nope: "$.x"}}}
  - {id: c, type: no_such_type}
edges:
  - {source: a, target: b}
  - {source: b, target: a}
"""
    response = control_plane.admin().post(
        "/api/v1/workflows/validate", content=graph, headers={"content-type": "application/yaml"}
    )
    assert response.status_code == 422
    problems = {(e["node"], e["field"], e["code"]) for e in response.json()["errors"]}
    assert ("c", "type", "unknown_type") in problems
    assert any(node == "b" and field == "config.input_mapping" for node, field, _ in problems)
    assert any(code == "cycle" for _, _, code in problems)


def test_workflow_documents_that_do_not_parse(control_plane: LiveControlPlane) -> None:
    admin = control_plane.admin()
    bad_json = admin.post(
        "/api/v1/workflows", content='{"id": "x",\n "nodes": [}', headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert bad_json.json()["line"] == 2
    not_utf8 = admin.post(
        "/api/v1/workflows", content=b"\xff\xfe\x00", headers={"content-type": "application/json"}
    )
    assert not_utf8.status_code == 400
    a_list = admin.post("/api/v1/workflows", content="[1, 2]", headers={"content-type": "application/json"})
    assert a_list.status_code == 422


def test_brief_workflow_with_its_schema(control_plane: LiveControlPlane) -> None:
    push(control_plane, "pricing_model_v3", PRICING)
    graph = (REPO / "examples" / "workflows" / "order_processing.json").read_text()
    response = control_plane.admin().post(
        "/api/v1/workflows", content=graph, headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["version"] == 3  # the document's own version is kept


def test_threshold_sets_and_assignments(control_plane: LiveControlPlane) -> None:
    admin = control_plane.admin()
    control_plane.enroll("cam-1")
    admin.post("/api/v1/groups", json={"name": "line3", "selector": {}})
    created = admin.post(
        "/api/v1/thresholds/surface/versions", json={"values": {"default": 0.5, "scratch": 0.4}}
    )
    assert created.status_code == 201
    assert created.json()["version"] == 1
    nan = admin.post(
        "/api/v1/thresholds/surface/versions",
        content='{"values": {"default": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422
    assign = admin.put("/api/v1/thresholds/surface/assignments/group/line3", json={"version": 1})
    assert assign.status_code == 200
    assert (
        admin.put("/api/v1/thresholds/surface/assignments/group/nope", json={"version": 1}).status_code == 404
    )
    assert (
        admin.put("/api/v1/thresholds/surface/assignments/device/cam-1", json={"version": 9}).status_code
        == 404
    )
    listed = admin.get("/api/v1/thresholds/surface/assignments").json()["items"]
    assert [(a["target_kind"], a["target"], a["version"]) for a in listed] == [("group", "line3", 1)]
    content = admin.get("/api/v1/thresholds/surface/versions/1/content").json()
    assert content == {"name": "surface", "version": 1, "values": {"default": 0.5, "scratch": 0.4}}


def test_problem_documents(sqlite_control_plane: LiveControlPlane) -> None:
    admin = sqlite_control_plane.admin()
    wrong_type = admin.post("/api/v1/groups", json={"name": "g", "selector": {"line": 3}})
    assert wrong_type.status_code == 422
    problem = wrong_type.json()
    assert wrong_type.headers["content-type"] == "application/problem+json"
    assert {"type", "title", "status", "detail", "errors"} <= set(problem)
    assert problem["errors"][0]["field"] == "body.selector.line"
    garbage = admin.post("/api/v1/groups", content=b"{not json", headers={"content-type": "application/json"})
    assert garbage.status_code == 422
    not_found = admin.get("/api/v1/models/nope/versions/1")
    assert not_found.status_code == 404
    assert "nope" in not_found.json()["detail"]
