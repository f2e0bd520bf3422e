"""What a node sees while it runs: the run's input, the outputs of upstream nodes, the event
sink and the cancellation flag.

A ``RunContext`` belongs to one run. Nodes that run in parallel within the run share it; each
writes only its own output, which the executor stores, so nodes never mutate the context.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
EventSink = Callable[[Event], None]


class RunContext:
    """Per-run state handed to ``Node.run``.

    ``input`` is the run's input document (addressed as ``$``); ``outputs`` maps the id of every
    node that has finished to its output (addressed as ``$.nodes.<id>``).
    """

    __slots__ = (
        "_cancelled",
        "_sink",
        "events",
        "input",
        "outputs",
        "run_id",
        "workflow_id",
        "workflow_version",
    )

    def __init__(
        self,
        *,
        run_id: str,
        workflow_id: str,
        workflow_version: int,
        input: dict[str, Any],
        sink: EventSink | None = None,
    ) -> None:
        self.run_id = run_id
        self.workflow_id = workflow_id
        self.workflow_version = workflow_version
        self.input = input
        self.outputs: dict[str, Any] = {}
        self.events: list[Event] = []
        self._sink = sink
        self._cancelled: threading.Event | None = None

    @property
    def cancelled(self) -> threading.Event:
        """Set when the run has failed or is over; long-running nodes may poll it (or ``wait``
        on it) to stop early. Created on first use by the run's own thread, before
        any node runs on another thread."""
        event = self._cancelled
        if event is None:
            event = self._cancelled = threading.Event()
        return event

    def close(self) -> None:
        """Mark the run as over: nodes still running (abandoned after a timeout) see
        ``cancelled`` set and stop retrying."""
        if self._cancelled is not None:
            self._cancelled.set()

    def emit(self, event: Event) -> None:
        """Record an event for this run and hand it to the run's sink, if any.

        A sink that raises does not fail the node: the event stays in the run result.
        """
        self.events.append(event)
        if self._sink is not None:
            try:
                self._sink(event)
            except Exception:
                import logging

                logging.getLogger(__name__).exception("event sink failed for run %s", self.run_id)

    def document(self) -> dict[str, Any]:
        """The full document JSONPaths are evaluated against: the input plus ``nodes``."""
        return {**self.input, "nodes": self.outputs}
