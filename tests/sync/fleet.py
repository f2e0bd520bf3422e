"""Helpers of the sync tests: releases on a live control plane, desired states built from them,
an agent runtime to reconcile into, and an HTTP transport that records what the agent fetched."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.config import load_settings
from agent.daemon import Agent
from agent.manifest import Manifest, load_public_key
from protos import sync_pb2
from tests.controlplane.live import LiveControlPlane

REPO = Path(__file__).resolve().parents[2]
MODEL_V1 = REPO / "models" / "surface_inspection_v1.onnx"
MODEL_V0 = REPO / "models" / "surface_inspection_v0.onnx"
WORKFLOW = REPO / "examples" / "workflows" / "surface_inspection.json"
WORKFLOW_ID = "surface_inspection"
PATHS = {"model": "models", "workflow": "workflows", "thresholds": "thresholds"}


class RecordingTransport(httpx.BaseTransport):
    """A real HTTP transport that records (path, Range header, status) of every request."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[tuple[str, str | None, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.requests.append((request.url.path, request.headers.get("range"), response.status_code))
        return response

    def close(self) -> None:
        self.inner.close()


@dataclass
class Fleet:
    """A live control plane with one enrolled device."""

    cp: LiveControlPlane
    device_id: str
    credential: str
    public_key: Ed25519PublicKey
    public_key_pem: str
    admin: httpx.Client

    @classmethod
    def enroll(cls, cp: LiveControlPlane, device_id: str = "cam-1") -> Fleet:
        token = cp.admin().post("/api/v1/enrollment-tokens", json={})
        assert token.status_code == 201, token.text
        enrolled = cp.client().post(
            "/api/v1/enroll", json={"token": token.json()["token"], "device_id": device_id}
        )
        assert enrolled.status_code == 201, enrolled.text
        data = enrolled.json()
        pem = data["signing_public_key"]
        return cls(cp, data["device_id"], data["credential"], load_public_key(pem), pem, cp.admin())

    def upload_model(self, path: Path, version: int | None = None, name: str = WORKFLOW_ID) -> dict[str, Any]:
        params = {} if version is None else {"version": version}
        response = self.admin.post(
            f"/api/v1/models/{name}/versions", params=params, content=path.read_bytes()
        )
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def upload_workflow(self, document: dict[str, Any]) -> dict[str, Any]:
        response = self.admin.post(
            "/api/v1/workflows", content=json.dumps(document), headers={"content-type": "application/json"}
        )
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def upload_thresholds(self, name: str, values: dict[str, float]) -> dict[str, Any]:
        response = self.admin.post(f"/api/v1/thresholds/{name}/versions", json={"values": values})
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def release_surface_inspection(self) -> None:
        """Model v1, the inspection workflow v1 and threshold set ``surface`` v1."""
        self.upload_model(MODEL_V1)
        self.upload_workflow(json.loads(WORKFLOW.read_text()))
        self.upload_thresholds("surface", {"default": 0.535})

    def ref(self, kind: str, name: str, version: int) -> sync_pb2.ArtifactRef:
        """The artifact as the control plane's desired state carries it: absolute content URL and
        the signed manifest exactly as served by ``…/manifest``."""
        path = f"/api/v1/{PATHS[kind]}/{name}/versions/{version}"
        signed = self.admin.get(f"{path}/manifest")
        assert signed.status_code == 200, signed.text
        manifest = signed.json()["manifest"]
        return sync_pb2.ArtifactRef(
            kind=kind,
            name=name,
            version=version,
            sha256=manifest["sha256"],
            size=manifest["size"],
            url=f"{self.cp.url}{path}/content",
            signed_manifest=signed.content,
        )

    def signed(self, manifest: Manifest) -> bytes:
        """A manifest signed with the control plane's own key."""
        return self.cp.services.signer.sign(manifest).to_json()

    def desired(
        self,
        generation: int,
        *,
        model_version: int = 1,
        threshold_version: int | None = 1,
        extra: Iterable[sync_pb2.WorkflowAssignment] = (),
        edit: Callable[[sync_pb2.WorkflowAssignment], None] | None = None,
    ) -> sync_pb2.DesiredState:
        assignment = sync_pb2.WorkflowAssignment(
            workflow=self.ref("workflow", WORKFLOW_ID, 1),
            models=[self.ref("model", WORKFLOW_ID, model_version)],
            threshold_sets=[]
            if threshold_version is None
            else [self.ref("thresholds", "surface", threshold_version)],
        )
        if edit is not None:
            edit(assignment)
        state = sync_pb2.DesiredState(device_id=self.device_id, generation=generation)
        state.issued_at.GetCurrentTime()
        state.workflows.append(assignment)
        state.workflows.extend(extra)
        return state


def tamper_signature(signed_manifest: bytes) -> bytes:
    """The same manifest with one byte of its signature flipped."""
    data = json.loads(signed_manifest)
    raw = bytearray(base64.b64decode(data["signature"]))
    raw[10] ^= 0x01
    data["signature"] = base64.b64encode(bytes(raw)).decode()
    return json.dumps(data).encode()


def expired_manifest(ref: sync_pb2.ArtifactRef) -> Manifest:
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    return Manifest.parse(
        {
            "kind": ref.kind,
            "name": ref.name,
            "version": ref.version,
            "sha256": ref.sha256,
            "size": ref.size,
            "created": created,
            "expires": created + timedelta(days=1),
        }
    )


@dataclass
class Agents:
    """Agent runtimes of a test, stopped at its end."""

    root: Path
    started: list[Agent] = field(default_factory=list)

    def start(self, *, fps: float = 30.0, sync: dict[str, Any] | None = None, **extra: Any) -> Agent:
        settings = load_settings(
            None,
            device_id="cam-1",
            data_dir=self.root / "agent",
            profile="x86-cpu",
            results_jsonl=self.root / "results.jsonl",
            workflows=[
                {
                    "workflow": WORKFLOW_ID,
                    "workers": 1,
                    "queue": {"size": 4, "policy": "drop_oldest"},
                    "sources": [{"type": "synthetic", "fps": fps, "seed": 7}],
                }
            ],
            sync=sync,
            **extra,
        )
        agent = Agent(settings)
        self.started.append(agent)
        agent.start()
        return agent

    def stop(self, agent: Agent) -> None:
        self.started.remove(agent)
        agent.stop()

    def stop_all(self) -> None:
        for agent in list(self.started):
            self.stop(agent)

    def results(self) -> Iterator[dict[str, Any]]:
        path = self.root / "results.jsonl"
        if not path.exists():
            return
        for line in path.read_text().splitlines():
            try:
                yield json.loads(line)
            except ValueError:  # a line being written
                continue


def wait_for(condition: Callable[[], object], timeout: float = 10.0, poll: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(poll)


def frames_keep_flowing(agent: Agent, workflow_id: str = WORKFLOW_ID, frames: int = 3) -> bool:
    """The workflow still runs frames: ``frames`` more within 10 s."""
    service = agent.service(workflow_id)
    assert service is not None
    before = service.stats.runs
    wait_for(lambda: service.stats.runs >= before + frames)
    return True


@pytest.fixture
def fleet(sqlite_control_plane: LiveControlPlane) -> Fleet:
    """A device enrolled on the live control plane, with the surface-inspection release."""
    fleet = Fleet.enroll(sqlite_control_plane)
    fleet.release_surface_inspection()
    return fleet


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    """Agents started by the test, all stopped after it."""
    agents = Agents(tmp_path)
    try:
        yield agents
    finally:
        agents.stop_all()
