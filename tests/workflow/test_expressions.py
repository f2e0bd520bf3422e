"""The expression language: operators, JSON semantics, missing paths and syntax errors."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agent.workflow import Expression, ExpressionError, ExpressionSyntaxError, PathNotFound, RunContext

DOC = {
    "order": {"amount": 1500, "items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 0}]},
    "customer": {"type": "VIP", "tags": ["gold", "eu"]},
    "flag": True,
    "none": None,
    "ratio": 0.25,
}


def ctx(document: dict[str, Any] | None = None, outputs: dict[str, Any] | None = None) -> RunContext:
    context = RunContext(run_id="r", workflow_id="w", workflow_version=1, input=document or DOC)
    context.outputs.update(outputs or {})
    return context


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("$.order.amount > 1000", True),
        ("$.order.amount >= 1500", True),
        ("$.order.amount < 1500", False),
        ("$.order.amount <= 1499.5", False),
        ("$.customer.type == 'VIP'", True),
        ('$.customer.type != "VIP"', False),
        ("'gold' in $.customer.tags", True),
        ("'silver' not in $.customer.tags", True),
        ("'IP' in $.customer.type", True),
        ("'amount' in $.order", True),
        ("$.flag and $.order.amount > 1000", True),
        ("$.none or $.ratio", True),
        ("not $.flag", False),
        ("not not $.flag", True),
        ("$.none == null", True),
        ("$.flag == true", True),
        ("$.flag == 1", False),  # JSON: a boolean is not a number
        ("1 == 1.0", True),
        ("$.order.items[1].qty == 0", True),
        ("$.order.items[-1].sku == 'B'", True),
        ("$.order.amount * 2 - 1000 / 4 == 2750", True),
        ("-$.ratio < 0", True),
        ("$.order.amount % 7", 1500 % 7),
        ("($.order.amount > 1000 or $.flag) and not ($.ratio > 1)", True),
        ("$.customer.type in ['VIP', 'gold']", True),
        ("$.order['amount'] == 1500", True),
        ("'a\\'b' == \"a'b\"", True),
        ("1e3 == 1000", True),
        ("True and not False and None == null", True),
        ("$.order.items[?@.qty > 0].sku == ['A']", True),  # non-singular paths give lists
    ],
)
def test_truth_table(source: str, expected: Any) -> None:
    assert Expression(source).evaluate(ctx()) == expected


def test_and_or_short_circuit_past_a_missing_path() -> None:
    assert Expression("$.flag or $.missing.path > 1").evaluate(ctx()) is True
    assert Expression("not $.flag and $.missing.path > 1").evaluate(ctx()) is False


def test_node_outputs_are_addressed_under_nodes() -> None:
    context = ctx(outputs={"score": {"value": 0.9}})
    assert Expression("$.nodes.score.value > 0.5").evaluate(context) is True


@pytest.mark.parametrize(
    "source", ["$.customer.segment == 'VIP'", "$.order.items[5].qty == 1", "$.order.amount.x == 1"]
)
def test_missing_path_is_an_error_naming_the_path(source: str) -> None:
    path = source.split()[0]
    with pytest.raises(PathNotFound) as caught:
        Expression(source).evaluate(ctx())
    assert caught.value.path == path
    assert Expression(source).evaluate_lenient(ctx()) is False


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("$.customer.type > 3", "cannot compare string > number"),
        ("$.none < 1", "cannot compare null < number"),
        ("$.flag + 1", "cannot apply + to boolean and number"),
        ("$.order.amount / 0", "division by zero"),
        ("1 in 5", "'in' needs a list"),
        ("1 in 'abc'", "needs a string on the left"),
    ],
)
def test_type_errors_are_expression_errors(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(message)):
        Expression(source).evaluate(ctx())


@pytest.mark.parametrize(
    ("source", "position"),
    [
        ("", 0),
        ("$.a >", 5),
        ("$.a > > 1", 6),
        ("($.a > 1", 8),
        ("$.a == 1)", 8),
        ("amount > 1", 0),
        ("$.a === 1", 6),
        ("$.a[ > 1", 0),
        ("1 < $.a < 3", 8),
        ("$.a == 'unterminated", 7),
        ("$.a & 1", 4),
    ],
)
def test_syntax_errors_name_the_position(source: str, position: int) -> None:
    with pytest.raises(ExpressionSyntaxError) as caught:
        Expression(source)
    assert caught.value.position == position
    assert repr(source) in str(caught.value)


def test_never_evaluates_python() -> None:
    for source in ["__import__('os').system('true')", "[x for x in 1]", "lambda: 1", "$.a if 1 else 2"]:
        with pytest.raises(ExpressionSyntaxError):
            Expression(source)
    with pytest.raises(PathNotFound):  # a key named __class__, not the Python attribute
        Expression("$.order.__class__ == 1").evaluate(ctx())


def test_lenient_ordering_against_a_missing_value_is_still_a_type_error() -> None:
    with pytest.raises(ExpressionError, match="cannot compare null > number"):
        Expression("$.order.missing > 1").evaluate_lenient(ctx())


def test_paths_lists_the_operands() -> None:
    expression = Expression("$.a > 1 and $.nodes.n.v in $.b")
    assert [p.text for p in expression.paths] == ["$.a", "$.nodes.n.v", "$.b"]
    assert [p.node_ref for p in expression.paths] == [None, "n", None]
