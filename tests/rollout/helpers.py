"""Helpers of the rollout tests: signed bundles for assignments, and a transport that can go offline."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

from controlplane.signing import make_manifest
from protos import sync_pb2
from tests.sync.fleet import Fleet, RecordingTransport

GATE = {"warmup_frames": 2, "frames": 5, "max_errors": 0, "max_latency_ms": 30000.0}


def bundle_document(assignment: sync_pb2.WorkflowAssignment, rollout_id: str, gate: dict[str, Any]) -> bytes:
    """The canonical bundle bytes naming exactly the assignment's artifacts."""

    def ref(r: sync_pb2.ArtifactRef) -> dict[str, Any]:
        return {"name": r.name, "version": r.version, "sha256": r.sha256}

    document = {
        "rollout_id": rollout_id,
        "workflow": ref(assignment.workflow),
        "models": sorted((ref(m) for m in assignment.models), key=lambda m: m["name"]),
        "threshold_sets": sorted((ref(t) for t in assignment.threshold_sets), key=lambda t: t["name"]),
        "gate": gate,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign_bundle(fleet: Fleet, assignment: sync_pb2.WorkflowAssignment, data: bytes, rollout_id: str) -> None:
    """Attach ``data`` and its manifest, signed with the control plane's own key."""
    manifest = make_manifest("bundle", rollout_id, 1, hashlib.sha256(data).hexdigest(), len(data))
    assignment.bundle = data
    assignment.bundle_manifest = fleet.signed(manifest)


def candidate(
    fleet: Fleet,
    assignment: sync_pb2.WorkflowAssignment,
    rollout_id: str,
    *,
    role: str = "canary",
    gate: dict[str, Any] | None = None,
) -> str:
    """Make ``assignment`` the candidate of ``rollout_id`` with a signed bundle; its sha256."""
    assignment.role = role
    assignment.rollout_id = rollout_id
    data = bundle_document(assignment, rollout_id, {**GATE, **(gate or {})})
    sign_bundle(fleet, assignment, data, rollout_id)
    return hashlib.sha256(data).hexdigest()


class SwitchableTransport(RecordingTransport):
    """A recording transport that can cut the device off the network (``offline = True``)."""

    def __init__(self) -> None:
        super().__init__()
        self.offline = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.offline:
            self.requests.append((request.url.path, None, 0))
            raise httpx.ConnectError("the control plane is unreachable", request=request)
        return super().handle_request(request)
