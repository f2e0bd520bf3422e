"""Property-based fuzzing of every operation in the OpenAPI document (schemathesis): whatever
the input, no 5xx, and every response conforms to the documented status codes, content types
and schemas. Runs against a real server on SQLite, as an admin and as a device."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from controlplane.api.app import create_app
from controlplane.settings import ControlPlaneSettings
from tests.controlplane.live import LiveControlPlane, live_control_plane

REPO = Path(__file__).resolve().parents[2]
schema = schemathesis.openapi.from_dict(create_app(ControlPlaneSettings()).openapi())


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveControlPlane]:
    settings = ControlPlaneSettings(
        data_dir=tmp_path_factory.mktemp("fuzz"), schema_dirs=[REPO / "examples" / "schemas"]
    )
    with live_control_plane(settings) as live:
        live.enroll("cam-1", labels={"line": "3"})
        admin = live.admin()
        admin.post(
            "/api/v1/models/m/versions", content=(REPO / "models" / "surface_inspection_v1.onnx").read_bytes()
        )
        admin.post("/api/v1/groups", json={"name": "g", "selector": {"line": "3"}})
        admin.post("/api/v1/thresholds/t/versions", json={"values": {"default": 0.5}})
        yield live


@schema.parametrize()
@hypothesis.settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
    database=None,
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, fuzz_target: LiveControlPlane) -> None:
    case.call_and_validate(
        base_url=fuzz_target.url,
        headers={"Authorization": f"Bearer {fuzz_target.admin_token}"},
        timeout=30,
        # A schema-valid request can still be refused for what it means (an unknown device, a
        # version that exists): that is not a conformance failure.
        excluded_checks=[positive_data_acceptance],
    )
