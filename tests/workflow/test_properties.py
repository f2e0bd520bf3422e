"""Property tests over random graphs: every edge is respected, every cycle is found."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.workflow import CompileError, Executor
from tests.helpers import Compile
from tests.workflow.testnodes import Record

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str]]]:
    """A random DAG: edges go from lower to higher rank; ids and declaration order shuffled."""
    n = draw(st.integers(1, 12))
    ranked = [f"n{i}" for i in range(n)]
    pairs = [(ranked[i], ranked[j]) for i in range(n) for j in range(i + 1, n)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    declared = draw(st.permutations(ranked))
    return list(declared), edges


@st.composite
def digraphs(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str]]]:
    """A random directed graph, cycles and self-loops allowed."""
    n = draw(st.integers(1, 9))
    ids = [f"n{i}" for i in range(n)]
    pairs = [(a, b) for a in ids for b in ids]
    return ids, draw(st.lists(st.sampled_from(pairs), unique=True, max_size=20))


def record_graph(ids: list[str], edges: list[tuple[str, str]]) -> dict[str, Any]:
    preds: dict[str, list[str]] = {node_id: [] for node_id in ids}
    for source, target in edges:
        preds[target].append(source)
    return {
        "id": "random",
        "nodes": [
            {
                "id": node_id,
                "type": "test_record",
                "config": {"after": [f"$.nodes.{p}" for p in preds[node_id]]},
            }
            for node_id in ids
        ],
        "edges": [{"source": s, "target": t} for s, t in edges],
    }


def has_cycle(ids: list[str], edges: list[tuple[str, str]]) -> bool:
    indegree = dict.fromkeys(ids, 0)
    for _, target in edges:
        indegree[target] += 1
    ready = [node_id for node_id, degree in indegree.items() if degree == 0]
    removed = 0
    while ready:
        node_id = ready.pop()
        removed += 1
        for source, target in edges:
            if source == node_id:
                indegree[target] -= 1
                if indegree[target] == 0:
                    ready.append(target)
    return removed < len(ids)


@SETTINGS
@given(dags())
def test_executor_respects_every_edge(
    compile_graph: Compile, executor: Executor, dag: tuple[list[str], list[tuple[str, str]]]
) -> None:
    ids, edges = dag
    plan = compile_graph(record_graph(ids, edges))
    result = executor.run(plan, {})
    assert result.ok, result.error
    assert set(result.nodes) == set(ids)
    times = Record.log.pop(result.run_id)
    for source, target in edges:
        assert times[source][1] < times[target][0], f"{target} started before {source} ended"


@SETTINGS
@given(digraphs())
def test_cycles_are_always_found(
    compile_graph: Compile, graph_: tuple[list[str], list[tuple[str, str]]]
) -> None:
    ids, edges = graph_
    document = {
        "id": "random",
        "nodes": [{"id": node_id, "type": "transform", "config": {"output": 1}} for node_id in ids],
        "edges": [{"source": s, "target": t} for s, t in edges],
    }
    if not has_cycle(ids, edges):
        compile_graph(document)
        return
    with pytest.raises(CompileError) as caught:
        compile_graph(document)
    cycles = [issue for issue in caught.value.issues if issue.code == "cycle"]
    assert cycles
    edge_set = set(edges)
    for issue in cycles:
        path = issue.message.split(": ", 1)[1].split(" → ")
        assert path[0] == path[-1]
        assert all((a, b) in edge_set for a, b in itertools.pairwise(path)), issue.message
