"""Errors of the workflow engine.

The tree::

    WorkflowError
    ├── SpecError            a graph or input file that cannot be parsed (names line and column)
    ├── CompileError         a graph that parses but is wrong; carries every Issue at once
    ├── InvalidInput         a run input that is not a JSON object, or uses the reserved key
    ├── RegistryError        a node type that cannot be registered
    │   └── DuplicateNodeType    two plugins claim one type name (names both origins)
    └── ExpressionSyntaxError    an expression that does not parse (names the position)

    NodeError                raised by a node while it runs; ``retryable`` says whether
    │                        trying again can help
    ├── PathNotFound         a JSONPath that matched nothing (names the path)
    ├── NodeTimeout          the node ran past its ``timeout_s``
    └── ExpressionError      an expression that failed on the run's data

``NodeError`` is not a ``WorkflowError``: a node failing is an outcome of a run, reported in
the run result, never an exception that escapes ``Executor.run``.
"""

from __future__ import annotations

from dataclasses import dataclass


class WorkflowError(Exception):
    """Base of the errors that reject a graph or its input before anything runs."""


class SpecError(WorkflowError):
    """A graph or input document that cannot be parsed."""

    def __init__(
        self, message: str, *, source: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        where = source if line is None else f"{source}:{line}:{column}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Issue:
    """One problem found by the compiler, located by node id and field."""

    code: str
    message: str
    node: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = []
        if self.node is not None:
            where.append(f"node '{self.node}'")
        if self.field:
            where.append(self.field)
        prefix = ", ".join(where)
        return f"{prefix}: {self.message} [{self.code}]" if prefix else f"{self.message} [{self.code}]"

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "node": self.node, "field": self.field, "message": self.message}


class CompileError(WorkflowError):
    """A graph that is wrong. ``issues`` lists every problem found, not just the first."""

    def __init__(self, workflow_id: str | None, issues: list[Issue]) -> None:
        self.workflow_id = workflow_id
        self.issues = issues
        name = f"workflow '{workflow_id}'" if workflow_id else "workflow"
        lines = "\n".join(f"  - {issue}" for issue in issues)
        super().__init__(f"{name} has {len(issues)} problem(s):\n{lines}")


class InvalidInput(WorkflowError):
    """A run input that cannot be run: not a JSON object, or using the reserved key ``nodes``."""


class RegistryError(WorkflowError):
    """A node type that cannot be registered or loaded."""


class DuplicateNodeType(RegistryError):
    """Two node plugins claim the same type name; the second is refused."""

    def __init__(self, type_name: str, existing: str, refused: str) -> None:
        self.type_name = type_name
        self.existing = existing
        self.refused = refused
        super().__init__(f"node type '{type_name}' from {refused} refused: already registered by {existing}")


class ExpressionSyntaxError(WorkflowError):
    """An expression that does not parse; ``position`` is the 0-based offset of the fault."""

    def __init__(self, expression: str, position: int, message: str) -> None:
        self.expression = expression
        self.position = position
        super().__init__(f"{message} at position {position} in expression {expression!r}")


class NodeError(Exception):
    """Raised by a node at run time. Retrying helps only when ``retryable`` is true."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class PathNotFound(NodeError):
    """A JSONPath matched nothing in the run's document."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"path {path} not found")


class NodeTimeout(NodeError):
    """The node did not finish within its timeout."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"timed out after {timeout_s:g} s")


class ExpressionError(NodeError):
    """An expression that could not be evaluated on the run's data (e.g. comparing a string
    with a number)."""
