"""Field types for node config models: JSONPaths, expressions and output templates.

Each is validated (parsed) when the config is validated, so a bad path or expression is a
compile error that names the field, and each serialises back to the text it came from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

from agent.workflow.context import RunContext
from agent.workflow.errors import ExpressionSyntaxError
from agent.workflow.expressions import Expression
from agent.workflow.paths import CompiledPath, InvalidPath


def _to_path(value: Any) -> CompiledPath:
    if isinstance(value, CompiledPath):
        return value
    if not isinstance(value, str):
        raise ValueError(f"a JSONPath must be a string, got {type(value).__name__}")
    try:
        return CompiledPath(value)
    except InvalidPath as exc:
        raise ValueError(str(exc)) from exc


def _to_expression(value: Any) -> Expression:
    if isinstance(value, Expression):
        return value
    if not isinstance(value, str):
        raise ValueError(f"an expression must be a string, got {type(value).__name__}")
    try:
        return Expression(value)
    except ExpressionSyntaxError as exc:
        raise ValueError(str(exc)) from exc


def _to_condition(value: Any) -> Expression:
    expression = _to_expression(value)
    if not expression.paths:
        raise ValueError(
            f"expression {expression.source!r} references nothing: a condition must read the "
            "input or a node's output through a '$' path"
        )
    return expression


JsonPath = Annotated[
    CompiledPath,
    PlainValidator(_to_path),
    PlainSerializer(lambda path: path.text, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\$", "description": "RFC 9535 JSONPath"}),
]
"""A JSONPath such as ``$.product.id`` or ``$.nodes.decode.image``."""

Expr = Annotated[
    Expression,
    PlainValidator(_to_expression),
    PlainSerializer(lambda expr: expr.source, return_type=str),
    WithJsonSchema({"type": "string", "description": "edgefleet expression"}),
]
"""An expression such as ``$.order.amount * 1.2``."""

Condition = Annotated[
    Expression,
    PlainValidator(_to_condition),
    PlainSerializer(lambda expr: expr.source, return_type=str),
    WithJsonSchema({"type": "string", "description": "edgefleet expression reading a '$' path"}),
]
"""An expression that must read at least one path, such as ``$.order.amount > 1000``."""


class Template:
    """A JSON-like value in which strings starting with ``$`` are JSONPaths and
    ``{"$expr": "…"}`` objects are expressions; everything else is literal. ``$$`` at the start
    of a string escapes a literal ``$``.

    ``render`` builds the value for a run; a static template renders to the same object every
    time, so outputs must be treated as read-only.
    """

    __slots__ = ("paths", "render", "source")

    def __init__(self, source: Any) -> None:
        self.source = source
        self.paths: tuple[CompiledPath, ...] = ()
        collected: list[CompiledPath] = []
        self.render = _compile_template(source, "", collected)
        self.paths = tuple(collected)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.source == self.source

    def __hash__(self) -> int:
        return id(self)


def _compile_template(value: Any, where: str, paths: list[CompiledPath]) -> Any:
    """Compile ``value`` to a callable ``(ctx) -> rendered value``."""
    if isinstance(value, str):
        if value.startswith("$$"):
            literal = value[1:]
            return lambda ctx: literal
        if value.startswith("$"):
            path = _located(_to_path, value, where)
            paths.append(path)
            return path.resolve
        return lambda ctx: value
    if isinstance(value, dict):
        if set(value) == {"$expr"}:
            expression = _located(_to_expression, value["$expr"], where)
            paths.extend(expression.paths)
            return expression.evaluate
        parts = {
            key: _compile_template(item, f"{where}.{key}" if where else str(key), paths)
            for key, item in value.items()
        }

        def render_object(ctx: RunContext) -> dict[str, Any]:
            return {key: part(ctx) for key, part in parts.items()}

        return render_object
    if isinstance(value, list):
        items = [_compile_template(item, f"{where}[{index}]", paths) for index, item in enumerate(value)]
        return lambda ctx: [item(ctx) for item in items]
    return lambda ctx: value


def _located(convert: Any, value: Any, where: str) -> Any:
    try:
        return convert(value)
    except ValueError as exc:
        raise ValueError(f"at {where or 'top level'}: {exc}") from exc


def _to_template(value: Any) -> Template:
    return value if isinstance(value, Template) else Template(value)


TemplateValue = Annotated[
    Template,
    PlainValidator(_to_template),
    PlainSerializer(lambda template: template.source),
    WithJsonSchema({"description": "JSON value; '$…' strings are paths, {'$expr': …} expressions"}),
]


def iter_paths(value: Any, field: str = "") -> Iterator[tuple[CompiledPath, str]]:
    """Every JSONPath inside a validated config value, with the dotted field it sits in."""
    from pydantic import BaseModel

    if isinstance(value, CompiledPath):
        yield value, field
    elif isinstance(value, (Expression, Template)):
        for path in value.paths:
            yield path, field
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from iter_paths(getattr(value, name), f"{field}.{name}" if field else name)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_paths(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from iter_paths(item, f"{field}[{index}]")
