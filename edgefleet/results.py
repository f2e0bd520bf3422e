"""Run results: what :meth:`WorkflowClient.execute_workflow` returns and :meth:`~WorkflowClient.inspect`
yields, the same from a device and from a control-plane dry run.

A :class:`WorkflowResult` is two things at once:

- typed fields for what every caller reads (``status``, ``decision``, ``error``, ``outputs`` …),
  with ``raw`` holding the whole result document (``agent.workflow.RunResult.to_dict()``:
  ``run_id``, ``workflow``, ``status``, ``duration_ms``, ``outputs``, ``nodes``, ``branches``,
  ``error``, ``events``);
- a read-only mapping of the *output fields* of the run: ``result["calculated_price"]`` is the
  ``calculated_price`` some node output, whichever node it was. ``dict(result)`` is therefore the
  plain dict of the run's results. A field that several nodes output with different values is
  left out of the mapping (``result[key]`` raises :class:`~edgefleet.errors.AmbiguousOutput`
  naming the nodes); ``result.output(node_id)[key]`` always reads one node's value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from edgefleet.errors import AmbiguousOutput, EdgefleetError

__all__ = ["Frame", "FrameResult", "RunError", "WorkflowResult", "run_decision"]


@dataclass(frozen=True, slots=True)
class RunError:
    """Why a run failed inside the graph: the node, its type, the kind of failure, the message,
    and whether the node said retrying may help."""

    node: str
    node_type: str
    kind: str
    message: str
    retryable: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunError:
        return cls(
            node=str(data.get("node", "")),
            node_type=str(data.get("node_type", "")),
            kind=str(data.get("kind", "")),
            message=str(data.get("message", "")),
            retryable=bool(data.get("retryable", False)),
        )


def run_decision(outputs: Mapping[str, Any]) -> str | None:
    """The device's rule: ``reject`` when any node output says ``decision: reject``, else
    ``accept`` when one says ``accept``, else ``None``."""
    accepted = False
    for output in outputs.values():
        if isinstance(output, Mapping):
            decision = output.get("decision")
            if decision == "reject":
                return "reject"
            accepted = accepted or decision == "accept"
    return "accept" if accepted else None


def _merge_fields(outputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """The output fields of every node whose output is a mapping, and the fields that nodes
    disagree on (with the nodes that output them)."""
    merged: dict[str, Any] = {}
    owners: dict[str, list[str]] = {}
    ambiguous: set[str] = set()
    for node_id, output in outputs.items():
        if not isinstance(output, Mapping):
            continue
        for key, value in output.items():
            if key in owners:
                owners[key].append(node_id)
                if key not in ambiguous and merged[key] != value:
                    ambiguous.add(key)
            else:
                owners[key] = [node_id]
                merged[key] = value
    for key in ambiguous:
        del merged[key]
    return merged, {key: tuple(owners[key]) for key in sorted(ambiguous)}


@dataclass(frozen=True, eq=False)
class WorkflowResult(Mapping[str, Any]):
    """One run's result. Build it with :meth:`from_dict`.

    ``status`` is ``succeeded`` or ``failed``; a failed run has ``error``. ``decision`` is
    ``accept``/``reject`` by the device's rule (:func:`run_decision`) for a run that succeeded,
    else ``None``. ``outputs`` maps node id → that node's output; ``events`` are the events the
    run's ``emit`` nodes produced. Mapping access reads output fields (see the module docs).
    """

    run_id: str
    workflow_id: str
    workflow_version: int
    status: str
    decision: str | None
    duration_ms: float
    outputs: Mapping[str, Any]
    error: RunError | None
    events: tuple[Mapping[str, Any], ...]
    raw: Mapping[str, Any] = field(repr=False)
    _fields: Mapping[str, Any] = field(init=False, repr=False)
    _ambiguous: Mapping[str, tuple[str, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        merged, ambiguous = _merge_fields(self.outputs)
        object.__setattr__(self, "_fields", MappingProxyType(merged))
        object.__setattr__(self, "_ambiguous", MappingProxyType(ambiguous))

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], *, decision: str | None = None, duration_ms: float | None = None
    ) -> WorkflowResult:
        """The result of the run document ``raw``. ``decision`` and ``duration_ms``, when given,
        are the endpoint's own (a device sends both beside the document)."""
        workflow = raw.get("workflow") or {}
        outputs = raw.get("outputs") or {}
        status = str(raw.get("status", ""))
        error = raw.get("error")
        if decision is None and status == "succeeded":
            decision = run_decision(outputs)
        return cls(
            run_id=str(raw.get("run_id", "")),
            workflow_id=str(workflow.get("id", "")),
            workflow_version=int(workflow.get("version", 0)),
            status=status,
            decision=decision or None,
            duration_ms=float(raw.get("duration_ms", 0.0) if duration_ms is None else duration_ms),
            outputs=MappingProxyType(dict(outputs)),
            error=RunError.from_dict(error) if isinstance(error, Mapping) else None,
            events=tuple(e for e in raw.get("events") or () if isinstance(e, Mapping)),
            raw=MappingProxyType(dict(raw)),
        )

    @property
    def succeeded(self) -> bool:
        """True when the run succeeded (``status == "succeeded"``)."""
        return self.status == "succeeded"

    def output(self, node_id: str) -> Any:
        """The output of node ``node_id``. ``KeyError`` naming the nodes that have an output when
        it has none (it did not run, or it is not in the graph)."""
        try:
            return self.outputs[node_id]
        except KeyError:
            raise KeyError(
                f"node '{node_id}' has no output in this run; nodes with outputs: {', '.join(self.outputs)}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """A plain copy of the whole result document (``raw``)."""
        return dict(self.raw)

    def __getitem__(self, key: str) -> Any:
        try:
            return self._fields[key]
        except KeyError:
            if key in self._ambiguous:
                raise AmbiguousOutput(key, self._ambiguous[key]) from None
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WorkflowResult):
            return NotImplemented
        return self.raw == other.raw

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame for :meth:`WorkflowClient.inspect`: the encoded image (JPEG or PNG), the id its
    result echoes (default: its position in the stream, from 0) and extra input fields for it."""

    image: bytes
    frame_id: int | None = None
    input_data: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class FrameResult:
    """The answer for one frame of :meth:`WorkflowClient.inspect`: ``result`` when the frame was
    run, else ``error`` saying why not (``InvalidArgument`` naming the field, ``NotFound`` …).
    A run that failed inside the graph is a ``result`` with ``status == "failed"``."""

    frame_id: int
    result: WorkflowResult | None = None
    error: EdgefleetError | None = None

    @property
    def ok(self) -> bool:
        """True when the frame ran and its run succeeded."""
        return self.result is not None and self.result.succeeded
