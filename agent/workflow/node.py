"""The interface every node plugin implements; it knows nothing of the compiler or executor.

A node type is a pydantic config model plus a ``Node`` subclass::

    class UpperConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        value: JsonPath

    class Upper(Node[UpperConfig]):
        type_name = "upper"
        config_model = UpperConfig
        summary = "Upper-cases a string."

        def run(self, ctx: RunContext) -> str:
            return str(self.config.value.resolve(ctx)).upper()

Contract:

- ``__init__`` runs once, at compile time. Raise ``ConfigError`` for a problem the config model
  cannot express (a missing schema file, say); it becomes a compile issue naming the field.
- ``run`` runs once per run, possibly from several threads at once: keep per-run state in
  locals, and guard shared state. Return the node's output (read-only for everyone else), or a
  ``Route`` to choose which successor runs next. Raise ``NodeError`` for an expected failure;
  set ``retryable`` when trying again can help.
- ``branch_targets`` names the successors a routing node may choose, so the compiler can check
  them.
- ``concurrent`` says that ``run`` spends its time outside the GIL (native inference, image
  codecs, I/O, sleeping). The executor overlaps such nodes with other ready nodes on its worker
  pool; pure-Python nodes run on the run's own thread, where a thread hand-off would only add
  cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from agent.workflow.config_types import iter_paths
from agent.workflow.context import RunContext
from agent.workflow.paths import CompiledPath

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ConfigError(Exception):
    """A node config that validates but cannot be used; ``field`` is relative to ``config``."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class Route:
    """A routing node's result: run only the successor ``branch`` (or none, when ``None``)."""

    __slots__ = ("branch", "output")

    def __init__(self, branch: str | None, output: Any) -> None:
        self.branch = branch
        self.output = output


@dataclass
class NodeSetup:
    """What a node may use while it is built at compile time.

    ``build`` compiles a nested node (``{"type": …, "config": …}``) at ``field`` for wrapper
    types such as ``cache``; it raises ``ConfigError`` when the nested node is invalid (its
    issues are already reported).
    """

    node_id: str
    schema_dirs: tuple[Path, ...] = ()
    build: Callable[[Any, str], Node[Any]] | None = None
    resources: dict[str, Any] = field(default_factory=dict)


class Node(Generic[ConfigT]):
    """Base class of node plugins. See the module docstring for the contract."""

    type_name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    summary: ClassVar[str] = ""
    concurrent: ClassVar[bool] = False

    def __init__(self, config: ConfigT, setup: NodeSetup) -> None:
        self.config = config
        self.node_id = setup.node_id

    def run(self, ctx: RunContext) -> Any:
        raise NotImplementedError

    def branch_targets(self) -> Sequence[tuple[str, str]]:
        """``(successor id, config field)`` for each successor this node may route to."""
        return ()

    def references(self) -> Iterable[tuple[CompiledPath, str]]:
        """Every JSONPath the node reads, with the config field it appears in."""
        return iter_paths(self.config)
