"""An in-process bus of device events (decisions, workflow events, threshold overrides) for
``WatchEvents``.

Publishing never blocks and never fails the run that publishes: each subscriber has its own
bounded buffer, and when a subscriber reads too slowly its buffer drops the *oldest* event and
counts it; the subscriber is told how many it missed with the next event it reads. With no
subscriber, publishing a run costs one attribute read.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.workflow import RunResult
from agent.workflow.result import json_default

DECISION = "decision"
RUN_FAILED = "run_failed"
THRESHOLD_OVERRIDE = "threshold_override"


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One event. ``seq`` increases by one per event published on this bus."""

    seq: int
    kind: str
    time: float
    workflow_id: str = ""
    workflow_version: int = 0
    run_id: str = ""
    decision: str = ""
    payload: Mapping[str, Any] = field(default_factory=dict)

    def payload_json(self) -> str:
        return json.dumps(self.payload, default=json_default)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a subscriber wants; an empty collection matches everything."""

    kinds: Collection[str] = ()
    workflow_ids: Collection[str] = ()
    decisions: Collection[str] = ()

    def matches(self, event: DeviceEvent) -> bool:
        return (
            (not self.kinds or event.kind in self.kinds)
            and (not self.workflow_ids or event.workflow_id in self.workflow_ids)
            and (not self.decisions or event.decision in self.decisions)
        )


def run_decision(result: RunResult) -> str:
    """``reject`` when any node output says ``decision: reject``, else ``accept`` when one says
    ``accept``, else empty."""
    accepted = False
    for output in result.outputs.values():
        if isinstance(output, dict):
            decision = output.get("decision")
            if decision == "reject":
                return "reject"
            accepted = accepted or decision == "accept"
    return "accept" if accepted else ""


class Subscription:
    """One subscriber's bounded buffer. Iterate with :meth:`next` (or as a context manager that
    unsubscribes on exit)."""

    def __init__(self, bus: EventBus, filter: EventFilter, capacity: int) -> None:
        self._bus = bus
        self.filter = filter
        self.capacity = capacity
        self._events: deque[DeviceEvent] = deque()
        self._missed = 0  # events dropped before the oldest buffered one, since the last read
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.closed = False

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _offer(self, event: DeviceEvent) -> None:
        if not self.filter.matches(event):
            return
        with self._lock:
            if len(self._events) >= self.capacity:
                self._events.popleft()
                self._missed += 1
            self._events.append(event)
        self._ready.set()

    def next(self, timeout: float | None = None) -> tuple[DeviceEvent, int] | None:
        """The oldest buffered event and how many events were dropped just before it; ``None``
        on timeout or once closed."""
        while True:
            with self._lock:
                if self._events:
                    missed, self._missed = self._missed, 0
                    return self._events.popleft(), missed
                if self.closed:
                    return None
                self._ready.clear()
            if not self._ready.wait(timeout):
                return None

    @property
    def pending(self) -> int:
        return len(self._events)

    def close(self) -> None:
        """Stop receiving; a waiting :meth:`next` returns ``None`` once the buffer is read."""
        with self._lock:
            self.closed = True
        self._ready.set()
        self._bus._unsubscribe(self)


class EventBus:
    """Thread-safe fan-out of :class:`DeviceEvent` to bounded per-subscriber buffers."""

    def __init__(self, capacity: int = 1024, *, clock: Callable[[], float] = time.time) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._clock = clock
        self._seq = itertools.count(1)
        self._subscribers: tuple[Subscription, ...] = ()
        self._lock = threading.Lock()
        self.published = 0

    def subscribe(self, filter: EventFilter | None = None, capacity: int | None = None) -> Subscription:
        """A new subscription to events published from now on."""
        subscription = Subscription(self, filter or EventFilter(), capacity or self.capacity)
        with self._lock:
            self._subscribers = (*self._subscribers, subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, **fields: Any) -> DeviceEvent | None:
        """Publish one event (see :class:`DeviceEvent` for the fields); ``None`` when nobody
        listens (the event is not built)."""
        subscribers = self._subscribers
        if not subscribers:
            return None
        with self._lock:
            event = DeviceEvent(next(self._seq), kind, self._clock(), **fields)
            self.published += 1
            for subscription in subscribers:
                subscription._offer(event)
        return event

    def publish_run(self, result: RunResult, *, origin: str = "") -> None:
        """Publish a finished run: a ``decision`` event (or ``run_failed``), then each event the
        run emitted (its ``type`` is the kind). ``origin`` (e.g. ``api`` or a frame source) goes
        into the payloads. Never raises for a run's content."""
        if not self._subscribers:
            return
        for kind, fields in _run_events(result, origin):
            self.publish(kind, **fields)


def _run_events(result: RunResult, origin: str) -> Iterator[tuple[str, dict[str, Any]]]:
    common = {
        "workflow_id": result.workflow_id,
        "workflow_version": result.workflow_version,
        "run_id": result.run_id,
    }
    decision = run_decision(result) if result.ok else ""
    if result.ok:
        yield (
            DECISION,
            {
                **common,
                "decision": decision,
                "payload": {"origin": origin, "duration_ms": round(result.duration_s * 1000, 3)},
            },
        )
    else:
        error = result.error.to_dict() if result.error is not None else None
        yield RUN_FAILED, {**common, "payload": {"origin": origin, "error": error}}
    for emitted in result.events:
        kind = emitted.get("type")
        yield (
            str(kind) if kind else "event",
            {
                **common,
                "decision": decision,
                "payload": {"origin": origin, **{k: v for k, v in emitted.items() if k != "workflow"}},
            },
        )
