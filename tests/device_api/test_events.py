"""The event bus: bounded per-watcher buffers that drop the oldest, filters, run events."""

from __future__ import annotations

import threading

from agent.device_api.events import DECISION, RUN_FAILED, EventBus, EventFilter, run_decision
from agent.workflow import ErrorInfo, RunResult


def result(
    decision: str | None, *, ok: bool = True, events: list[dict[str, object]] | None = None
) -> RunResult:
    return RunResult(
        run_id="r1",
        workflow_id="wf",
        workflow_version=3,
        status="succeeded" if ok else "failed",
        outputs={"gate": {"decision": decision}} if decision else {},
        nodes={},
        branches={},
        error=None if ok else ErrorInfo("gate", "threshold", "NodeError", "no score"),
        events=events or [],
    )


def test_a_watcher_that_never_reads_loses_the_oldest_and_is_told_how_many() -> None:
    bus = EventBus(capacity=5)
    slow = bus.subscribe()
    for n in range(100):  # never blocks, however far behind the watcher is
        bus.publish(DECISION, workflow_id="wf", payload={"n": n})
    assert slow.pending == 5
    first = slow.next(timeout=0)
    assert first is not None
    event, missed = first
    assert (event.payload["n"], missed) == (95, 95)
    rest = [slow.next(timeout=0) for _ in range(4)]
    assert [(e.payload["n"], m) for e, m in filter(None, rest)] == [(96, 0), (97, 0), (98, 0), (99, 0)]
    assert slow.next(timeout=0) is None


def test_each_watcher_gets_what_its_filter_asks_for() -> None:
    bus = EventBus()
    rejects = bus.subscribe(EventFilter(decisions={"reject"}))
    other = bus.subscribe(EventFilter(workflow_ids={"other"}))
    bus.publish_run(result("accept"))
    bus.publish_run(result("reject", events=[{"type": "part_rejected", "payload": {"score": 0.9}}]))
    got = [rejects.next(timeout=0) for _ in range(3)]
    kinds = [(e.kind, e.decision, e.run_id) for e, _ in filter(None, got)]
    assert kinds == [(DECISION, "reject", "r1"), ("part_rejected", "reject", "r1")]
    assert other.pending == 0


def test_a_failed_run_is_a_run_failed_event_naming_the_node() -> None:
    bus = EventBus()
    watcher = bus.subscribe()
    bus.publish_run(result(None, ok=False), origin="api")
    item = watcher.next(timeout=0)
    assert item is not None
    event, _ = item
    assert event.kind == RUN_FAILED
    assert event.payload["error"]["node"] == "gate"
    assert event.payload["origin"] == "api"


def test_closing_wakes_a_waiting_watcher_and_unsubscribes() -> None:
    bus = EventBus()
    watcher = bus.subscribe()
    got: list[object] = []
    waiting = threading.Thread(target=lambda: got.append(watcher.next()))
    waiting.start()
    watcher.close()
    waiting.join()
    assert got == [None]
    assert bus.subscribers == 0
    assert bus.publish(DECISION) is None  # nobody listens: nothing is built


def test_the_decision_of_a_run_is_reject_when_any_node_rejects() -> None:
    both = result("accept")
    both.outputs["second"] = {"decision": "reject"}
    assert run_decision(both) == "reject"
    assert run_decision(result("accept")) == "accept"
    assert run_decision(result(None)) == ""
