"""Rollout bundles: what a candidate assignment must prove before anything of it is fetched.

A bundle (docs/rollouts.md, "The bundle") is canonical JSON naming a rollout's workflow, model and
threshold-set artifacts by name, version and sha256, and the device's health-gate policy. It
travels in ``WorkflowAssignment.bundle`` with a signed release manifest of kind ``bundle`` (name =
the rollout id) in ``bundle_manifest``. :func:`verify_bundle` checks, in order (the first failure
raises :class:`BundleError`):

1. the manifest verifies with the enrolled key (:func:`agent.manifest.verify_manifest`), is of
   kind ``bundle`` and is named after the assignment's rollout id;
2. the bundle bytes have the manifest's sha256 and size (:func:`agent.manifest.verify_digest`);
3. the bytes are a bundle of that rollout id, with a valid gate;
4. the assignment's workflow, model and threshold-set refs are exactly the bundle's: the same
   names, versions and sha256, nothing more and nothing less.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.manifest import ManifestError, verify_digest, verify_manifest
from protos import sync_pb2

__all__ = ["ArtifactId", "Bundle", "BundleError", "Gate", "verify_bundle"]


class BundleError(Exception):
    """The assignment's bundle is refused; the message names the rollout and the check."""


@dataclass(frozen=True)
class Gate:
    """The device's health-gate policy, signed into the bundle."""

    warmup_frames: int = 5
    frames: int = 20
    max_errors: int = 0
    max_latency_ms: float = 1000.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "warmup_frames": self.warmup_frames,
            "frames": self.frames,
            "max_errors": self.max_errors,
            "max_latency_ms": self.max_latency_ms,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Gate:
        """Read a gate; ``ValueError`` naming the field when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("gate: not an object")
        values: dict[str, Any] = {}
        for name in ("warmup_frames", "frames", "max_errors"):
            value = data.get(name, _GATE_DEFAULTS[name])
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"gate.{name}: not a non-negative integer: {value!r}")
            values[name] = value
        latency = data.get("max_latency_ms", _GATE_DEFAULTS["max_latency_ms"])
        if isinstance(latency, bool) or not isinstance(latency, int | float) or not math.isfinite(latency):
            raise ValueError(f"gate.max_latency_ms: not a finite number: {latency!r}")
        if latency <= 0:
            raise ValueError(f"gate.max_latency_ms: must be > 0, got {latency!r}")
        return cls(max_latency_ms=float(latency), **values)


_GATE_DEFAULTS = Gate().to_dict()


@dataclass(frozen=True, slots=True)
class ArtifactId:
    """An artifact as the bundle names it."""

    name: str
    version: int
    sha256: str

    def __str__(self) -> str:
        return f"'{self.name}' version {self.version} (sha256 {self.sha256[:12]}…)"


@dataclass(frozen=True, slots=True)
class Bundle:
    """A verified bundle; ``sha256`` is the digest of its bytes."""

    rollout_id: str
    sha256: str
    workflow: ArtifactId
    models: tuple[ArtifactId, ...]
    threshold_sets: tuple[ArtifactId, ...]
    gate: Gate


def _artifact(data: Any, where: str) -> ArtifactId:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: not an object")
    name, version, sha256 = data.get("name"), data.get("version"), data.get("sha256")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: not a name: {name!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{where}.version: not a version: {version!r}")
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise ValueError(f"{where}.sha256: not a sha256: {sha256!r}")
    return ArtifactId(name, version, sha256)


def parse_bundle(data: bytes) -> Bundle:
    """Read bundle bytes (already checked against their manifest); ``ValueError`` if malformed."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    rollout_id = document.get("rollout_id")
    if not isinstance(rollout_id, str) or not rollout_id:
        raise ValueError(f"rollout_id: not an id: {rollout_id!r}")
    models = document.get("models", [])
    sets = document.get("threshold_sets", [])
    if not isinstance(models, list) or not isinstance(sets, list):
        raise ValueError("models and threshold_sets must be lists")
    return Bundle(
        rollout_id=rollout_id,
        sha256=hashlib.sha256(data).hexdigest(),
        workflow=_artifact(document.get("workflow"), "workflow"),
        models=tuple(_artifact(m, f"models[{i}]") for i, m in enumerate(models)),
        threshold_sets=tuple(_artifact(t, f"threshold_sets[{i}]") for i, t in enumerate(sets)),
        gate=Gate.from_dict(document.get("gate", {})),
    )


def _ids(refs: Any) -> set[ArtifactId]:
    return {ArtifactId(ref.name, int(ref.version), ref.sha256) for ref in refs}


def _describe(ids: set[ArtifactId]) -> str:
    return ", ".join(sorted(map(str, ids))) or "none"


def verify_bundle(
    assignment: sync_pb2.WorkflowAssignment, public_key: Ed25519PublicKey, *, now: datetime
) -> Bundle:
    """The assignment's bundle, verified as the module docstring says; :class:`BundleError`
    naming the rollout and the failed check otherwise."""
    rollout_id = assignment.rollout_id
    label = f"bundle of rollout '{rollout_id or '?'}'"
    if not assignment.bundle_manifest:
        raise BundleError(f"{label}: the assignment carries a bundle but no signed bundle manifest")
    try:
        manifest = verify_manifest(bytes(assignment.bundle_manifest), public_key, now=now)
    except ManifestError as exc:
        raise BundleError(f"{label}: bundle manifest refused: {exc}") from exc
    if manifest.kind != "bundle" or manifest.name != rollout_id:
        raise BundleError(
            f"{label}: the signed manifest describes {manifest.label}, not the bundle of this rollout"
        )
    data = bytes(assignment.bundle)
    try:
        verify_digest(manifest, hashlib.sha256(data).hexdigest(), len(data))
    except ManifestError as exc:
        raise BundleError(f"{label}: digest mismatch: {exc}") from exc
    try:
        bundle = parse_bundle(data)
    except ValueError as exc:
        raise BundleError(f"{label}: malformed bundle: {exc}") from exc
    if bundle.rollout_id != rollout_id:
        raise BundleError(f"{label}: the bundle is of rollout '{bundle.rollout_id}'")
    mismatches = []
    for what, theirs, ours in (
        ("workflow", _ids([assignment.workflow]), {bundle.workflow}),
        ("models", _ids(assignment.models), set(bundle.models)),
        ("threshold sets", _ids(assignment.threshold_sets), set(bundle.threshold_sets)),
    ):
        if theirs != ours:
            mismatches.append(f"{what}: assigned {_describe(theirs)}, the bundle has {_describe(ours)}")
    if mismatches:
        raise BundleError(
            f"{label}: the assignment's artifacts are not the bundle's: " + "; ".join(mismatches)
        )
    return bundle
