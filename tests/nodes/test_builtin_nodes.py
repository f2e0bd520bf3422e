"""The built-in node types, each through a compiled graph as users run them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from agent.workflow import CompileError, Executor
from tests.helpers import Compile, graph


def one(node_id: str, type_: str, **config: Any) -> dict[str, Any]:
    return graph([{"id": node_id, "type": type_, "config": config}])


ORDER = {"product": {"id": "P1001"}, "quantity": 3}


class TestDataValidation:
    def test_named_schema_passes_the_value_through(self, compile_graph: Compile, executor: Executor) -> None:
        plan = compile_graph(one("v", "data_validation", schema="order_schema_v1"))
        result = executor.run(plan, ORDER)
        assert result.ok
        assert result.outputs["v"] == ORDER

    def test_every_violation_is_listed_with_its_path(
        self, compile_graph: Compile, executor: Executor
    ) -> None:
        plan = compile_graph(one("v", "data_validation", schema="order_schema_v1"))
        result = executor.run(plan, {"product": {"id": 7}, "quantity": -1})
        assert result.error is not None
        assert result.error.kind == "ValidationFailed"
        assert not result.error.retryable
        assert "$.product.id: 7 is not of type 'string'" in result.error.message
        assert "$.quantity: -1 is less than the minimum of 1" in result.error.message

    def test_inline_schema_on_a_sub_path(self, compile_graph: Compile, executor: Executor) -> None:
        plan = compile_graph(
            one("v", "data_validation", path="$.reading", schema={"type": "number", "maximum": 10})
        )
        assert executor.run(plan, {"reading": 3}).outputs["v"] == 3
        assert not executor.run(plan, {"reading": 11}).ok
        assert "path $.reading not found" in (executor.run(plan, {}).error.message)  # type: ignore[union-attr]

    def test_yaml_schema_files_and_bad_schemas(self, tmp_path: Path, compile_graph: Compile) -> None:
        (tmp_path / "part_v1.yaml").write_text("type: object\nrequired: [serial]\n")
        (tmp_path / "broken_v1.json").write_text("{not json")
        (tmp_path / "invalid_v1.json").write_text(json.dumps({"type": "no-such-type"}))
        compile_graph(one("v", "data_validation", schema="part_v1"), schema_dirs=(tmp_path,))
        for name, message in [
            ("broken_v1", "cannot be read"),
            ("invalid_v1", "not a valid JSON Schema"),
            ("../etc/passwd", "may use only"),
        ]:
            with pytest.raises(CompileError, match=message):
                compile_graph(one("v", "data_validation", schema=name), schema_dirs=(tmp_path,))


class TestTransform:
    def test_paths_expressions_literals_and_escapes(self, compile_graph: Compile, executor: Executor) -> None:
        plan = compile_graph(
            one(
                "t",
                "transform",
                output={
                    "sku": "$.product.id",
                    "total": {"$expr": "$.quantity * 2.5"},
                    "literal": "$$.not.a.path",
                    "list": ["$.quantity", 1, None, {"nested": "$.product"}],
                    "text": "plain",
                },
            )
        )
        assert executor.run(plan, ORDER).outputs["t"] == {
            "sku": "P1001",
            "total": 7.5,
            "literal": "$.not.a.path",
            "list": [3, 1, None, {"nested": {"id": "P1001"}}],
            "text": "plain",
        }

    def test_missing_path_fails_with_the_path(self, compile_graph: Compile, executor: Executor) -> None:
        plan = compile_graph(one("t", "transform", output={"x": "$.product.colour"}))
        result = executor.run(plan, ORDER)
        assert result.error is not None
        assert result.error.kind == "PathNotFound"
        assert "$.product.colour" in result.error.message


class TestCondition:
    def test_else_must_be_last_and_rules_well_formed(self, compile_graph: Compile) -> None:
        bad = [
            ([{"else": "a"}, {"when": "$.x", "then": "a"}], "'else' must be the last rule"),
            ([{"when": "$.x"}], "needs both 'when' and 'then'"),
            ([{"when": "$.x", "then": "a", "else": "a"}], "has no 'when' or 'then'"),
        ]
        for rules, message in bad:
            document = graph(
                [
                    {"id": "r", "type": "condition", "config": {"conditions": rules}},
                    {"id": "a", "type": "transform", "config": {"output": 1}},
                ],
                [("r", "a")],
            )
            with pytest.raises(CompileError, match=message):
                compile_graph(document)


class TestCache:
    def plan(self, compile_graph: Compile, **config: Any) -> Any:
        return compile_graph(
            one(
                "faq",
                "cache",
                key=["$.q"],
                node={"type": "transform", "config": {"output": "$.answer"}},
                **config,
            )
        )

    def test_hit_returns_the_first_answer(self, compile_graph: Compile, executor: Executor) -> None:
        plan = self.plan(compile_graph)
        assert executor.run(plan, {"q": "hours", "answer": "9-17"}).outputs["faq"] == "9-17"
        assert executor.run(plan, {"q": "hours", "answer": "changed"}).outputs["faq"] == "9-17"
        assert executor.run(plan, {"q": "returns", "answer": "30 days"}).outputs["faq"] == "30 days"
        impl = plan.node("faq").impl
        assert (impl.hits, impl.misses) == (1, 2)

    def test_size_bound_evicts_least_recently_used(self, compile_graph: Compile, executor: Executor) -> None:
        plan = self.plan(compile_graph, maxsize=2)
        for q in ("a", "b", "a", "c"):  # c evicts b, the least recently used
            executor.run(plan, {"q": q, "answer": q})
        assert executor.run(plan, {"q": "a", "answer": "new"}).outputs["faq"] == "a"
        assert executor.run(plan, {"q": "b", "answer": "new"}).outputs["faq"] == "new"

    def test_ttl_expires_entries(self, compile_graph: Compile, executor: Executor) -> None:
        plan = self.plan(compile_graph, ttl_s=0.05)
        executor.run(plan, {"q": "a", "answer": "old"})
        time.sleep(0.1)
        assert executor.run(plan, {"q": "a", "answer": "new"}).outputs["faq"] == "new"

    def test_keys_distinguish_json_types(self, compile_graph: Compile, executor: Executor) -> None:
        plan = self.plan(compile_graph)
        for q in (1, True, "1", 1.5):
            assert executor.run(plan, {"q": q, "answer": repr(q)}).outputs["faq"] == repr(q)

    def test_failures_are_not_cached(self, compile_graph: Compile, executor: Executor) -> None:
        plan = self.plan(compile_graph)
        assert not executor.run(plan, {"q": "a"}).ok
        assert executor.run(plan, {"q": "a", "answer": "now"}).outputs["faq"] == "now"

    def test_nested_node_errors_name_the_nested_field(self, compile_graph: Compile) -> None:
        document = one("faq", "cache", key=["$.q"], node={"type": "transform", "config": {"output": "$.["}})
        with pytest.raises(CompileError) as caught:
            compile_graph(document)
        (issue,) = caught.value.issues
        assert (issue.node, issue.field) == ("faq", "config.node.config.output")
        document = one("faq", "cache", key=["$.q"], node={"type": "nope"})
        with pytest.raises(CompileError) as caught:
            compile_graph(document)
        assert [(i.code, i.field) for i in caught.value.issues] == [("unknown_type", "config.node.type")]

    def test_nested_references_are_checked(self, compile_graph: Compile) -> None:
        document = one(
            "faq", "cache", key=["$.q"], node={"type": "transform", "config": {"output": "$.nodes.ghost"}}
        )
        with pytest.raises(CompileError, match="reads node 'ghost', which does not exist"):
            compile_graph(document)


class TestEmit:
    def test_event_carries_lineage(self, compile_graph: Compile, executor: Executor) -> None:
        plan = compile_graph(one("e", "emit", event="part_rejected", payload={"score": "$.score"}))
        result = executor.run(plan, {"score": 0.93}, run_id="run-1")
        (event,) = result.events
        assert event["run_id"] == "run-1"
        assert event["node"] == "e"
        assert event["workflow"] == {"id": "test", "version": 1}
        assert event["payload"] == {"score": 0.93}
        assert result.outputs["e"] == event
