"""Node types used only by the engine's tests: sleeps, flaky failures, barriers."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agent.workflow import JsonPath, Node, NodeError, NodeRegistry, NodeSetup, RunContext


class SleepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 0.0
    output: Any = None


class Sleep(Node[SleepConfig]):
    """Sleeps (releasing the GIL), then returns ``output``."""

    type_name = "test_sleep"
    config_model = SleepConfig
    concurrent = True

    def run(self, ctx: RunContext) -> Any:
        time.sleep(self.config.seconds)
        return self.config.output


class FlakyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    failures: int = 1
    retryable: bool = True
    output: Any = "ok"


class Flaky(Node[FlakyConfig]):
    """Fails its first ``failures`` calls (counted per node instance), then succeeds."""

    type_name = "test_flaky"
    config_model = FlakyConfig

    def __init__(self, config: FlakyConfig, setup: NodeSetup) -> None:
        super().__init__(config, setup)
        self.calls = 0
        self.call_times: list[float] = []
        self._lock = threading.Lock()

    def run(self, ctx: RunContext) -> Any:
        with self._lock:
            self.calls += 1
            self.call_times.append(time.monotonic())
            calls = self.calls
        if calls <= self.config.failures:
            raise NodeError(f"failure {calls} of {self.config.failures}", retryable=self.config.retryable)
        return self.config.output


class BarrierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parties: int = 2
    timeout_s: float = 5.0


_BARRIERS: dict[int, threading.Barrier] = {}


class Rendezvous(Node[BarrierConfig]):
    """Waits until ``parties`` nodes of one run are inside ``run`` at the same time; fails if
    they never are, which proves (or disproves) that they ran concurrently."""

    type_name = "test_rendezvous"
    config_model = BarrierConfig
    concurrent = True

    def run(self, ctx: RunContext) -> Any:
        barrier = _BARRIERS.setdefault(id(ctx), threading.Barrier(self.config.parties))
        try:
            barrier.wait(timeout=self.config.timeout_s)
        except threading.BrokenBarrierError:
            raise NodeError("the other nodes never ran at the same time") from None
        return threading.get_ident()


class Crash(Node[SleepConfig]):
    """Raises an unexpected (non-NodeError) exception."""

    type_name = "test_crash"
    config_model = SleepConfig

    def run(self, ctx: RunContext) -> Any:
        raise ZeroDivisionError("plugin bug")


class WatchCancel(Node[SleepConfig]):
    """Waits for its run to be cancelled and reports (on ``seen``) whether it was."""

    type_name = "test_watch_cancel"
    config_model = SleepConfig

    def __init__(self, config: SleepConfig, setup: NodeSetup) -> None:
        super().__init__(config, setup)
        self.seen: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def run(self, ctx: RunContext) -> Any:
        self.seen.put(ctx.cancelled.wait(5))
        return None


class RecordConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after: list[JsonPath] = []


class Record(Node[RecordConfig]):
    """Reads every upstream output named in ``after`` and records when it started and ended,
    on a sequence shared by the whole process."""

    type_name = "test_record"
    config_model = RecordConfig
    _counter = itertools.count()
    log: ClassVar[dict[str, dict[str, tuple[int, int]]]] = {}

    def run(self, ctx: RunContext) -> Any:
        start = next(self._counter)
        upstream = [path.resolve(ctx) for path in self.config.after]
        end = next(self._counter)
        self.log.setdefault(ctx.run_id, {})[self.node_id] = (start, end)
        return {"id": self.node_id, "upstream": upstream}


TEST_NODES = (Sleep, Flaky, Rendezvous, Crash, WatchCancel, Record)


def register_test_nodes(registry: NodeRegistry) -> NodeRegistry:
    for cls in TEST_NODES:
        registry.register(cls, origin=f"tests {cls.__qualname__}")
    return registry
