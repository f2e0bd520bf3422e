"""JSONPath operands, compiled once and resolved many times.

Syntax and semantics are RFC 9535 JSONPath, parsed by the ``python-jsonpath`` library. A
*singular* path (names and indices only, like ``$.product.id`` or ``$.items[0]``) is compiled to
a tuple of keys and resolved with plain dict/list lookups, which is what almost every workflow
uses and costs well under a microsecond. Any other path (wildcards, slices, filters,
descendants) is delegated to the library and resolves to the list of its matches.

The document a path is resolved against is the run's input, with the outputs of finished nodes
under the reserved top-level key ``nodes`` (``$.nodes.<id>.<field>``).
"""

from __future__ import annotations

from typing import Any

import jsonpath
from jsonpath.exceptions import JSONPathError
from jsonpath.segments import JSONPathChildSegment
from jsonpath.selectors import IndexSelector, NameSelector

from agent.workflow.context import RunContext
from agent.workflow.errors import PathNotFound

Key = str | int


class InvalidPath(ValueError):
    """A string that is not a JSONPath; the message says why and where."""


class CompiledPath:
    """A JSONPath ready to resolve against a run.

    ``node_ref`` is the node id when the path reads a node's output (``$.nodes.<id>…``).
    """

    __slots__ = ("_compiled", "_from_outputs", "_keys", "node_ref", "singular", "text")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.startswith("$"):
            raise InvalidPath(f"invalid JSONPath {text!r}: a path starts with '$'")
        try:
            compiled = jsonpath.compile(text)
        except JSONPathError as exc:
            detail = str(exc).splitlines()[0]
            raise InvalidPath(f"invalid JSONPath {text!r}: {detail}") from exc
        self.text = text
        self._compiled = compiled
        keys = _singular_keys(compiled)
        self.singular = keys is not None
        first = _first_name(compiled)
        self._from_outputs = first == "nodes"
        self.node_ref: str | None = None
        if self._from_outputs:
            second = _nth_name(compiled, 1)
            self.node_ref = second
        if keys is not None and self._from_outputs:
            keys = keys[1:]
        self._keys: tuple[Key, ...] = keys or ()

    def resolve(self, ctx: RunContext) -> Any:
        """The value at this path; for a non-singular path, the list of matches.

        Raises ``PathNotFound`` when a singular path matches nothing.
        """
        if self.singular:
            current: Any = ctx.outputs if self._from_outputs else ctx.input
            for key in self._keys:
                if type(key) is str:
                    if not isinstance(current, dict) or key not in current:
                        raise PathNotFound(self.text)
                else:
                    if not isinstance(current, list):
                        raise PathNotFound(self.text)
                    try:
                        current = current[key]  # type: ignore[index]
                    except IndexError:
                        raise PathNotFound(self.text) from None
                    continue
                current = current[key]
            return current
        document = ctx.document()
        return self._compiled.findall(document)

    def __repr__(self) -> str:
        return f"CompiledPath({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompiledPath) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _singular_keys(compiled: Any) -> tuple[Key, ...] | None:
    keys: list[Key] = []
    for segment in compiled.segments:
        if type(segment) is not JSONPathChildSegment or len(segment.selectors) != 1:
            return None
        selector = segment.selectors[0]
        if isinstance(selector, NameSelector):
            keys.append(selector.name)
        elif isinstance(selector, IndexSelector):
            keys.append(selector.index)
        else:
            return None
    return tuple(keys)


def _nth_name(compiled: Any, n: int) -> str | None:
    segments = compiled.segments
    if len(segments) <= n or type(segments[n]) is not JSONPathChildSegment:
        return None
    selectors = segments[n].selectors
    if len(selectors) == 1 and isinstance(selectors[0], NameSelector):
        return str(selectors[0].name)
    return None


def _first_name(compiled: Any) -> str | None:
    return _nth_name(compiled, 0)
