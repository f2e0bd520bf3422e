"""Dry runs: a stored workflow version run on the control plane on sample inputs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2

from agent.sources.synthetic import SurfaceGenerator
from tests.controlplane.live import LiveControlPlane

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "surface_inspection_v1.onnx"
WORKFLOW = REPO / "examples" / "workflows" / "surface_inspection.json"


def frame_b64(defective: bool) -> str:
    generator = SurfaceGenerator(seed=4321)
    sample = next(s for s in (generator.sample(i) for i in range(50)) if s.defective == defective)
    ok, jpeg = cv2.imencode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return base64.b64encode(jpeg.tobytes()).decode()


def publish(cp: LiveControlPlane) -> None:
    admin = cp.admin()
    assert (
        admin.post("/api/v1/models/surface_inspection/versions", content=MODEL.read_bytes()).status_code
        == 201
    )
    workflow = admin.post(
        "/api/v1/workflows", content=WORKFLOW.read_bytes(), headers={"content-type": "application/json"}
    )
    assert workflow.status_code == 201, workflow.text


def test_a_dry_run_returns_the_devices_result_for_good_and_defective_parts(
    sqlite_control_plane: LiveControlPlane,
) -> None:
    cp = sqlite_control_plane
    publish(cp)
    operator = cp.client(cp.token("operator"))
    decisions = {}
    for defective in (False, True):
        response = operator.post(
            "/api/v1/workflows/surface_inspection/runs", json={"input": {"image": frame_b64(defective)}}
        )
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["status"] == "succeeded", result["error"]
        assert result["workflow"] == {"id": "surface_inspection", "version": 1}
        decisions[defective] = result["outputs"]["gate"]["decision"]
    assert decisions == {False: "accept", True: "reject"}


def test_bad_input_unknown_workflows_and_viewers_are_refused(sqlite_control_plane: LiveControlPlane) -> None:
    cp = sqlite_control_plane
    publish(cp)
    operator = cp.client(cp.token("operator"))
    corrupt = operator.post(
        "/api/v1/workflows/surface_inspection/runs",
        json={"input": {"image": base64.b64encode(b"\xff\xd8 not a jpeg").decode()}},
    )
    assert corrupt.status_code == 200
    failed = corrupt.json()
    assert failed["status"] == "failed"
    assert failed["error"]["node"] == "decode"
    missing = operator.post("/api/v1/workflows/nope/runs", json={"input": {}})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    old = operator.post("/api/v1/workflows/surface_inspection/runs?version=9", json={"input": {}})
    assert old.status_code == 404
    viewer = cp.client(cp.token("viewer"))
    assert viewer.post("/api/v1/workflows/surface_inspection/runs", json={"input": {}}).status_code == 403
    assert (
        json.loads(operator.post("/api/v1/workflows/surface_inspection/runs", json={}).text)["status"] == 422
    )
