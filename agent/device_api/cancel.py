"""Cancelling a run from outside: the caller went away or its deadline passed.

``Executor.run`` has no cancel argument, so a run is made cancellable by running a guarded copy
of its plan (:func:`cancellable`): before each node starts, the guard looks up the run's
:class:`CancelToken` by run id; once the token is cancelled no further node starts (each raises
:class:`~agent.device_api.errors.RunCancelled`, so the run fails at once) and the run's
``RunContext.cancelled`` is set, so that a node that is running and watches it stops early.
A node that is already running and does not watch it finishes (Python cannot stop a thread).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from typing import Any, cast

from agent.device_api.errors import RunCancelled
from agent.workflow import Node, Plan, RunContext


class CancelToken:
    """Cancels one run; thread-safe. ``cancel`` may be called any number of times, from any
    thread; only the first reason is kept."""

    __slots__ = ("_events", "_lock", "reason")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[threading.Event] = []
        self.reason: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def cancel(self, reason: str) -> None:
        """Cancel the run: no further node starts, and nodes watching ``RunContext.cancelled``
        see it set."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            events, self._events = self._events, []
        for event in events:
            event.set()

    def link(self, event: threading.Event) -> None:
        """Set ``event`` when this token is cancelled (at once if it already is)."""
        with self._lock:
            if self.reason is None:
                if event not in self._events:
                    self._events.append(event)
                return
        event.set()


class RunTokens:
    """The cancel tokens of the runs in progress, by run id."""

    def __init__(self) -> None:
        self._tokens: dict[str, CancelToken] = {}

    def add(self, run_id: str, token: CancelToken) -> None:
        self._tokens[run_id] = token

    def remove(self, run_id: str) -> None:
        self._tokens.pop(run_id, None)

    def get(self, run_id: str) -> CancelToken | None:
        return self._tokens.get(run_id)


class _Guard:
    """Stands in for a node's implementation: checks the run's token, then runs the node."""

    __slots__ = ("_run", "_tokens")

    def __init__(self, impl: Node[Any], tokens: RunTokens) -> None:
        self._run = impl.run
        self._tokens = tokens

    def run(self, ctx: RunContext) -> Any:
        token = self._tokens.get(ctx.run_id)
        if token is not None:
            token.link(ctx.cancelled)
            if token.reason is not None:
                raise RunCancelled(f"run cancelled: {token.reason}")
        return self._run(ctx)


class CancellablePlans:
    """Guarded copies of plans, made once per plan and kept while the plan lives."""

    def __init__(self, tokens: RunTokens) -> None:
        self._tokens = tokens
        self._copies: dict[int, tuple[weakref.ref[Plan], Plan]] = {}
        self._lock = threading.Lock()

    def get(self, plan: Plan) -> Plan:
        """``plan`` with every node guarded by this registry's tokens. The copy is for the
        executor only: its nodes' ``impl`` are guards, not the node classes."""
        entry = self._copies.get(id(plan))
        if entry is not None and entry[0]() is plan:
            return entry[1]
        guarded = cancellable(plan, self._tokens)
        key = id(plan)
        with self._lock:
            self._copies[key] = (weakref.ref(plan, lambda _: self._forget(key)), guarded)
        return guarded

    def _forget(self, key: int) -> None:
        with self._lock:
            entry = self._copies.get(key)
            if entry is not None and entry[0]() is None:
                del self._copies[key]


def cancellable(plan: Plan, tokens: RunTokens) -> Plan:
    """A copy of ``plan`` whose nodes check ``tokens`` before they start."""
    nodes = tuple(
        dataclasses.replace(node, impl=cast(Node[Any], _Guard(node.impl, tokens))) for node in plan.nodes
    )
    return dataclasses.replace(plan, nodes=nodes)
