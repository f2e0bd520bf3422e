"""What a run returns: its outputs, each node's outcome, the branches taken and the error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

NodeStatus = Literal["succeeded", "failed", "timed_out", "skipped", "cancelled"]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A node's failure: which node, of which type, what was raised and what it said."""

    node: str
    node_type: str
    kind: str
    message: str
    retryable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "node_type": self.node_type,
            "kind": self.kind,
            "message": self.message,
            "retryable": self.retryable,
        }


@dataclass(slots=True)
class NodeRun:
    """One node's outcome in a run. ``handled`` is the error policy (``continue`` or ``route``)
    that absorbed a failure, if any."""

    status: NodeStatus
    duration_s: float = 0.0
    attempts: int = 0
    error: ErrorInfo | None = None
    handled: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": self.status,
            "duration_ms": round(self.duration_s * 1000, 3),
            "attempts": self.attempts,
        }
        if self.error is not None:
            data["error"] = self.error.to_dict()
        if self.handled is not None:
            data["handled"] = self.handled
        return data


def json_default(value: Any) -> Any:
    """``json.dumps(default=…)`` for run results: numbers and small arrays (numpy or alike)
    become JSON numbers and lists, large arrays their shape and dtype, anything else its repr."""
    size = getattr(value, "size", None)
    if hasattr(value, "tolist") and isinstance(size, int):
        if getattr(value, "shape", None) == () or size <= 64:
            return value.tolist()
        return {"array": list(value.shape), "dtype": str(value.dtype)}
    return repr(value)


SKIPPED = NodeRun("skipped")
"""Shared by every skipped node: treat ``NodeRun`` objects as read-only."""
CANCELLED = NodeRun("cancelled")


@dataclass(slots=True)
class RunResult:
    """The result of one run. ``status`` is ``succeeded`` unless a failure was not absorbed by
    an error policy; then ``error`` names the node that failed and why."""

    run_id: str
    workflow_id: str
    workflow_version: int
    status: Literal["succeeded", "failed"]
    outputs: dict[str, Any]
    nodes: dict[str, NodeRun]
    branches: dict[str, str | None]
    error: ErrorInfo | None
    events: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": {"id": self.workflow_id, "version": self.workflow_version},
            "status": self.status,
            "duration_ms": round(self.duration_s * 1000, 3),
            "outputs": self.outputs,
            "nodes": {node_id: run.to_dict() for node_id, run in self.nodes.items()},
            "branches": self.branches,
            "error": self.error.to_dict() if self.error is not None else None,
            "events": self.events,
        }
