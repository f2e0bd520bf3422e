"""A small, safe expression language for conditions and computed values.

Grammar (lowest binding first)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") sum]
    sum     := term (("+" | "-") term)*
    term    := unary (("*" | "/" | "%") unary)*
    unary   := "-" unary | primary
    primary := NUMBER | STRING | true | false | null | JSONPATH | "(" expr ")"
             | "[" [expr ("," expr)*] "]"

``True``/``False``/``None`` are accepted as spellings of ``true``/``false``/``null``. A
JSONPATH operand is any RFC 9535 path starting with ``$`` (see ``agent.workflow.paths``).
Comparisons do not chain.

Semantics follow JSON, not Python: ``true == 1`` is false; ordering compares two numbers or two
strings and anything else is an ``ExpressionError``; ``and``/``or`` short-circuit and give
booleans by JSON truthiness (``null``, ``false``, ``0``, ``""``, ``[]``, ``{}`` are false).

A singular path that matches nothing raises ``PathNotFound`` under ``evaluate``; under
``evaluate_lenient`` it reads as ``null``. Which one a node uses is the node's contract (the
``condition`` node's ``missing`` setting).

The source is tokenised and compiled to nested closures once; nothing is ever passed to
``eval``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from agent.workflow.context import RunContext
from agent.workflow.errors import ExpressionError, ExpressionSyntaxError, PathNotFound
from agent.workflow.paths import CompiledPath, InvalidPath

Evaluator = Callable[[RunContext], Any]

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|\+|-|\*|/|%)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in"}
_CONSTANTS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "/": "/"}


class _Token:
    __slots__ = ("kind", "pos", "text", "value")

    def __init__(self, kind: str, text: str, pos: int, value: Any = None) -> None:
        self.kind = kind
        self.text = text
        self.pos = pos
        self.value = value


def _scan_path(source: str, start: int) -> int:
    """End offset of the JSONPath that starts with '$' at ``start``."""
    i = start + 1
    n = len(source)
    while i < n:
        ch = source[i]
        if ch == ".":
            i += 1
            while i < n and (source[i].isalnum() or source[i] in "_*."):
                i += 1
        elif ch == "[":
            depth = 0
            quote = ""
            while i < n:
                c = source[i]
                if quote:
                    if c == "\\":
                        i += 1
                    elif c == quote:
                        quote = ""
                elif c in "'\"":
                    quote = c
                elif c == "[":
                    depth += 1
                elif c == "]":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
            else:
                raise ExpressionSyntaxError(source, start, "unclosed '[' in path")
        else:
            break
    return i


def _unescape(body: str) -> str:
    out = []
    it = iter(body)
    for ch in it:
        if ch == "\\":
            nxt = next(it, "")
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
        else:
            out.append(ch)
    return "".join(out)


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(source):
        if source[pos] == "$":
            end = _scan_path(source, pos)
            text = source[pos:end]
            try:
                path = CompiledPath(text)
            except InvalidPath as exc:
                raise ExpressionSyntaxError(source, pos, str(exc)) from exc
            tokens.append(_Token("path", text, pos, path))
            pos = end
            continue
        match = _TOKEN.match(source, pos)
        if match is None:
            raise ExpressionSyntaxError(source, pos, f"unexpected character {source[pos]!r}")
        kind = match.lastgroup or ""
        text = match.group()
        if kind == "number":
            value: Any = float(text) if any(c in text for c in ".eE") else int(text)
            tokens.append(_Token("const", text, pos, value))
        elif kind == "string":
            tokens.append(_Token("const", text, pos, _unescape(text[1:-1])))
        elif kind == "name":
            if text in _KEYWORDS:
                tokens.append(_Token("op", text, pos))
            elif text in _CONSTANTS:
                tokens.append(_Token("const", text, pos, _CONSTANTS[text]))
            else:
                raise ExpressionSyntaxError(
                    source, pos, f"unknown name {text!r} (strings need quotes, paths start with '$')"
                )
        elif kind == "op":
            tokens.append(_Token("op", text, pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(source)))
    return tokens


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _json_equal(a: Any, b: Any) -> bool:
    if (type(a) is bool) != (type(b) is bool):
        return False
    return bool(a == b)


def _truthy(value: Any) -> bool:
    return bool(value)


def _ordered(op: Callable[[Any, Any], bool], symbol: str) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        if (_is_number(a) and _is_number(b)) or (type(a) is str and type(b) is str):
            return op(a, b)
        raise ExpressionError(
            f"cannot compare {_json_type(a)} {symbol} {_json_type(b)} ({a!r} {symbol} {b!r})"
        )

    return compare


def _contains(item: Any, container: Any) -> bool:
    if isinstance(container, str):
        if not isinstance(item, str):
            raise ExpressionError(f"'in' a string needs a string on the left, got {_json_type(item)}")
        return item in container
    if isinstance(container, list):
        return any(_json_equal(item, element) for element in container)
    if isinstance(container, dict):
        return item in container
    raise ExpressionError(f"'in' needs a list, string or object on the right, got {_json_type(container)}")


def _arithmetic(op: Callable[[Any, Any], Any], symbol: str) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if _is_number(a) and _is_number(b):
            try:
                return op(a, b)
            except ZeroDivisionError:
                raise ExpressionError(f"division by zero in {a!r} {symbol} {b!r}") from None
        if symbol == "+" and type(a) is type(b) and type(a) in (str, list):
            return a + b
        raise ExpressionError(f"cannot apply {symbol} to {_json_type(a)} and {_json_type(b)}")

    return apply


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "==": _json_equal,
    "!=": lambda a, b: not _json_equal(a, b),
    "<": _ordered(operator.lt, "<"),
    "<=": _ordered(operator.le, "<="),
    ">": _ordered(operator.gt, ">"),
    ">=": _ordered(operator.ge, ">="),
    "in": _contains,
    "not in": lambda a, b: not _contains(a, b),
    "+": _arithmetic(operator.add, "+"),
    "-": _arithmetic(operator.sub, "-"),
    "*": _arithmetic(operator.mul, "*"),
    "/": _arithmetic(operator.truediv, "/"),
    "%": _arithmetic(operator.mod, "%"),
}
_COMPARISONS = {"==", "!=", "<", "<=", ">", ">=", "in", "not in"}


class _Node:
    """Parse tree; compiled to closures in two flavours (strict and lenient)."""

    __slots__ = ("children", "kind", "value")

    def __init__(self, kind: str, value: Any = None, children: tuple[_Node, ...] = ()) -> None:
        self.kind = kind
        self.value = value
        self.children = children


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def error(self, token: _Token, message: str) -> ExpressionSyntaxError:
        return ExpressionSyntaxError(self.source, token.pos, message)

    def expect(self, text: str) -> None:
        token = self.take()
        if token.kind != "op" or token.text != text:
            found = "end of expression" if token.kind == "end" else repr(token.text)
            raise self.error(token, f"expected {text!r}, found {found}")

    def parse(self) -> _Node:
        if self.peek().kind == "end":
            raise self.error(self.peek(), "empty expression")
        node = self.parse_or()
        token = self.peek()
        if token.kind != "end":
            raise self.error(token, f"unexpected {token.text!r}")
        return node

    def _is(self, text: str) -> bool:
        token = self.peek()
        return token.kind == "op" and token.text == text

    def parse_or(self) -> _Node:
        node = self.parse_and()
        while self._is("or"):
            self.take()
            node = _Node("or", children=(node, self.parse_and()))
        return node

    def parse_and(self) -> _Node:
        node = self.parse_not()
        while self._is("and"):
            self.take()
            node = _Node("and", children=(node, self.parse_not()))
        return node

    def parse_not(self) -> _Node:
        if self._is("not"):
            self.take()
            return _Node("not", children=(self.parse_not(),))
        return self.parse_compare()

    def _comparison_op(self) -> str | None:
        token = self.peek()
        if token.kind != "op":
            return None
        if token.text in _COMPARISONS:
            return token.text
        if token.text == "not":
            nxt = self.tokens[self.i + 1]
            if nxt.kind == "op" and nxt.text == "in":
                return "not in"
        return None

    def parse_compare(self) -> _Node:
        node = self.parse_sum()
        op = self._comparison_op()
        if op is None:
            return node
        self.take()
        if op == "not in":
            self.take()
        node = _Node("binary", op, (node, self.parse_sum()))
        if self._comparison_op() is not None:
            raise self.error(self.peek(), "comparisons do not chain; join them with 'and'")
        return node

    def parse_sum(self) -> _Node:
        node = self.parse_term()
        while self.peek().kind == "op" and self.peek().text in "+-":
            op = self.take().text
            node = _Node("binary", op, (node, self.parse_term()))
        return node

    def parse_term(self) -> _Node:
        node = self.parse_unary()
        while self.peek().kind == "op" and self.peek().text in ("*", "/", "%"):
            op = self.take().text
            node = _Node("binary", op, (node, self.parse_unary()))
        return node

    def parse_unary(self) -> _Node:
        if self._is("-"):
            self.take()
            return _Node("neg", children=(self.parse_unary(),))
        return self.parse_primary()

    def parse_primary(self) -> _Node:
        token = self.take()
        if token.kind == "const":
            return _Node("const", token.value)
        if token.kind == "path":
            return _Node("path", token.value)
        if token.kind == "op" and token.text == "(":
            node = self.parse_or()
            self.expect(")")
            return node
        if token.kind == "op" and token.text == "[":
            items: list[_Node] = []
            if not self._is("]"):
                items.append(self.parse_or())
                while self._is(","):
                    self.take()
                    items.append(self.parse_or())
            self.expect("]")
            return _Node("list", children=tuple(items))
        found = "end of expression" if token.kind == "end" else repr(token.text)
        raise self.error(token, f"expected a value, found {found}")


def _compile(node: _Node, lenient: bool) -> Evaluator:
    kind = node.kind
    if kind == "const":
        value = node.value
        return lambda ctx: value
    if kind == "path":
        path: CompiledPath = node.value
        resolve = path.resolve
        if not lenient:
            return resolve

        def resolve_or_null(ctx: RunContext) -> Any:
            try:
                return resolve(ctx)
            except PathNotFound:
                return None

        return resolve_or_null
    children = [_compile(child, lenient) for child in node.children]
    if kind == "list":
        return lambda ctx: [child(ctx) for child in children]
    if kind == "not":
        (inner,) = children
        return lambda ctx: not _truthy(inner(ctx))
    if kind == "neg":
        (inner,) = children
        negate = _arithmetic(operator.sub, "-")
        return lambda ctx: negate(0, inner(ctx))
    left, right = children
    if kind == "and":
        return lambda ctx: _truthy(left(ctx)) and _truthy(right(ctx))
    if kind == "or":
        return lambda ctx: _truthy(left(ctx)) or _truthy(right(ctx))
    apply = _BINARY[node.value]
    return lambda ctx: apply(left(ctx), right(ctx))


def _paths(node: _Node) -> list[CompiledPath]:
    if node.kind == "path":
        return [node.value]
    return [path for child in node.children for path in _paths(child)]


class Expression:
    """A parsed expression. ``paths`` lists the JSONPath operands it reads."""

    __slots__ = ("evaluate", "evaluate_lenient", "paths", "source")

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise ExpressionSyntaxError(str(source), 0, "an expression must be a string")
        tree = _Parser(source).parse()
        self.source = source
        self.paths: tuple[CompiledPath, ...] = tuple(_paths(tree))
        self.evaluate: Evaluator = _compile(tree, lenient=False)
        """Evaluate on a run; a missing singular path raises ``PathNotFound``."""
        self.evaluate_lenient: Evaluator = _compile(tree, lenient=True)
        """Evaluate on a run; a missing singular path reads as ``null``."""

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)
