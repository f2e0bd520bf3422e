"""What the reconciler persists in ``<data_dir>/sync/state.json`` (written atomically, after a switch).

``workflows`` is what runs (slot B once a candidate was switched to), ``previous`` the plan a
canary replaced (slot A: what the health gate or a crash loop goes back to, with no network),
``candidates`` the shadow plans. ``known`` remembers the sha256 of every workflow graph and threshold
set version the device accepted, so going back to one of them (a rollback) is not refused as a
downgrade.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STATE_VERSION", "AppliedWorkflow", "SyncState"]

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass
class AppliedWorkflow:
    """One workflow as applied from the control plane."""

    version: int
    sha256: str
    role: str = ""
    rollout_id: str = ""
    models: dict[str, int] = field(default_factory=dict)
    model_sha256: dict[str, str] = field(default_factory=dict)
    thresholds: dict[str, int] = field(default_factory=dict)
    threshold_sha256: dict[str, str] = field(default_factory=dict)
    bundle_sha256: str = ""
    """The rollout bundle it came from; empty outside a rollout (or without a bundle)."""
    gate: dict[str, Any] | None = None
    """The bundle's health-gate policy (``agent.rollout.bundle.Gate.to_dict``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sha256": self.sha256,
            "role": self.role,
            "rollout_id": self.rollout_id,
            "models": self.models,
            "model_sha256": self.model_sha256,
            "thresholds": self.thresholds,
            "threshold_sha256": self.threshold_sha256,
            "bundle_sha256": self.bundle_sha256,
            "gate": self.gate,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AppliedWorkflow:
        gate = data.get("gate")
        return cls(
            version=int(data["version"]),
            sha256=str(data["sha256"]),
            role=str(data.get("role", "")),
            rollout_id=str(data.get("rollout_id", "")),
            models={str(k): int(v) for k, v in data.get("models", {}).items()},
            model_sha256={str(k): str(v) for k, v in data.get("model_sha256", {}).items()},
            thresholds={str(k): int(v) for k, v in data.get("thresholds", {}).items()},
            threshold_sha256={str(k): str(v) for k, v in data.get("threshold_sha256", {}).items()},
            bundle_sha256=str(data.get("bundle_sha256", "")),
            gate=dict(gate) if isinstance(gate, dict) else None,
        )

    def model_versions(self) -> dict[str, str]:
        """``{model: version}`` as the model store names versions: what the compile pins."""
        return {name: str(version) for name, version in self.models.items()}


@dataclass
class SyncState:
    """What ``<data_dir>/sync/state.json`` holds."""

    generation: int = 0
    """The last desired generation fully applied."""
    fingerprint: str = ""
    """sha256 of that desired state without its generation and time."""
    attempted_generation: int = 0
    error: str = ""
    workflows: dict[str, AppliedWorkflow] = field(default_factory=dict)
    """Active workflows from the control plane."""
    candidates: dict[str, AppliedWorkflow] = field(default_factory=dict)
    """Shadow workflows: prepared (verified, compiled), running beside the active ones."""
    previous: dict[str, AppliedWorkflow] = field(default_factory=dict)
    """Slot A: what a canary replaced, by workflow id."""
    accepted: dict[str, dict[str, int]] = field(default_factory=dict)
    """Newest version accepted per kind ("workflow", "thresholds") and name: the downgrade floor."""
    known: dict[str, dict[str, str]] = field(default_factory=dict)
    """sha256 per kind and ``name@version`` of every workflow and threshold set accepted."""

    def know(self, kind: str, name: str, version: int, sha256: str) -> None:
        self.known.setdefault(kind, {})[f"{name}@{version}"] = sha256

    def known_sha256(self, kind: str, name: str, version: int) -> str | None:
        return self.known.get(kind, {}).get(f"{name}@{version}")

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": STATE_VERSION,
                "generation": self.generation,
                "fingerprint": self.fingerprint,
                "attempted_generation": self.attempted_generation,
                "error": self.error,
                "workflows": {k: v.to_dict() for k, v in sorted(self.workflows.items())},
                "candidates": {k: v.to_dict() for k, v in sorted(self.candidates.items())},
                "previous": {k: v.to_dict() for k, v in sorted(self.previous.items())},
                "accepted": self.accepted,
                "known": self.known,
            },
            indent=2,
            sort_keys=True,
        ).encode()

    @classmethod
    def load(cls, path: Path) -> SyncState:
        """The state in ``path``; a fresh one when the file is missing or unreadable (logged)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))

            def applied(key: str) -> dict[str, AppliedWorkflow]:
                return {k: AppliedWorkflow.from_dict(v) for k, v in data.get(key, {}).items()}

            return cls(
                generation=int(data["generation"]),
                fingerprint=str(data["fingerprint"]),
                attempted_generation=int(data.get("attempted_generation", 0)),
                error=str(data.get("error", "")),
                workflows=applied("workflows"),
                candidates=applied("candidates"),
                previous=applied("previous"),
                accepted={
                    str(kind): {str(n): int(v) for n, v in names.items()}
                    for kind, names in data.get("accepted", {}).items()
                },
                known={
                    str(kind): {str(n): str(v) for n, v in names.items()}
                    for kind, names in data.get("known", {}).items()
                },
            )
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("sync state %s is unreadable (%s): starting from generation 0", path, exc)
            return cls()
