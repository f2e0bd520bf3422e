"""The workflow graph format (JSON or YAML) and its loader.

A graph is the design brief's format::

    {"id": "order_processing", "version": 3,
     "nodes": [{"id": "input_validator", "type": "data_validation",
                "config": {"schema": "order_schema_v1"}}, ...],
     "edges": [{"source": "input_validator", "target": "price_calculator"}]}

Every node may also set ``timeout_s``, ``retry`` and ``on_error``; ``defaults`` sets them for
every node of the graph. Unknown fields are errors, so a typo never passes silently.

``load_spec`` only parses: a file that is not JSON/YAML raises ``SpecError`` with line and
column; a document of the wrong shape is reported by the compiler with every other problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.workflow.errors import SpecError

NODE_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class RetrySpec(BaseModel):
    """Retry a failed node: ``max_attempts`` in all, waiting ``backoff_s``, then that times
    ``multiplier`` each time, capped at ``max_backoff_s``. Only retryable errors are retried."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(3, ge=1, le=100)
    backoff_s: float = Field(0.1, ge=0)
    multiplier: float = Field(2.0, ge=1)
    max_backoff_s: float = Field(10.0, ge=0)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.backoff_s * self.multiplier ** (attempt - 1), self.max_backoff_s))


class ErrorPolicySpec(BaseModel):
    """What a node's failure does to the run.

    - ``fail``: the run fails (default);
    - ``continue``: the node's output becomes ``default`` and the run goes on;
    - ``route``: only the successor ``target`` runs, with the error as the node's output
      (``$.nodes.<id>.error``); on success every successor but ``target`` runs.
    """

    model_config = ConfigDict(extra="forbid")

    policy: Literal["fail", "continue", "route"] = "fail"
    default: Any = None
    target: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"policy": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _target_matches_policy(self) -> ErrorPolicySpec:
        if self.policy == "route" and not self.target:
            raise ValueError("policy 'route' needs a 'target' successor")
        if self.policy != "route" and self.target is not None:
            raise ValueError(f"'target' only applies to policy 'route', not '{self.policy}'")
        return self


class NodeDefaults(BaseModel):
    """Settings applied to every node that does not set its own."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float | None = Field(None, gt=0)
    retry: RetrySpec | None = None
    on_error: ErrorPolicySpec | None = None


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=NODE_ID_PATTERN)
    type: str
    config: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None
    timeout_s: float | None = Field(None, gt=0)
    retry: RetrySpec | None = None
    on_error: ErrorPolicySpec | None = None


class EdgeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    target: str


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: int = Field(1, ge=1)
    description: str | None = None
    defaults: NodeDefaults = Field(default_factory=NodeDefaults)
    nodes: list[NodeSpec] = Field(min_length=1)
    edges: list[EdgeSpec] = Field(default_factory=list)


def parse_document(text: str, *, source: str, fmt: Literal["json", "yaml"] | None = None) -> Any:
    """Parse JSON or YAML text. ``fmt`` defaults to the extension of ``source`` (YAML when
    unknown; YAML is a superset of JSON). Raises ``SpecError`` with line and column."""
    if fmt is None:
        fmt = "json" if source.endswith(".json") else "yaml"
    if fmt == "json":
        try:
            return json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise SpecError(exc.msg, source=source, line=exc.lineno, column=exc.colno) from exc
        except _DuplicateKey as exc:
            raise SpecError(str(exc), source=source) from exc
        except RecursionError as exc:
            raise SpecError("nested too deeply", source=source) from exc
    try:
        return yaml.safe_load(text)
    except RecursionError as exc:
        raise SpecError("nested too deeply", source=source) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(filter(None, [exc.context, exc.problem]))
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise SpecError(message or "invalid YAML", source=source, line=line, column=column) from exc
    except yaml.YAMLError as exc:
        raise SpecError(str(exc), source=source) from exc


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"duplicate key {key!r} in an object")
        result[key] = value
    return result


def read_document(path: str | Path) -> Any:
    """Read and parse a JSON or YAML file (``-`` reads standard input as YAML/JSON)."""
    import sys

    name = str(path)
    if name == "-":
        return parse_document(sys.stdin.read(), source="<stdin>")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError("file not found", source=name) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read: {exc}", source=name) from exc
    return parse_document(text, source=name)
