"""The compiler reports every problem at once, each by node id and field."""

from __future__ import annotations

from typing import Any

import pytest

from agent.workflow import CompileError, Plan
from tests.helpers import Compile, graph, issues_of, transform


def condition(node_id: str, rules: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "condition", "config": {"conditions": rules, **config}}


def test_a_valid_graph_compiles_to_a_topological_plan(compile_graph: Compile) -> None:
    plan = compile_graph(graph([transform("c"), transform("a"), transform("b")], [("a", "b"), ("b", "c")]))
    assert isinstance(plan, Plan)
    assert [node.id for node in plan.nodes] == ["a", "b", "c"]
    assert plan.entries == (0,)


def test_duplicate_ids(compile_graph: Compile) -> None:
    assert issues_of(compile_graph, graph([transform("a"), transform("a")])) == [("duplicate_id", "a", "id")]


def test_unknown_type_names_node_and_field(compile_graph: Compile) -> None:
    document = graph([{"id": "infer", "type": "no_such_type"}])
    with pytest.raises(CompileError) as caught:
        compile_graph(document)
    (issue,) = caught.value.issues
    assert (issue.code, issue.node, issue.field) == ("unknown_type", "infer", "type")
    assert "'no_such_type'" in issue.message
    assert "transform" in issue.message


def test_dangling_edges_name_the_edge_field(compile_graph: Compile) -> None:
    document = graph([transform("a")], [("a", "ghost"), ("phantom", "a")])
    assert issues_of(compile_graph, document) == [
        ("dangling_edge", None, "edges[0].target"),
        ("dangling_edge", None, "edges[1].source"),
    ]


def test_repeated_edge(compile_graph: Compile) -> None:
    document = graph([transform("a"), transform("b")], [("a", "b"), ("a", "b")])
    assert issues_of(compile_graph, document) == [("duplicate_edge", "a", "edges[1]")]


def test_cycle_names_every_node_on_it(compile_graph: Compile) -> None:
    document = graph(
        [transform("start"), transform("x"), transform("y"), transform("z")],
        [("start", "x"), ("x", "y"), ("y", "z"), ("z", "x")],
    )
    with pytest.raises(CompileError) as caught:
        compile_graph(document)
    (issue,) = caught.value.issues
    assert issue.code == "cycle"
    assert "x → y → z → x" in issue.message


def test_self_loop_and_two_separate_cycles(compile_graph: Compile) -> None:
    document = graph(
        [transform("a"), transform("b"), transform("c"), transform("d"), transform("e")],
        [("a", "a"), ("b", "c"), ("c", "b"), ("d", "e"), ("e", "d")],
    )
    codes = [issue for issue in issues_of(compile_graph, document) if issue[0] == "cycle"]
    assert len(codes) == 3


def test_unreachable_node_behind_a_branch_nobody_routes_to(compile_graph: Compile) -> None:
    document = graph(
        [
            transform("start"),
            condition("route", [{"when": "$.x > 1", "then": "big"}, {"else": "small"}]),
            transform("big"),
            transform("small"),
            transform("forgotten"),
            transform("after_forgotten"),
        ],
        [
            ("start", "route"),
            ("route", "big"),
            ("route", "small"),
            ("route", "forgotten"),
            ("forgotten", "after_forgotten"),
        ],
    )
    assert issues_of(compile_graph, document) == [
        ("unreachable", "forgotten", None),
        ("unreachable", "after_forgotten", None),
    ]


def test_bad_jsonpath_names_node_and_field(compile_graph: Compile) -> None:
    document = graph([transform("a", {"price": "$.items[", "ok": "$.fine"})])
    with pytest.raises(CompileError) as caught:
        compile_graph(document)
    (issue,) = caught.value.issues
    assert (issue.code, issue.node, issue.field) == ("config", "a", "config.output")
    assert "at price: invalid JSONPath '$.items['" in issue.message


def test_expression_that_does_not_parse(compile_graph: Compile) -> None:
    document = graph(
        [condition("route", [{"when": "$.order.amount >", "then": "b"}]), transform("b")],
        [("route", "b")],
    )
    with pytest.raises(CompileError) as caught:
        compile_graph(document)
    (issue,) = caught.value.issues
    assert (issue.code, issue.node, issue.field) == ("config", "route", "config.conditions[0].when")
    assert "position 16" in issue.message


def test_expression_that_references_nothing(compile_graph: Compile) -> None:
    document = graph(
        [condition("route", [{"when": "1000 > 5", "then": "b"}]), transform("b")], [("route", "b")]
    )
    with pytest.raises(CompileError) as caught:
        compile_graph(document)
    (issue,) = caught.value.issues
    assert (issue.node, issue.field) == ("route", "config.conditions[0].when")
    assert "references nothing" in issue.message


def test_paths_to_missing_or_downstream_nodes(compile_graph: Compile) -> None:
    document = graph(
        [
            transform("a", {"from_b": "$.nodes.b.value"}),
            transform("b", {"ghost": "$.nodes.ghost", "me": "$.nodes.b"}),
            transform("c", {"side": "$.nodes.d"}),
            transform("d"),
        ],
        [("a", "b"), ("a", "c"), ("a", "d")],
    )
    found = issues_of(compile_graph, document)
    assert found == [
        ("reference", "a", "config.output"),
        ("reference", "b", "config.output"),
        ("reference", "b", "config.output"),
        ("reference", "c", "config.output"),
    ]


def test_config_not_matching_the_node_schema(compile_graph: Compile) -> None:
    document = graph(
        [
            {"id": "v", "type": "data_validation", "config": {"schema": "order_schema_v1", "colour": "red"}},
            {"id": "c", "type": "cache", "config": {"key": [], "node": {"type": "transform"}}},
            {"id": "e", "type": "emit", "config": {"event": "bad event name!"}},
        ]
    )
    assert issues_of(compile_graph, document) == [
        ("config", "v", "config.colour"),
        ("config", "c", "config.key"),
        ("config", "e", "config.event"),
    ]


def test_missing_named_schema(compile_graph: Compile) -> None:
    document = graph([{"id": "v", "type": "data_validation", "config": {"schema": "order_schema_v9"}}])
    with pytest.raises(CompileError) as caught:
        compile_graph(document)
    (issue,) = caught.value.issues
    assert (issue.node, issue.field) == ("v", "config.schema")
    assert "schema 'order_schema_v9' not found" in issue.message


def test_branch_targets_that_are_not_successors(compile_graph: Compile) -> None:
    document = graph(
        [
            condition("route", [{"when": "$.x > 1", "then": "b"}, {"else": "nowhere"}]),
            transform("b"),
            {**transform("fragile"), "on_error": {"policy": "route", "target": "b"}},
        ],
        [("route", "b")],
    )
    assert issues_of(compile_graph, document) == [
        ("branch_target", "route", "config.conditions[1].else"),
        ("branch_target", "fragile", "on_error.target"),
    ]


def test_document_shape_errors(compile_graph: Compile) -> None:
    document = {
        "id": "bad id with spaces",
        "nodes": [{"id": "1starts_with_digit", "type": "transform"}, {"type": "transform"}, "nope"],
        "edges": [{"source": "a"}],
        "colour": "red",
    }
    found = issues_of(compile_graph, document)
    assert ("schema", None, "id") in found
    assert ("schema", None, "colour") in found
    assert ("schema", "1starts_with_digit", "id") in found
    assert ("schema", None, "nodes[1].id") in found
    assert ("schema", None, "nodes[2]") in found
    assert ("schema", None, "edges[0].target") in found


def test_every_problem_is_reported_at_once(compile_graph: Compile) -> None:
    document = graph(
        [
            transform("a"),
            transform("a"),
            {"id": "m", "type": "mystery"},
            transform("p", {"x": "$.["}),
            condition("r", [{"when": "$.v ==", "then": "p"}]),
            transform("loop1"),
            transform("loop2"),
        ],
        [("a", "ghost"), ("r", "p"), ("loop1", "loop2"), ("loop2", "loop1")],
    )
    codes = {code for code, _, _ in issues_of(compile_graph, document)}
    assert codes == {"duplicate_id", "unknown_type", "dangling_edge", "config", "cycle"}


def test_a_plan_runs_many_times(compile_graph: Compile, executor: Any) -> None:
    plan = compile_graph(graph([transform("a", {"v": "$.v"})]))
    results = [executor.run(plan, {"v": i}).outputs["a"]["v"] for i in range(50)]
    assert results == list(range(50))
