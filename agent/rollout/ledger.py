"""What the device remembers about rollout bundles across restarts: ``<data_dir>/sync/rollout.json``.

- **Failures.** Every bundle the device will not run (``RolloutFailure``: ``REFUSED``, ``WARMUP``,
  ``HEALTH_GATE``, ``CRASH_LOOP``), by bundle sha256. A failed bundle is never prepared again while
  the desired state still names it, and it is reported for as long as it does
  (:meth:`RolloutLedger.forget_unless`).
- **Crash accounting.** ``watch`` names the candidate bundle being warmed up, switched to or
  watched by the health gate; it is written (atomically, fsync'ed) *before* the warm-up starts.
  ``running`` is true from :meth:`RolloutLedger.started` until :meth:`RolloutLedger.stopped_cleanly`.
  A start that finds ``running`` still true follows an unclean end (a crash, SIGKILL, power cut):
  it counts one crash against the watched bundle (:meth:`RolloutLedger.started` returns it).
  The count goes back to zero when the health gate passes the bundle or the agent stops cleanly;
  at :data:`CRASH_LOOP_LIMIT` crashes in a row the caller quarantines it.

Every change is written at once with :func:`agent.fsutil.atomic_write`; an unreadable file is
logged and read as empty (the device then retries what it had refused: never worse than running
what it ran).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.fsutil import atomic_write
from protos import sync_pb2

__all__ = ["CRASH_LOOP_LIMIT", "Failure", "RolloutLedger", "Watch"]

log = logging.getLogger(__name__)

CRASH_LOOP_LIMIT = 3
"""Unclean starts in a row with the same candidate watched before it is quarantined."""

_KINDS = {
    "REFUSED": sync_pb2.RolloutFailure.REFUSED,
    "WARMUP": sync_pb2.RolloutFailure.WARMUP,
    "HEALTH_GATE": sync_pb2.RolloutFailure.HEALTH_GATE,
    "CRASH_LOOP": sync_pb2.RolloutFailure.CRASH_LOOP,
}


@dataclass(frozen=True)
class Failure:
    """A bundle the device will not run."""

    rollout_id: str
    workflow_id: str
    bundle_sha256: str
    kind: str
    """``REFUSED``, ``WARMUP``, ``HEALTH_GATE`` or ``CRASH_LOOP``."""
    reason: str
    at: float

    def to_proto(self, out: sync_pb2.RolloutFailure) -> None:
        out.rollout_id = self.rollout_id
        out.workflow_id = self.workflow_id
        out.bundle_sha256 = self.bundle_sha256
        out.kind = _KINDS[self.kind]
        out.reason = self.reason
        out.at.FromNanoseconds(round(self.at * 1e9))


@dataclass(frozen=True)
class Watch:
    """The candidate bundle a crash would be blamed on."""

    workflow_id: str
    rollout_id: str
    bundle_sha256: str


class RolloutLedger:
    """The persisted failures and crash accounting of the module docstring. Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.failures: dict[str, Failure] = {}
        self.crashes: dict[str, int] = {}
        self.watch: Watch | None = None
        self.running = False
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.failures = {sha: Failure(**entry) for sha, entry in data.get("failures", {}).items()}
            self.crashes = {str(k): int(v) for k, v in data.get("crashes", {}).items()}
            watch = data.get("watch")
            self.watch = Watch(**watch) if watch else None
            self.running = bool(data.get("running", False))
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.error("rollout: %s is unreadable (%s): starting with no failures", self.path, exc)

    def _save(self) -> None:
        data: dict[str, Any] = {
            "failures": {sha: asdict(f) for sha, f in sorted(self.failures.items())},
            "crashes": self.crashes,
            "watch": asdict(self.watch) if self.watch else None,
            "running": self.running,
        }
        try:
            atomic_write(self.path, json.dumps(data, indent=2, sort_keys=True).encode())
        except OSError as exc:
            log.error("rollout: cannot write %s: %s", self.path, exc)

    # ---- failures ------------------------------------------------------------------------------

    def failure(self, bundle_sha256: str) -> Failure | None:
        with self._lock:
            return self.failures.get(bundle_sha256)

    def fail(self, watch: Watch, kind: str, reason: str) -> Failure:
        """Record that ``watch``'s bundle failed (the first failure of a bundle is kept)."""
        if kind not in _KINDS:
            raise ValueError(f"unknown rollout failure kind {kind!r}")
        with self._lock:
            failure = self.failures.get(watch.bundle_sha256)
            if failure is None:
                failure = Failure(
                    watch.rollout_id, watch.workflow_id, watch.bundle_sha256, kind, reason, time.time()
                )
                self.failures[watch.bundle_sha256] = failure
            self.crashes.pop(watch.bundle_sha256, None)
            if self.watch is not None and self.watch.bundle_sha256 == watch.bundle_sha256:
                self.watch = None
            self._save()
        log.error(
            "rollout %s: bundle %s… of workflow '%s' failed (%s): %s",
            watch.rollout_id,
            watch.bundle_sha256[:12],
            watch.workflow_id,
            kind,
            reason,
        )
        return failure

    def forget_unless(self, wanted: set[str]) -> None:
        """Forget the failures and crash counts of bundles the desired state no longer names."""
        with self._lock:
            stale = [sha for sha in self.failures if sha not in wanted]
            stale_crashes = [sha for sha in self.crashes if sha not in wanted]
            if not stale and not stale_crashes:
                return
            for sha in stale:
                del self.failures[sha]
            for sha in stale_crashes:
                del self.crashes[sha]
            self._save()

    def report(self, out: sync_pb2.ReportedState) -> None:
        with self._lock:
            failures = sorted(self.failures.values(), key=lambda f: (f.at, f.bundle_sha256))
        for failure in failures:
            failure.to_proto(out.rollout_failures.add())

    # ---- crash accounting ----------------------------------------------------------------------

    def start_watch(self, watch: Watch) -> None:
        """``watch``'s bundle is about to be warmed up / switched to: blame crashes on it."""
        with self._lock:
            self.watch = watch
            self._save()

    def end_watch(self, bundle_sha256: str, *, healthy: bool) -> None:
        """Stop blaming crashes on the bundle; ``healthy``: it passed, its count starts over."""
        with self._lock:
            changed = False
            if self.watch is not None and self.watch.bundle_sha256 == bundle_sha256:
                self.watch, changed = None, True
            if healthy and self.crashes.pop(bundle_sha256, None) is not None:
                changed = True
            if changed:
                self._save()

    def started(self) -> tuple[Watch, int] | None:
        """Mark the agent running. After an unclean end with a bundle watched, count a crash
        against it and return it with its count of crashes in a row."""
        with self._lock:
            blamed: tuple[Watch, int] | None = None
            if self.running and self.watch is not None:
                sha = self.watch.bundle_sha256
                self.crashes[sha] = self.crashes.get(sha, 0) + 1
                blamed = (self.watch, self.crashes[sha])
            self.running = True
            self._save()
            return blamed

    def stopped_cleanly(self) -> None:
        """The agent stops in order: nothing is blamed at the next start."""
        with self._lock:
            self.running = False
            self.crashes.clear()
            self._save()
