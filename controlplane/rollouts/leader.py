"""Exactly one driver of the rollout controller per fleet, and the thread that drives it.

Leadership is a lock held for as long as the process leads: on PostgreSQL a session advisory
lock (``pg_try_advisory_lock``) on a connection kept open for it, so every replica competes for
the same lock and a crashed leader's lock goes with its connection; on SQLite an exclusive
``flock`` on ``<data dir>/rollout-controller.lock``, so one of several uvicorn worker processes on
the host drives. Both are tried without blocking: the others try again at every tick, and one of
them takes over when the leader stops.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controlplane.rollouts.controller import RolloutController
from controlplane.store import Database

log = logging.getLogger("edgefleet.controlplane.rollouts")

ADVISORY_KEY = 0x6564_6772_6F6C  # PostgreSQL advisory lock of the rollout controller's leader
LOCK_FILE = "rollout-controller.lock"


class Leadership(Protocol):
    @property
    def leading(self) -> bool: ...

    def acquire(self) -> bool:
        """Lead if nobody else does; True while this holder leads. Never blocks, never raises."""
        ...

    def release(self) -> None:
        """Stop leading (a no-op when not leading)."""
        ...


class PostgresLeadership:
    """A session advisory lock on a connection held for it."""

    def __init__(self, db: Database, key: int = ADVISORY_KEY) -> None:
        self._db = db
        self._key = key
        self._conn: Connection | None = None

    @property
    def leading(self) -> bool:
        return self._conn is not None

    def acquire(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT 1"))
                self._conn.commit()
                return True
            except sa.exc.SQLAlchemyError:
                log.warning("rollout controller: lost the leader's database connection")
                self._drop()
        try:
            conn = self._db.engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("rollout controller: cannot connect to compete for leadership: %s", exc)
            return False
        try:
            got = bool(
                conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}).scalar()
            )
            conn.commit()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("rollout controller: leadership check failed: %s", exc)
            conn.invalidate()
            conn.close()
            return False
        if got:
            self._conn = conn
            log.info("rollout controller: leading (PostgreSQL advisory lock)")
        else:
            conn.close()
        return got

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            self._conn.commit()
            self._conn.close()
        except sa.exc.SQLAlchemyError:
            self._drop()
        self._conn = None

    def _drop(self) -> None:
        """Close the session (and with it the lock) without returning it to the pool."""
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except sa.exc.SQLAlchemyError:
                pass
        self._conn = None


class FileLeadership:
    """An exclusive, non-blocking ``flock`` on a lock file, held while leading."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    @property
    def leading(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("rollout controller: cannot open %s: %s", self._path, exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        log.info("rollout controller: leading (lock file %s)", self._path)
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def leadership_for(db: Database, data_dir: Path) -> Leadership:
    """The leadership lock that fits the database."""
    if db.dialect == "postgresql":
        return PostgresLeadership(db)
    return FileLeadership(data_dir / LOCK_FILE)


class ControllerDriver:
    """Ticks the controller every ``interval_s`` seconds on a daemon thread while this process
    leads. Lifecycle: ``start()`` once (it tries for leadership at once), ``stop()`` once."""

    def __init__(self, controller: RolloutController, leadership: Leadership, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._controller = controller
        self._leadership = leadership
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-controller", daemon=True)

    @property
    def leading(self) -> bool:
        return self._leadership.leading

    def start(self) -> None:
        self._leadership.acquire()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._leadership.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._leadership.acquire():
                try:
                    self._controller.tick()
                except Exception:
                    log.exception("rollout controller: tick failed")
            self._stop.wait(self._interval)
