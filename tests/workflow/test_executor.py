"""Running plans: routing, skipping, parallelism, timeouts, error policies and retries."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from agent.workflow import Executor, InvalidInput
from tests.helpers import Compile, graph, transform


def node(node_id: str, type_: str, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": type_, "config": config}


def router(node_id: str, rules: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    return node(node_id, "condition", conditions=rules, **config)


BRIEF_RULES = [
    {"when": "$.order.amount > 1000", "then": "premium"},
    {"when": "$.customer.type == 'VIP'", "then": "vip"},
    {"else": "standard"},
]


@pytest.fixture
def brief_plan(compile_graph: Compile) -> Any:
    return compile_graph(
        graph(
            [
                router("route", BRIEF_RULES),
                transform("premium"),
                transform("vip"),
                transform("standard"),
                transform("done", {"branch": "$.nodes.route.branch"}),
            ],
            [
                ("route", "premium"),
                ("route", "vip"),
                ("route", "standard"),
                ("premium", "done"),
                ("vip", "done"),
                ("standard", "done"),
            ],
        )
    )


@pytest.mark.parametrize(
    ("amount", "customer", "branch"),
    [
        (1500, "VIP", "premium"),  # first match wins
        (1500, "standard", "premium"),
        (1000, "VIP", "vip"),  # > is strict
        (10, "VIP", "vip"),
        (10, "standard", "standard"),
        (1000, "vip", "standard"),  # strings compare exactly
    ],
)
def test_brief_rules_truth_table(
    brief_plan: Any, executor: Executor, amount: int, customer: str, branch: str
) -> None:
    result = executor.run(brief_plan, {"order": {"amount": amount}, "customer": {"type": customer}})
    assert result.ok
    assert result.branches == {"route": branch}
    assert result.outputs["done"] == {"branch": branch}
    statuses = {name: result.nodes[name].status for name in ("premium", "vip", "standard")}
    assert statuses == {name: "succeeded" if name == branch else "skipped" for name in statuses}


def test_no_rule_matches_and_no_else_skips_everything_downstream(
    compile_graph: Compile, executor: Executor
) -> None:
    plan = compile_graph(
        graph(
            [router("route", [{"when": "$.x > 1", "then": "a"}]), transform("a"), transform("after_a")],
            [("route", "a"), ("a", "after_a")],
        )
    )
    result = executor.run(plan, {"x": 0})
    assert result.ok
    assert result.branches == {"route": None}
    assert (result.nodes["a"].status, result.nodes["after_a"].status) == ("skipped", "skipped")


def test_a_join_runs_when_any_input_is_active_and_skips_when_all_are_skipped(
    compile_graph: Compile, executor: Executor
) -> None:
    plan = compile_graph(
        graph(
            [
                router("r", [{"when": "$.go", "then": "left"}, {"else": "right"}]),
                transform("left"),
                transform("right"),
                transform("side"),
                transform("join_lr"),
                transform("join_left_side"),
            ],
            [
                ("r", "left"),
                ("r", "right"),
                ("left", "join_lr"),
                ("right", "join_lr"),
                ("left", "join_left_side"),
                ("side", "join_left_side"),
            ],
        )
    )
    taken = executor.run(plan, {"go": True})
    assert taken.nodes["join_lr"].status == "succeeded"
    assert taken.nodes["join_left_side"].status == "succeeded"
    not_taken = executor.run(plan, {"go": False})
    assert not_taken.nodes["left"].status == "skipped"
    assert not_taken.nodes["join_lr"].status == "succeeded"  # right is active
    assert not_taken.nodes["join_left_side"].status == "succeeded"  # side is active


def test_missing_path_is_an_error_naming_it_or_null_when_asked(
    compile_graph: Compile, executor: Executor
) -> None:
    strict = compile_graph(
        graph(
            [router("r", BRIEF_RULES), transform("premium"), transform("vip"), transform("standard")],
            [("r", "premium"), ("r", "vip"), ("r", "standard")],
        )
    )
    result = executor.run(strict, {"order": {"amount": 10}})
    assert not result.ok
    assert result.error is not None
    assert result.error.node == "r"
    assert "$.customer.type" in result.error.message
    assert "conditions[1].when" in result.error.message

    lenient = compile_graph(
        graph(
            [
                router("r", BRIEF_RULES, missing="null"),
                transform("premium"),
                transform("vip"),
                transform("standard"),
            ],
            [("r", "premium"), ("r", "vip"), ("r", "standard")],
        )
    )
    assert executor.run(lenient, {"order": {"amount": 10}}).branches == {"r": "standard"}


def test_independent_nodes_run_in_parallel(compile_graph: Compile, executor: Executor) -> None:
    plan = compile_graph(
        graph(
            [
                transform("start"),
                node("left", "test_rendezvous"),
                node("right", "test_rendezvous"),
                transform("join"),
            ],
            [("start", "left"), ("start", "right"), ("left", "join"), ("right", "join")],
        )
    )
    result = executor.run(plan, {})
    assert result.ok, result.error
    assert result.outputs["left"] != result.outputs["right"]  # two threads were inside at once


def test_timeout_fails_the_run_and_names_the_node(compile_graph: Compile, executor: Executor) -> None:
    plan = compile_graph(
        graph(
            [{**node("slow", "test_sleep", seconds=5.0), "timeout_s": 0.1}, transform("after")],
            [("slow", "after")],
        )
    )
    result = executor.run(plan, {})
    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.node, result.error.kind) == ("slow", "NodeTimeout")
    assert result.nodes["slow"].status == "timed_out"
    assert result.nodes["after"].status == "cancelled"
    assert result.duration_s < 5.0  # the run stopped waiting; it did not sit out the sleep


def test_graph_default_timeout_applies_to_every_node(compile_graph: Compile, executor: Executor) -> None:
    plan = compile_graph(graph([node("slow", "test_sleep", seconds=2.0)], defaults={"timeout_s": 0.05}))
    assert executor.run(plan, {}).nodes["slow"].status == "timed_out"


def test_on_error_continue_uses_the_default(compile_graph: Compile, executor: Executor) -> None:
    plan = compile_graph(
        graph(
            [
                {
                    **node("flaky", "test_flaky", failures=5),
                    "on_error": {"policy": "continue", "default": {"score": 0}},
                },
                transform("after", {"score": "$.nodes.flaky.score"}),
            ],
            [("flaky", "after")],
        )
    )
    result = executor.run(plan, {})
    assert result.ok
    assert result.nodes["flaky"].status == "failed"
    assert result.nodes["flaky"].handled == "continue"
    assert result.outputs["after"] == {"score": 0}


def test_on_error_route_sends_the_error_to_its_branch(compile_graph: Compile, executor: Executor) -> None:
    plan = compile_graph(
        graph(
            [
                {**node("risky", "test_crash"), "on_error": {"policy": "route", "target": "handler"}},
                transform("normal"),
                transform("handler", {"why": "$.nodes.risky.error.message"}),
            ],
            [("risky", "normal"), ("risky", "handler")],
        )
    )
    result = executor.run(plan, {})
    assert result.ok
    assert result.nodes["normal"].status == "skipped"
    assert result.outputs["handler"] == {"why": "plugin bug"}
    assert result.nodes["risky"].error is not None
    assert result.nodes["risky"].error.kind == "ZeroDivisionError"


def test_on_error_route_skips_the_handler_on_success(compile_graph: Compile, executor: Executor) -> None:
    plan = compile_graph(
        graph(
            [
                {**transform("fine"), "on_error": {"policy": "route", "target": "handler"}},
                transform("normal"),
                transform("handler"),
            ],
            [("fine", "normal"), ("fine", "handler")],
        )
    )
    result = executor.run(plan, {})
    assert (result.nodes["normal"].status, result.nodes["handler"].status) == ("succeeded", "skipped")


def test_retries_with_backoff_then_success(compile_graph: Compile, executor: Executor) -> None:
    plan = compile_graph(
        graph(
            [
                {
                    **node("flaky", "test_flaky", failures=2),
                    "retry": {"max_attempts": 3, "backoff_s": 0.05, "multiplier": 2},
                }
            ]
        )
    )
    result = executor.run(plan, {})
    assert result.ok
    assert result.nodes["flaky"].attempts == 3
    times = plan.node("flaky").impl.call_times  # type: ignore[attr-defined]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[0] >= 0.045
    assert gaps[1] >= 0.095


def test_retries_give_up_after_max_attempts(compile_graph: Compile, executor: Executor) -> None:
    plan = compile_graph(
        graph([{**node("flaky", "test_flaky", failures=10), "retry": {"max_attempts": 2, "backoff_s": 0}}])
    )
    result = executor.run(plan, {})
    assert not result.ok
    assert result.nodes["flaky"].attempts == 2


def test_permanent_errors_are_not_retried(compile_graph: Compile, executor: Executor) -> None:
    plan = compile_graph(
        graph(
            [
                {
                    **node("flaky", "test_flaky", failures=1, retryable=False),
                    "retry": {"max_attempts": 5, "backoff_s": 0},
                }
            ]
        )
    )
    result = executor.run(plan, {})
    assert not result.ok
    assert result.nodes["flaky"].attempts == 1
    assert result.error is not None
    assert result.error.retryable is False


def test_a_failed_or_slow_run_does_not_stop_the_next(compile_graph: Compile, executor: Executor) -> None:
    slow = compile_graph(graph([{**node("stuck", "test_sleep", seconds=1.0), "timeout_s": 0.05}]))
    crash = compile_graph(graph([node("bug", "test_crash")]))
    fine = compile_graph(graph([transform("a", {"v": "$.v"})]))
    for _ in range(3):
        assert executor.run(slow, {}).nodes["stuck"].status == "timed_out"
        assert executor.run(crash, {}).error is not None
        assert executor.run(fine, {"v": 1}).outputs["a"] == {"v": 1}


def test_concurrent_runs_of_one_plan_do_not_mix(compile_graph: Compile, executor: Executor) -> None:
    plan = compile_graph(
        graph(
            [
                transform("a", {"v": "$.v"}),
                node("pause", "test_sleep", seconds=0.001),
                transform("b", {"v": "$.nodes.a.v"}),
            ],
            [("a", "pause"), ("pause", "b")],
        )
    )
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: executor.run(plan, {"v": i}), range(200)))
    assert [r.outputs["b"]["v"] for r in results] == list(range(200))
    assert len({r.run_id for r in results}) == 200


def test_bad_input_is_rejected_before_running(compile_graph: Compile, executor: Executor) -> None:
    plan = compile_graph(graph([transform("a")]))
    with pytest.raises(InvalidInput, match="JSON object"):
        executor.run(plan, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="'nodes'"):
        executor.run(plan, {"nodes": {}})
    assert executor.run(plan, {}).ok


def test_events_reach_the_sink_and_the_result(compile_graph: Compile, executor: Executor) -> None:
    plan = compile_graph(
        graph([node("alarm", "emit", event="part_rejected", severity="warning", payload={"part": "$.part"})])
    )
    seen: list[dict[str, Any]] = []
    result = executor.run(plan, {"part": "A-17"}, sink=seen.append)
    assert seen == result.events
    (event,) = seen
    assert (event["type"], event["severity"], event["payload"]) == (
        "part_rejected",
        "warning",
        {"part": "A-17"},
    )
    assert event["run_id"] == result.run_id


def test_a_broken_sink_does_not_fail_the_run(compile_graph: Compile, executor: Executor) -> None:
    plan = compile_graph(graph([node("alarm", "emit", event="x")]))

    def broken(event: dict[str, Any]) -> None:
        raise OSError("disk full")

    result = executor.run(plan, {}, sink=broken)
    assert result.ok
    assert len(result.events) == 1


def test_cancelled_flag_is_set_for_nodes_still_running_when_a_run_fails(
    compile_graph: Compile, executor: Executor
) -> None:
    plan = compile_graph(
        graph(
            [
                {**node("bug", "test_crash"), "timeout_s": 5},
                {**node("watcher", "test_watch_cancel"), "timeout_s": 5},
            ]
        )
    )
    result = executor.run(plan, {})
    assert result.status == "failed"
    watcher = plan.node("watcher").impl
    assert watcher.seen.get(timeout=5) is True  # type: ignore[attr-defined]


def test_closed_executor_refuses_work(compile_graph: Compile) -> None:
    plan = compile_graph(graph([node("a", "test_sleep"), node("b", "test_sleep")]))
    executor = Executor(max_workers=1)
    assert executor.run(plan, {}).ok
    executor.close()
    with pytest.raises(RuntimeError, match="closed"):
        executor.run(plan, {})
