"""``Watchdog``: ``WATCHDOG=1`` reaches a real notification socket only while the agent is alive."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator

import pytest

from agent.service import Heartbeat, ServiceNotifier, Watchdog, WorkerBeat
from tests.service.helpers import NotifyReceiver, wait_until


class FakeClock:
    """Monotonic time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class HungWorker:
    """A run worker whose run blocks on an event, like a worker deadlocked inside a node; once
    released it waits for work (idle) until told to exit."""

    def __init__(self, beat: WorkerBeat) -> None:
        self.beat = beat
        self.release = threading.Event()
        self.in_run = threading.Event()
        self.run_over = threading.Event()
        self.exit = threading.Event()
        self.thread = threading.Thread(target=self._work, name="edgefleet-run-test-0", daemon=True)
        beat.thread = self.thread
        self.thread.start()
        self.in_run.wait()

    def _work(self) -> None:
        with self.beat.running():
            self.in_run.set()
            self.release.wait()
        self.run_over.set()
        self.exit.wait()

    def end_run(self) -> None:
        """The blocked run returns; the worker goes back to waiting for frames."""
        self.release.set()
        self.run_over.wait()

    def stop(self) -> None:
        """The worker's thread returns."""
        self.end_run()
        self.exit.set()
        self.thread.join()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def notifier(notify_socket: NotifyReceiver) -> Iterator[ServiceNotifier]:
    with ServiceNotifier(notify_socket.address) as notifier:
        yield notifier


def watchdogs(received: list[str]) -> int:
    return sum(message == "WATCHDOG=1" for message in received)


# ---- where the interval comes from ------------------------------------------------------------


def test_the_interval_is_half_of_watchdog_usec(notifier: ServiceNotifier) -> None:
    watchdog = Watchdog.from_environ(notifier, {"WATCHDOG_USEC": "30000000"})
    assert watchdog.enabled
    assert watchdog.interval_s == 15.0


def test_watchdog_pid_of_this_process_enables_and_of_another_disables(notifier: ServiceNotifier) -> None:
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Watchdog.from_environ(notifier, mine).interval_s == 1.0
    other = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert not Watchdog.from_environ(notifier, other).enabled


@pytest.mark.parametrize("environ", [{}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "soon"}])
def test_without_a_usable_watchdog_usec_nothing_pings(
    notifier: ServiceNotifier, notify_socket: NotifyReceiver, environ: dict[str, str]
) -> None:
    watchdog = Watchdog.from_environ(notifier, environ)
    assert not watchdog.enabled
    watchdog.start()  # starts nothing
    watchdog.stop()
    assert watchdog.state().rounds == 0
    assert notify_socket.pending() == []


# ---- the liveness checks ----------------------------------------------------------------------


def test_a_heartbeat_fails_after_its_silence_limit_and_recovers_on_a_beat(clock: FakeClock) -> None:
    main = Heartbeat("main loop", max_silence_s=10, clock=clock)
    assert main.check() is None
    clock.advance(10)
    assert main.check() is None
    clock.advance(2)
    assert main.check() == "main loop: no heartbeat for 12 s (limit 10 s)"
    main.beat()
    assert main.check() is None


def test_an_idle_worker_is_alive_however_long_it_waits(clock: FakeClock) -> None:
    beat = WorkerBeat("surface_inspection worker 0", max_run_s=60, clock=clock)
    clock.advance(3600)
    assert beat.check() is None
    with beat.running():
        clock.advance(59)
        assert beat.check() is None
        clock.advance(2)
        assert beat.check() == "surface_inspection worker 0: one run has lasted 61 s (limit 60 s)"
    assert beat.check() is None


def test_a_worker_whose_thread_ended_fails(clock: FakeClock) -> None:
    thread = threading.Thread(target=lambda: None, name="edgefleet-run-x-0")
    beat = WorkerBeat("x worker 0", max_run_s=60, thread=thread, clock=clock)
    assert beat.check() is None  # not started yet
    thread.start()
    thread.join()
    assert beat.check() == "x worker 0: its thread edgefleet-run-x-0 has ended"


# ---- one round at a time: exact, no timing ----------------------------------------------------


def test_a_hung_worker_stops_the_pings_until_its_run_ends(
    notifier: ServiceNotifier,
    notify_socket: NotifyReceiver,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    watchdog = Watchdog(notifier, interval_s=None)
    main = Heartbeat("main loop", max_silence_s=10, clock=clock)
    watchdog.register("main", main.check)
    healthy = WorkerBeat("inspection worker 1", max_run_s=60, clock=clock)
    watchdog.register("inspection.1", healthy.check)
    hung = HungWorker(WorkerBeat("inspection worker 0", max_run_s=60, clock=clock))
    watchdog.register("inspection.0", hung.beat.check)
    notifier.status("serving 1 workflow")

    assert watchdog.tick()
    assert notify_socket.pending() == ["STATUS=serving 1 workflow", "WATCHDOG=1"]

    clock.advance(61)  # the run has now lasted longer than its limit
    for _ in range(5):
        main.beat()  # the main loop is fine, and the other worker keeps working
        with healthy.running():
            pass
        assert not watchdog.tick()
    received = notify_socket.pending()
    assert watchdogs(received) == 0
    assert received == ["STATUS=unhealthy: inspection worker 0: one run has lasted 61 s (limit 60 s)"]
    assert watchdog.state().failing == ("inspection worker 0: one run has lasted 61 s (limit 60 s)",)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "inspection worker 0: one run has lasted 61 s" in errors[0].getMessage()

    hung.end_run()  # the run ends after all: alive again, pings resume and the status comes back
    assert watchdog.tick()
    assert notify_socket.pending() == ["STATUS=serving 1 workflow", "WATCHDOG=1"]
    assert watchdog.state().failing == ()


def test_a_dead_worker_thread_stops_the_pings(
    notifier: ServiceNotifier, notify_socket: NotifyReceiver, clock: FakeClock
) -> None:
    watchdog = Watchdog(notifier, interval_s=None)
    worker = HungWorker(WorkerBeat("inspection worker 0", max_run_s=60, clock=clock))
    watchdog.register("inspection.0", worker.beat.check)
    worker.stop()  # the thread returns: a worker that is gone serves no frame
    assert not watchdog.tick()
    assert watchdogs(notify_socket.pending()) == 0
    watchdog.unregister("inspection.0")  # a retired workflow takes its workers' checks along
    assert watchdog.tick()
    assert watchdogs(notify_socket.pending()) == 1


def test_a_check_that_raises_counts_as_failing(
    notifier: ServiceNotifier, notify_socket: NotifyReceiver
) -> None:
    watchdog = Watchdog(notifier, interval_s=None)

    def broken() -> str | None:
        raise RuntimeError("queue lock poisoned")

    watchdog.register("queue", broken)
    assert not watchdog.tick()
    assert watchdog.state().failing == ("queue: the liveness check raised RuntimeError: queue lock poisoned",)
    assert watchdogs(notify_socket.pending()) == 0


def test_check_names_are_unique(notifier: ServiceNotifier) -> None:
    watchdog = Watchdog(notifier, interval_s=None)
    watchdog.register("main", lambda: None)
    with pytest.raises(ValueError, match="'main' is already registered"):
        watchdog.register("main", lambda: None)


# ---- the pinging thread, as it runs in the agent ----------------------------------------------


def test_the_thread_pings_while_alive_stops_for_a_hang_and_resumes_after_it(
    notifier: ServiceNotifier,
    notify_socket: NotifyReceiver,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    watchdog = Watchdog.from_environ(notifier, {"WATCHDOG_USEC": "20000"})  # a round every 10 ms
    hung = HungWorker(WorkerBeat("inspection worker 0", max_run_s=60, clock=clock))
    watchdog.register("inspection.0", hung.beat.check)
    with watchdog:
        for _ in range(3):
            assert notify_socket.receive() == "WATCHDOG=1"

        clock.advance(61)
        wait_until(lambda: watchdog.state().failing != (), "the watchdog to see the hung worker")
        sent_before = watchdog.state().pings
        notify_socket.pending()  # pings sent before the hang was seen
        rounds = watchdog.state().rounds
        wait_until(lambda: watchdog.state().rounds >= rounds + 10, "ten more rounds")
        assert watchdogs(notify_socket.pending()) == 0
        assert watchdog.state().pings == sent_before

        hung.end_run()
        wait_until(lambda: watchdog.state().failing == (), "the watchdog to see the run end")
        assert "WATCHDOG=1" in [notify_socket.receive() for _ in range(2)]
    hung.stop()
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert "pings resume" in caplog.text
