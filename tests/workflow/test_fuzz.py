"""Garbage in, clear errors out: the parser and compiler never fail with anything but their own
errors, whatever they are given."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.workflow import CompileError, Expression, ExpressionSyntaxError, Plan, SpecError, parse_document
from tests.helpers import Compile

EXPRESSION_ALPHABET = st.sampled_from(
    [*list("$.[]()'\"=!<>+-*/% ,?@"), "and", "or", "not", "in", "a", "1", "null", "true"]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
node_types = st.sampled_from(["transform", "condition", "cache", "emit", "data_validation", "bogus"])
nodes = st.fixed_dictionaries(
    {"id": st.sampled_from(["a", "b", "c", "d", "1x"]), "type": node_types},
    optional={
        "config": st.dictionaries(
            st.sampled_from(["output", "conditions", "key", "node", "event", "schema", "path", "missing"]),
            json_values,
            max_size=3,
        ),
        "timeout_s": json_values,
        "on_error": json_values,
        "retry": json_values,
    },
)
graphs = st.fixed_dictionaries(
    {"id": st.sampled_from(["g", "bad id"]), "nodes": st.lists(nodes, max_size=5) | json_values},
    optional={
        "edges": st.lists(
            st.fixed_dictionaries(
                {
                    "source": st.sampled_from(["a", "b", "c", "z"]),
                    "target": st.sampled_from(["a", "b", "c", "z"]),
                }
            ),
            max_size=5,
        )
        | json_values,
        "version": json_values,
        "defaults": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EXPRESSION_ALPHABET, max_size=12).map(" ".join) | st.text(max_size=30))
def test_expression_parser_only_raises_syntax_errors(source: str) -> None:
    with contextlib.suppress(ExpressionSyntaxError):
        Expression(source)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graphs | json_values)
def test_compiler_only_raises_compile_errors(compile_graph: Compile, document: Any) -> None:
    try:
        plan = compile_graph(document)
    except CompileError as exc:
        issues = exc.issues
    else:
        assert isinstance(plan, Plan)
        return
    assert issues
    assert all(issue.message for issue in issues)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.sampled_from(["x.json", "x.yaml"]))
def test_document_parser_only_raises_spec_errors(text: str, name: str) -> None:
    with contextlib.suppress(SpecError):
        parse_document(text, source=name)
