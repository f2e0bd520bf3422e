"""systemd's watchdog, fed only while the agent really works.

With ``WatchdogSec=`` in its unit, systemd restarts the agent when no ``WATCHDOG=1`` arrives for
that long. A thread that pinged on a timer would keep a deadlocked agent alive, so
:class:`Watchdog` pings every ``WatchdogSec/2`` only while every registered liveness check
passes:

- the main loop ticks a :class:`Heartbeat`; silence longer than its limit fails the check;
- each run worker reports through a :class:`WorkerBeat` that it is idle (waiting for a frame)
  or in a run since some time; one run longer than its limit fails the check (a worker blocked
  in a node, a deadlocked inference call), and so does a worker thread that has ended.

When a check fails the pings stop and the reasons are logged once (and shown as the service's
status line); systemd restarts the agent ``WatchdogSec`` after the last ping. Should every
check pass again before that, the pings resume and that is logged too.

A check is any callable returning ``None`` (alive) or a reason for a person to read; a check
that raises counts as failing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from agent.service.notify import ServiceNotifier

log = logging.getLogger(__name__)

LivenessCheck = Callable[[], str | None]
"""``None`` while alive, else why not (one line for a person)."""

Clock = Callable[[], float]


class Heartbeat:
    """A loop's sign of life: the loop calls :meth:`beat` every turn; :meth:`check` fails once
    no beat came for more than ``max_silence_s``. Counts from construction."""

    def __init__(self, name: str, max_silence_s: float, *, clock: Clock = time.monotonic) -> None:
        if max_silence_s <= 0:
            raise ValueError("max_silence_s must be positive")
        self.name = name
        self.max_silence_s = max_silence_s
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        """The loop is alive now."""
        self._last = self._clock()

    def check(self) -> str | None:
        silence = self._clock() - self._last
        if silence > self.max_silence_s:
            return f"{self.name}: no heartbeat for {silence:.0f} s (limit {self.max_silence_s:g} s)"
        return None


class WorkerBeat:
    """A worker that is idle or in one run. :meth:`check` fails while one run has lasted more
    than ``max_run_s``, or once the attached thread has ended.

    A worker wraps each run in ``with beat.running():`` (or calls :meth:`busy` and
    :meth:`idle`). Waiting for work is idle, however long it lasts.
    """

    def __init__(
        self,
        name: str,
        max_run_s: float,
        *,
        thread: threading.Thread | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_run_s <= 0:
            raise ValueError("max_run_s must be positive")
        self.name = name
        self.max_run_s = max_run_s
        self.thread = thread
        """The worker's thread: once started, its end fails the check (``None``: not watched)."""
        self._clock = clock
        self._busy_since: float | None = None

    def busy(self) -> None:
        """A run starts."""
        self._busy_since = self._clock()

    def idle(self) -> None:
        """The run is over; the worker waits for work."""
        self._busy_since = None

    @contextmanager
    def running(self) -> Iterator[None]:
        """Busy for the ``with`` block, idle after it (also when it raises)."""
        self.busy()
        try:
            yield
        finally:
            self.idle()

    def check(self) -> str | None:
        thread = self.thread
        if thread is not None and thread.ident is not None and not thread.is_alive():
            return f"{self.name}: its thread {thread.name} has ended"
        since = self._busy_since
        if since is None:
            return None
        busy = self._clock() - since
        if busy > self.max_run_s:
            return f"{self.name}: one run has lasted {busy:.0f} s (limit {self.max_run_s:g} s)"
        return None


@dataclass(frozen=True)
class WatchdogState:
    """What the watchdog is doing, for status pages and logs."""

    enabled: bool
    """Whether systemd expects pings (``$WATCHDOG_USEC`` set for this process)."""
    interval_s: float | None
    """Seconds between rounds: half of ``WatchdogSec``."""
    rounds: int
    """Rounds run so far (each runs every check once)."""
    pings: int
    """``WATCHDOG=1`` sent so far."""
    failing: tuple[str, ...]
    """Why the last round withheld its ping; empty when it pinged."""


class Watchdog:
    """Pings systemd's watchdog every ``interval_s`` while every registered check passes.

    Thread-safe. ``register``/``unregister`` may be called at any time, also while running.
    Without an interval (no ``$WATCHDOG_USEC``) :meth:`start` starts nothing; :meth:`tick`
    still runs one round on demand.
    """

    def __init__(self, notifier: ServiceNotifier, interval_s: float | None) -> None:
        if interval_s is not None and interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.notifier = notifier
        self.interval_s = interval_s
        self._checks: dict[str, LivenessCheck] = {}
        self._lock = threading.Lock()
        self._round_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rounds = 0
        self._pings = 0
        self._failing: tuple[str, ...] = ()
        self._status_before: str | None = None

    @classmethod
    def from_environ(
        cls,
        notifier: ServiceNotifier,
        environ: Mapping[str, str] | None = None,
        pid: int | None = None,
    ) -> Watchdog:
        """The watchdog systemd asks for in ``environ`` (default: this process's):
        ``$WATCHDOG_USEC`` is the timeout, pinged at half of it; a ``$WATCHDOG_PID`` that is
        not ``pid`` (default: this process) means the timeout is another process's, and this
        watchdog stays disabled. Unusable values are logged and disable it."""
        env = os.environ if environ is None else environ
        usec, owner = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if not usec:
            return cls(notifier, None)
        if owner and owner != str(os.getpid() if pid is None else pid):
            log.debug("WATCHDOG_PID=%s is another process: no watchdog pings from this one", owner)
            return cls(notifier, None)
        try:
            timeout_us = int(usec)
        except ValueError:
            timeout_us = 0
        if timeout_us <= 0:
            log.warning("WATCHDOG_USEC=%r is not a positive integer: no watchdog pings", usec)
            return cls(notifier, None)
        return cls(notifier, timeout_us / 2_000_000)

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None

    def register(self, name: str, check: LivenessCheck) -> None:
        """Add a liveness check; ``ValueError`` when ``name`` is taken."""
        with self._lock:
            if name in self._checks:
                raise ValueError(f"a liveness check named {name!r} is already registered")
            self._checks[name] = check

    def unregister(self, name: str) -> None:
        """Remove a check (a retired workflow's workers); unknown names are ignored."""
        with self._lock:
            self._checks.pop(name, None)

    def evaluate(self) -> tuple[str, ...]:
        """Run every check once; the reasons of those that fail, in registration order."""
        with self._lock:
            checks = list(self._checks.items())
        reasons: list[str] = []
        for name, check in checks:
            try:
                reason = check()
            except Exception as exc:  # noqa: BLE001 - a check that breaks counts as failing
                reason = f"{name}: the liveness check raised {type(exc).__name__}: {exc}"
            if reason is not None:
                reasons.append(reason)
        return tuple(reasons)

    def tick(self) -> bool:
        """One round: every check runs; ``WATCHDOG=1`` is sent when all pass. Returns whether
        it pinged. Logs (and sets the status line) when the pings stop and when they resume."""
        with self._round_lock:
            failing = self.evaluate()
            if failing and not self._failing:
                self._status_before = self.notifier.last_status
                log.error(
                    "watchdog: the agent is unhealthy, pings to systemd stop (systemd restarts the "
                    "agent unless this clears): %s",
                    "; ".join(failing),
                )
                self.notifier.status(f"unhealthy: {'; '.join(failing)}")
            elif self._failing and not failing:
                log.warning("watchdog: every liveness check passes again; pings resume")
                if self._status_before is not None:
                    self.notifier.status(self._status_before)
            pinged = not failing and self.notifier.watchdog()
            self._failing = failing
            self._rounds += 1
            self._pings += pinged
            return pinged

    def state(self) -> WatchdogState:
        with self._round_lock:
            return WatchdogState(self.enabled, self.interval_s, self._rounds, self._pings, self._failing)

    def start(self) -> None:
        """Start the pinging thread (a round now, then one every ``interval_s``); nothing when
        disabled or already started."""
        if self.interval_s is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(self.interval_s,), name="edgefleet-watchdog")
        self._thread.daemon = True
        self._thread.start()

    def _run(self, interval_s: float) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # the watchdog thread must not die of a bug: the pings would stop
                log.exception("watchdog: a round failed")
            if self._stop.wait(interval_s):
                return

    def stop(self) -> None:
        """Stop pinging (on shutdown, after ``STOPPING=1``); returns once the thread is gone."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def __enter__(self) -> Watchdog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
