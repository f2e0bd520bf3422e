"""Node type registry: built-in types from one explicit list, third-party types through the
``edgefleet.nodes`` entry-point group.

A registry is an object passed to the compiler; ``default_registry()`` builds the usual one
(built-ins plus installed plugins) once per process. Tests build their own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from agent.workflow.errors import DuplicateNodeType, RegistryError
from agent.workflow.node import Node

ENTRY_POINT_GROUP = "edgefleet.nodes"

log = logging.getLogger(__name__)


def describe_class(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class NodeRegistry:
    """Maps type names to ``Node`` classes and remembers where each came from."""

    def __init__(self) -> None:
        self._types: dict[str, type[Node[Any]]] = {}
        self._origins: dict[str, str] = {}
        self.load_errors: list[str] = []
        """Plugins that could not be loaded, one line each (also logged)."""

    def register(self, cls: type[Node[Any]], *, origin: str | None = None) -> None:
        """Add a node type. Raises ``DuplicateNodeType`` naming both origins if the name is
        taken, and ``RegistryError`` if ``cls`` is not a usable node class."""
        origin = origin or describe_class(cls)
        if not (isinstance(cls, type) and issubclass(cls, Node)):
            raise RegistryError(f"{origin} is not a Node subclass")
        name = getattr(cls, "type_name", None)
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{origin} has no type_name")
        if not hasattr(cls, "config_model"):
            raise RegistryError(f"{origin} (type '{name}') has no config_model")
        if name in self._types:
            raise DuplicateNodeType(name, existing=self._origins[name], refused=origin)
        self._types[name] = cls
        self._origins[name] = origin

    def register_all(self, classes: Iterable[type[Node[Any]]]) -> None:
        for cls in classes:
            self.register(cls, origin=f"edgefleet built-in {describe_class(cls)}")

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Register every node type installed under ``group``.

        A plugin that fails to import, is not a node class, or reuses a taken name is refused:
        the reason goes to ``load_errors`` and the log, and the other plugins still load.
        """
        for entry_point in entry_points(group=group):
            origin = _describe_entry_point(entry_point)
            try:
                cls = entry_point.load()
            except Exception as exc:  # noqa: BLE001 - any import failure of a third party
                self._refuse(f"{origin} failed to load: {type(exc).__name__}: {exc}")
                continue
            try:
                self.register(cls, origin=origin)
            except RegistryError as exc:
                self._refuse(str(exc))

    def _refuse(self, message: str) -> None:
        self.load_errors.append(message)
        log.error("node plugin refused: %s", message)

    def get(self, name: str) -> type[Node[Any]] | None:
        return self._types.get(name)

    def origin(self, name: str) -> str:
        return self._origins[name]

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._types))

    def __len__(self) -> int:
        return len(self._types)


def _describe_entry_point(entry_point: EntryPoint) -> str:
    dist = entry_point.dist
    owner = f" (distribution {dist.name} {dist.version})" if dist is not None else ""
    return f"entry point '{entry_point.name} = {entry_point.value}'{owner}"


_default: NodeRegistry | None = None


def default_registry() -> NodeRegistry:
    """The process-wide registry: built-in node types and installed plugins, loaded once."""
    global _default
    if _default is None:
        from agent.nodes import BUILTIN_NODES

        registry = NodeRegistry()
        registry.register_all(BUILTIN_NODES)
        registry.load_entry_points()
        _default = registry
    return _default


def builtin_registry() -> NodeRegistry:
    """A fresh registry holding only the built-in node types."""
    from agent.nodes import BUILTIN_NODES

    registry = NodeRegistry()
    registry.register_all(BUILTIN_NODES)
    return registry
