"""Serve models from the store with the device profile's backends, never blocking on a build.

For each model the runtime walks the profile's backend order:

- a backend that cannot run here is skipped with one log line (and counted in ``fallbacks``);
- a backend that would first have to compile an engine (TensorRT: minutes to an hour on a
  Jetson) is built on a background thread, while the next backend in the order serves at once;
  when the build finishes the runtime switches to it between two requests;
- the first backend that loads serves.

``ServedModel.status()`` reports the serving backend and any build in progress, for logs,
metrics and the reported state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.inference.backend import Backend, BackendOptions
from agent.inference.batcher import DynamicBatcher
from agent.inference.errors import BackendUnavailable, InferenceError
from agent.inference.store import ModelRecord, ModelStore

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


@dataclass
class BuildState:
    backend: str
    state: str = "building"  # building | ready | failed
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "state": self.state,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
        }


class ServedModel:
    """A model version being served; ``infer`` is thread-safe and keeps working while a faster
    backend is built behind it."""

    def __init__(self, record: ModelRecord, batcher: DynamicBatcher) -> None:
        self.record = record
        self._batcher = batcher
        self.builds: list[BuildState] = []
        self.switches = 0

    @property
    def backend(self) -> str:
        return self._batcher.session.backend

    @property
    def batcher(self) -> DynamicBatcher:
        return self._batcher

    def infer(self, sample: Mapping[str, np.ndarray], timeout: float | None = None) -> dict[str, np.ndarray]:
        return self._batcher.infer(sample, timeout)

    def switch_to(self, batcher: DynamicBatcher) -> None:
        """Serve from ``batcher`` from the next request on; the old one drains and closes."""
        old, self._batcher = self._batcher, batcher
        self.switches += 1
        log.info(
            "model %s v%s now served by %s (was %s)",
            self.record.model_id,
            self.record.version,
            batcher.session.backend,
            old.session.backend,
        )
        old.close()
        old.session.close()

    def status(self) -> dict[str, Any]:
        return {
            "model_id": self.record.model_id,
            "version": self.record.version,
            "sha256": self.record.sha256,
            "backend": self.backend,
            "builds": [build.to_dict() for build in self.builds],
            "batches": self._batcher.batches,
            "samples": self._batcher.samples,
        }

    def close(self) -> None:
        self._batcher.close()
        self._batcher.session.close()


class ModelRuntime:
    """Loads and caches ``ServedModel``s. One per agent process."""

    def __init__(
        self,
        store: ModelStore,
        backends: Sequence[Backend],
        options: BackendOptions | None = None,
        *,
        max_wait_ms: float = 2.0,
    ) -> None:
        if not backends:
            raise ValueError("at least one backend is needed")
        self.store = store
        self.backends = list(backends)
        self.options = options or BackendOptions()
        self.max_wait_ms = max_wait_ms
        self.fallbacks: dict[str, int] = {}
        self._models: dict[tuple[str, str], ServedModel] = {}
        self._lock = threading.Lock()
        self._build_threads: list[threading.Thread] = []

    def get(self, model_id: str, version: str | None = None) -> ServedModel:
        """The served model, loading it on first use. Raises ``ModelNotFound`` or
        ``BackendUnavailable`` (no backend in the order can serve it)."""
        record = self.store.resolve(model_id, version)
        key = (record.model_id, record.version)
        with self._lock:
            served = self._models.get(key)
            if served is None:
                served = self._load(record)
                self._models[key] = served
            return served

    def _batcher(self, record: ModelRecord, backend: Backend) -> DynamicBatcher:
        session = backend.load(record, self.options)
        return DynamicBatcher(
            session, model=record.model_id, max_batch=self.options.max_batch, max_wait_ms=self.max_wait_ms
        )

    def _load(self, record: ModelRecord) -> ServedModel:
        reasons: list[str] = []
        deferred: list[Backend] = []
        for backend in self.backends:
            reason = backend.unavailable_reason()
            if reason is not None:
                self.fallbacks[backend.name] = self.fallbacks.get(backend.name, 0) + 1
                log.warning("model %s: backend %s skipped: %s", record.model_id, backend.name, reason)
                reasons.append(f"{backend.name}: {reason}")
                continue
            if backend.needs_build(record, self.options):
                deferred.append(backend)
                continue
            try:
                served = ServedModel(record, self._batcher(record, backend))
            except InferenceError as exc:
                self.fallbacks[backend.name] = self.fallbacks.get(backend.name, 0) + 1
                log.warning("model %s: backend %s failed to load: %s", record.model_id, backend.name, exc)
                reasons.append(f"{backend.name}: {exc}")
                continue
            if deferred:
                self._build_in_background(served, deferred[0])
            return served
        if deferred:  # nothing else can serve: build in the foreground
            backend = deferred[0]
            log.warning(
                "model %s: no backend can serve while %s builds; building now", record.model_id, backend.name
            )
            return ServedModel(record, self._batcher(record, backend))
        raise BackendUnavailable(
            "any", f"no backend can serve model '{record.model_id}': " + "; ".join(reasons)
        )

    def _build_in_background(self, served: ServedModel, backend: Backend) -> None:
        build = BuildState(backend.name)
        served.builds.append(build)
        log.info(
            "model %s v%s: building a %s engine in the background; serving with %s meanwhile",
            served.record.model_id,
            served.record.version,
            backend.name,
            served.backend,
        )

        def work() -> None:
            try:
                batcher = self._batcher(served.record, backend)
            except Exception as exc:  # noqa: BLE001 - a failed build leaves the current backend serving
                build.state, build.error, build.finished = "failed", str(exc), time.time()
                log.error(
                    "model %s: %s build failed, staying on %s: %s",
                    served.record.model_id,
                    backend.name,
                    served.backend,
                    exc,
                )
                return
            build.state, build.finished = "ready", time.time()
            served.switch_to(batcher)

        thread = threading.Thread(target=work, name=f"edgefleet-build-{served.record.model_id}", daemon=True)
        self._build_threads.append(thread)
        thread.start()

    def wait_for_builds(self, timeout: float | None = None) -> None:
        """Block until background builds finish (for tests and orderly shutdown)."""
        for thread in list(self._build_threads):
            thread.join(timeout)

    def loaded(self) -> list[ServedModel]:
        with self._lock:
            return list(self._models.values())

    def close(self) -> None:
        with self._lock:
            models, self._models = list(self._models.values()), {}
        for served in models:
            served.close()
