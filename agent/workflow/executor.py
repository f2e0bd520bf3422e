"""Run compiled plans.

One ``Executor`` serves any number of runs, from any number of threads. A run executes on the
caller's thread. When several nodes are ready at once, the ``concurrent`` ones (those that
release the GIL: inference, image work, I/O) go to the executor's bounded worker pool and
overlap with the rest; pure-Python nodes stay on the run's thread, since under the GIL a thread
hand-off would only add cost. A node with a timeout always runs on the pool, watched by the
run's thread: when its time is up
the run stops waiting for it and applies its error policy. Python cannot kill a thread, so a
timed-out node keeps its worker until it returns; ``RunContext.cancelled`` is set for nodes
that want to stop early.

``run`` never raises for a failure inside the graph: node errors, timeouts and bad routes are
reported in the ``RunResult``. It raises ``InvalidInput`` for an input that cannot be run.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from queue import Empty, SimpleQueue
from threading import Lock
from time import monotonic, perf_counter
from typing import Any

from agent.workflow.compiler import Plan, PlannedNode
from agent.workflow.context import EventSink, RunContext
from agent.workflow.errors import InvalidInput, NodeError, NodeTimeout
from agent.workflow.node import Route
from agent.workflow.result import CANCELLED, SKIPPED, ErrorInfo, NodeRun, NodeStatus, RunResult

_Outcome = tuple[Any, BaseException | None, int, float]
"""(value, error, attempts, seconds)"""

_RETRYABLE_BUILTINS = (OSError, TimeoutError, ConnectionError)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, NodeError):
        return exc.retryable
    return isinstance(exc, _RETRYABLE_BUILTINS)


def _execute(node: PlannedNode, ctx: RunContext) -> _Outcome:
    """Run one node, with its retry policy. Returns instead of raising for ``Exception``s."""
    start = perf_counter()
    attempt = 1
    run = node.impl.run
    while True:
        try:
            return run(ctx), None, attempt, perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - a node's failure is an outcome, not a crash
            retry = node.retry
            if (
                retry is None
                or attempt >= retry.max_attempts
                or not _retryable(exc)
                or ctx.cancelled.wait(retry.delay(attempt))
            ):
                return None, exc, attempt, perf_counter() - start
            attempt += 1


def _error_info(node: PlannedNode, exc: BaseException) -> ErrorInfo:
    return ErrorInfo(
        node=node.id,
        node_type=node.type,
        kind=type(exc).__name__,
        message=str(exc) or type(exc).__name__,
        retryable=_retryable(exc),
    )


class Executor:
    """Runs plans; owns the bounded worker pool (``max_workers`` threads, created on first
    need). Use as a context manager, or call ``close``."""

    def __init__(self, max_workers: int = 4) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = Lock()
        self._closed = False
        # run ids: a random per-executor prefix and a counter, unique without a uuid per run
        self._run_prefix = os.urandom(8).hex()
        self._run_counter = itertools.count()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting parallel work; does not wait for abandoned (timed-out) nodes."""
        with self._lock:
            self._closed = True
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, fn: Callable[[], None]) -> None:
        if self._closed:
            raise RuntimeError("executor is closed")
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError("executor is closed")
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=self.max_workers, thread_name_prefix="edgefleet-node"
                    )
                pool = self._pool
        pool.submit(fn)

    def run(
        self,
        plan: Plan,
        input: Any,
        *,
        sink: EventSink | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Run ``plan`` once on the ``input`` document and return its result."""
        if self._closed:
            raise RuntimeError("executor is closed")
        if not isinstance(input, dict):
            raise InvalidInput(f"run input must be a JSON object, got {type(input).__name__}")
        if "nodes" in input:
            raise InvalidInput("run input must not have a top-level 'nodes' key: $.nodes holds node outputs")
        started = perf_counter()
        ctx = RunContext(
            run_id=run_id or f"{self._run_prefix}{next(self._run_counter):016x}",
            workflow_id=plan.workflow_id,
            workflow_version=plan.version,
            input=input,
            sink=sink,
        )
        nodes = plan.nodes
        pending = [len(node.preds) for node in nodes]
        active = [0] * len(nodes)
        runs: dict[str, NodeRun] = {}
        branches: dict[str, str | None] = {}
        outputs = ctx.outputs
        ready: deque[int] = deque()
        inflight: dict[int, float] = {}
        completions: SimpleQueue[tuple[int, _Outcome]] | None = None
        failure: ErrorInfo | None = None

        def settle(index: int, value: Any, exc: BaseException | None, attempts: int, seconds: float) -> None:
            nonlocal failure
            node = nodes[index]
            if exc is None and type(value) is Route:
                target = node.routes.get(value.branch) if value.branch is not None else -1
                if target is None:
                    exc = NodeError(f"routed to '{value.branch}', which is not one of its branch targets")
                else:
                    branches[node.id] = value.branch
                    outputs[node.id] = value.output
                    runs[node.id] = NodeRun("succeeded", seconds, attempts)
                    taken: tuple[int, ...] = () if target < 0 else (target,)
                    propagate(node, taken)
                    return
            if exc is None:
                outputs[node.id] = value
                runs[node.id] = NodeRun("succeeded", seconds, attempts)
                propagate(node, node.success_succs)
                return
            info = _error_info(node, exc)
            status: NodeStatus = "timed_out" if isinstance(exc, NodeTimeout) else "failed"
            if node.on_error == "fail":
                runs[node.id] = NodeRun(status, seconds, attempts, info)
                failure = info
                return
            runs[node.id] = NodeRun(status, seconds, attempts, info, handled=node.on_error)
            if node.on_error == "continue":
                outputs[node.id] = node.default
                propagate(node, node.success_succs)
            else:
                outputs[node.id] = {"error": info.to_dict()}
                propagate(node, (node.error_target,) if node.error_target is not None else ())

        def propagate(node: PlannedNode, taken: tuple[int, ...]) -> None:
            for succ in node.succs:
                if succ in taken:
                    active[succ] += 1
            released = [node.succs]
            while released:
                for succ in released.pop():
                    pending[succ] -= 1
                    if pending[succ]:
                        continue
                    if active[succ]:
                        enqueue(succ)
                    else:  # every edge into it is inactive: skip it, and release what follows
                        runs[nodes[succ].id] = SKIPPED
                        released.append(nodes[succ].succs)

        def enqueue(index: int) -> None:
            # concurrent nodes first, so that they are on the pool while the others run inline
            if nodes[index].concurrent:
                ready.appendleft(index)
            else:
                ready.append(index)

        for index in plan.entries:
            enqueue(index)
        while True:
            while ready and failure is None:
                index = ready.popleft()
                node = nodes[index]
                if node.timeout_s is None and not (node.concurrent and ready):
                    settle(index, *_execute(node, ctx))
                    continue
                if completions is None:
                    completions = SimpleQueue()
                    ctx.cancelled  # noqa: B018 - create it here, before any other thread can
                inflight[index] = monotonic() + node.timeout_s if node.timeout_s is not None else math.inf
                self._submit(_worker(index, node, ctx, completions))
            if failure is not None or not inflight:
                break
            assert completions is not None
            deadline = min(inflight.values())
            wait = None if deadline == math.inf else max(0.0, deadline - monotonic())
            try:
                index, outcome = completions.get(timeout=wait)
            except Empty:
                now = monotonic()
                for index in [i for i, due in inflight.items() if due <= now]:
                    del inflight[index]
                    timeout = nodes[index].timeout_s or 0.0
                    settle(index, None, NodeTimeout(timeout), 1, timeout)
                continue
            if inflight.pop(index, None) is not None:
                settle(index, *outcome)

        ctx.close()
        if failure is not None:
            for node in nodes:
                runs.setdefault(node.id, CANCELLED)
        return RunResult(
            run_id=ctx.run_id,
            workflow_id=plan.workflow_id,
            workflow_version=plan.version,
            status="failed" if failure is not None else "succeeded",
            outputs=outputs,
            nodes={node.id: runs[node.id] for node in nodes if node.id in runs},
            branches=branches,
            error=failure,
            events=ctx.events,
            duration_s=perf_counter() - started,
        )


def _worker(
    index: int, node: PlannedNode, ctx: RunContext, completions: SimpleQueue[tuple[int, _Outcome]]
) -> Callable[[], None]:
    def work() -> None:
        try:
            outcome = _execute(node, ctx)
        except BaseException as exc:
            completions.put((index, (None, exc, 1, 0.0)))
            raise
        completions.put((index, outcome))

    return work
