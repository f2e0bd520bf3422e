"""The SDK against a live control plane: dry runs of stored workflow versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    UnsupportedOperation,
    WorkflowClient,
    WorkflowFailed,
)
from tests.controlplane.live import LiveControlPlane
from tests.sdk.conftest import part_jpeg

REPO = Path(__file__).resolve().parents[2]
SURFACE_MODEL = REPO / "models" / "surface_inspection_v1.onnx"
SURFACE = REPO / "examples" / "workflows" / "surface_inspection.json"
PRICING_MODEL = REPO / "examples" / "models" / "pricing_model_v3.onnx"
ORDER_PROCESSING = REPO / "examples" / "workflows" / "order_processing.json"


def publish(cp: LiveControlPlane, model_name: str, model: Path, workflow: Path) -> None:
    admin = cp.admin()
    uploaded = admin.post(f"/api/v1/models/{model_name}/versions", content=model.read_bytes())
    assert uploaded.status_code == 201, uploaded.text
    created = admin.post(
        "/api/v1/workflows", content=workflow.read_bytes(), headers={"content-type": "application/json"}
    )
    assert created.status_code == 201, created.text


def test_the_briefs_order_processing_gives_the_calculated_price(
    sqlite_control_plane: LiveControlPlane,
) -> None:
    cp = sqlite_control_plane
    publish(cp, "pricing_model_v3", PRICING_MODEL, ORDER_PROCESSING)
    with WorkflowClient(endpoint=cp.url, api_key=cp.token("operator")) as client:
        assert client.kind == "control_plane"
        result = client.execute_workflow(
            workflow_id="order_processing", input_data={"product": {"id": "P1001"}, "quantity": 3}
        )
        assert result.succeeded, result.error
        assert result["calculated_price"] == pytest.approx(58.5)
        assert dict(result)["calculated_price"] == pytest.approx(58.5)
        assert result.output("price_calculator")["calculated_price"] == pytest.approx(58.5)
        assert (result.workflow_id, result.workflow_version) == ("order_processing", 3)
        rejected = client.execute_workflow("order_processing", {"product": {"id": "P1001"}, "quantity": 0})
        assert rejected.status == "failed"
        assert rejected.error is not None
        assert rejected.error.node == "input_validator"
        with pytest.raises(WorkflowFailed, match="input_validator"):
            client.execute_workflow(
                "order_processing", {"product": {"id": "P1001"}, "quantity": 0}, raise_on_failure=True
            )


def test_a_dry_run_of_surface_inspection_accepts_and_rejects_parts(
    sqlite_control_plane: LiveControlPlane,
) -> None:
    cp = sqlite_control_plane
    publish(cp, "surface_inspection", SURFACE_MODEL, SURFACE)
    with WorkflowClient(endpoint=cp.url + "/", api_key=cp.token("operator")) as client:
        good = client.execute_workflow("surface_inspection", image=part_jpeg(False), version=1)
        bad = client.execute_workflow("surface_inspection", image=part_jpeg(True))
    assert (good.decision, bad.decision) == ("accept", "reject")
    assert good.output("gate")["decision"] == "accept"
    assert [e.get("type") for e in bad.events] == ["part_rejected"]


def test_refusals_map_to_the_sdks_errors(sqlite_control_plane: LiveControlPlane) -> None:
    cp = sqlite_control_plane
    publish(cp, "surface_inspection", SURFACE_MODEL, SURFACE)
    with WorkflowClient(cp.url, api_key=cp.token("operator")) as client:
        with pytest.raises(NotFound, match="nope") as missing:
            client.execute_workflow("nope", {})
        assert missing.value.code == "HTTP 404"
        assert f"control plane at {cp.url}" in str(missing.value)
        with pytest.raises(NotFound):
            client.execute_workflow("surface_inspection", {}, version=9)
        with pytest.raises(InvalidArgument) as invalid:
            client.execute_workflow("surface_inspection", {"x": float("nan")})
        assert invalid.value.field == "input_data"
        with pytest.raises(UnsupportedOperation, match="needs a device endpoint"):
            client.status()
        with pytest.raises(UnsupportedOperation, match="control plane"):
            client.inspect([b""], "surface_inspection")
        with pytest.raises(UnsupportedOperation):
            client.watch_events()
    with WorkflowClient(cp.url, api_key="not-a-token") as stranger, pytest.raises(Unauthenticated):
        stranger.execute_workflow("surface_inspection", {})
    with WorkflowClient(cp.url) as anonymous, pytest.raises(Unauthenticated):
        anonymous.execute_workflow("surface_inspection", {})
    with WorkflowClient(cp.url, api_key=cp.token("viewer")) as viewer, pytest.raises(PermissionDenied):
        viewer.execute_workflow("surface_inspection", {})


def test_a_version_whose_model_file_is_gone_is_a_failed_precondition(
    sqlite_control_plane: LiveControlPlane,
) -> None:
    cp = sqlite_control_plane
    publish(cp, "pricing_model_v3", PRICING_MODEL, ORDER_PROCESSING)
    for blob in (cp.settings.data_dir).rglob("*"):
        if blob.is_file() and blob.read_bytes() == PRICING_MODEL.read_bytes():
            blob.unlink()
    with WorkflowClient(cp.url, api_key=cp.token("operator")) as client, pytest.raises(FailedPrecondition):
        client.execute_workflow("order_processing", {"product": {"id": "P1001"}, "quantity": 3})


def test_an_unreachable_control_plane_is_unavailable() -> None:
    with WorkflowClient("http://127.0.0.1:9", timeout=10) as client, pytest.raises(Unavailable) as caught:
        client.execute_workflow("order_processing", {})
    assert caught.value.retryable
