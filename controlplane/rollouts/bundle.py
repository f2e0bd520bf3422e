"""A rollout's bundle: the workflow, model and threshold-set versions it ships and the device's
health-gate policy, as canonical JSON, signed as a release manifest of kind ``bundle``.

The bytes are ``json.dumps(bundle, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``
(docs/rollouts.md); the manifest names the rollout id, version 1, and the bytes' sha256 and size,
so a device that verifies the manifest with the fleet's signing key and the digest of the bytes
knows every artifact of the assignment is the one the operator released.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controlplane.rollouts.spec import GateSpec
from controlplane.signing import SigningKey, make_manifest


@dataclass(frozen=True)
class SignedBundle:
    """The bundle as data, its canonical bytes, their sha256 and the signed manifest (JSON bytes)."""

    document: dict[str, Any]
    data: bytes
    sha256: str
    manifest: bytes


def _ref(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {"name": row["name"], "version": int(row["version"]), "sha256": row["sha256"]}


def canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def build(
    rollout_id: str,
    workflow: Mapping[Any, Any],
    models: Sequence[Mapping[Any, Any]],
    threshold_sets: Sequence[Mapping[Any, Any]],
    gate: GateSpec,
) -> dict[str, Any]:
    """The bundle document from registry rows (each with name, version, sha256); lists sorted by
    name so equal inputs give equal bytes."""
    return {
        "rollout_id": rollout_id,
        "workflow": _ref(workflow),
        "models": sorted((_ref(m) for m in models), key=lambda ref: ref["name"]),
        "threshold_sets": sorted((_ref(t) for t in threshold_sets), key=lambda ref: ref["name"]),
        "gate": {
            "warmup_frames": gate.warmup_frames,
            "frames": gate.frames,
            "max_errors": gate.max_errors,
            "max_latency_ms": float(gate.max_latency_ms),
        },
    }


def sign(
    document: Mapping[str, Any], signer: SigningKey, *, lifetime: timedelta, now: datetime | None = None
) -> SignedBundle:
    """Serialise ``document`` canonically and sign it (kind ``bundle``, name = the rollout id,
    version 1)."""
    data = canonical(document)
    digest = hashlib.sha256(data).hexdigest()
    manifest = make_manifest(
        "bundle", str(document["rollout_id"]), 1, digest, len(data), lifetime=lifetime, now=now
    )
    return SignedBundle(
        document=dict(document), data=data, sha256=digest, manifest=signer.sign(manifest).to_json()
    )
