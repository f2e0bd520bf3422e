"""The reconcile worker: applies desired states on its own thread, newest first."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from protos import sync_pb2

if TYPE_CHECKING:
    from agent.sync.reconciler import Reconciler

__all__ = ["ReconcileWorker"]

log = logging.getLogger(__name__)


class ReconcileWorker:
    """Applies desired states on its own thread, newest first, and publishes each report.

    :meth:`submit` only stores the state and wakes the worker, so the MQTT network thread can call
    it. States that arrive while one is being applied replace each other: only the newest is
    applied next. A transient failure (network, HTTP 5xx) is retried with jittered exponential
    backoff until it succeeds or a newer desired state arrives."""

    def __init__(
        self,
        reconciler: Reconciler,
        publish: Callable[[sync_pb2.ReportedState], object],
        *,
        retry_min_s: float = 2.0,
        retry_max_s: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.publish = publish
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        self._next: sync_pb2.DesiredState | None = None
        self._stopping = False
        self._idle = True
        self._thread = threading.Thread(target=self._run, name="edgefleet-reconcile", daemon=True)
        self.applied = 0
        """Desired states applied so far (a converged no-op included)."""

    def start(self) -> None:
        self._thread.start()

    def submit(self, desired: sync_pb2.DesiredState) -> None:
        with self._cond:
            self._next = desired
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until nothing is queued or being applied (for tests and orderly shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._idle and self._next is None, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        retry_at: float | None = None
        last: sync_pb2.DesiredState | None = None
        while True:
            with self._cond:
                while not self._stopping and self._next is None:
                    if retry_at is not None and time.monotonic() >= retry_at:
                        self._next, retry_at = last, None
                        break
                    self._idle = True
                    self._cond.notify_all()
                    timeout = None if retry_at is None else max(0.0, retry_at - time.monotonic())
                    self._cond.wait(timeout)
                if self._stopping:
                    self._idle = True
                    self._cond.notify_all()
                    return
                desired, self._next = self._next, None
                self._idle = False
            assert desired is not None
            if last is None or desired.generation != last.generation:
                failures = 0
            last = desired
            try:
                report = self.reconciler.apply(desired)
            except Exception:  # a bug must not end the worker: report it and carry on
                log.exception("sync: applying generation %d crashed", desired.generation)
                report = self.reconciler.report()
            self.applied += 1
            try:
                self.publish(report)
            except Exception:
                log.exception("sync: publishing the reported state failed")
            if self.reconciler.retry_advised:
                base = min(self.retry_max_s, self.retry_min_s * 2 ** min(failures, 30))
                failures += 1
                delay = self._rng.uniform(base / 2, base)
                log.info("sync: retrying generation %d in %.1f s", desired.generation, delay)
                retry_at = time.monotonic() + delay
            else:
                retry_at = None
