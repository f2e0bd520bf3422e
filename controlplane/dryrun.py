"""Dry runs: a stored workflow version run on the control plane itself, on sample inputs, before
any rollout (``POST /api/v1/workflows/{name}/versions/{version}/runs``, the SDK's
``WorkflowClient.execute_workflow`` pointed at the control plane).

A dry run is the device's run, on the control plane's CPU: the same compiler and nodes, the model
versions recorded with the workflow version (pinned, ONNX Runtime CPU, no batching), and the
newest version of every threshold set the graph's ``threshold`` nodes name (a set never uploaded
leaves the node's inline thresholds). ``emit`` nodes put their events in the result; nothing
leaves the control plane.

Compiled plans are kept for the :data:`CACHED_PLANS` most recently used workflow versions, each
with its own model store under ``<data_dir>/dryrun/<name>/<version>/`` (filled from the blob
store, digests checked by the model store's install), so a second run costs only the run.
onnxruntime is imported on the first dry run, never at control-plane start.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controlplane.desired import threshold_sets_named
from controlplane.store.schema import models, threshold_sets

if TYPE_CHECKING:
    from agent.inference.runtime import ModelRuntime
    from agent.workflow import Executor, Plan, RunResult
    from controlplane.artifacts.blobs import BlobStore

__all__ = ["CACHED_PLANS", "DryRunError", "DryRunner"]

CACHED_PLANS = 4


class DryRunError(Exception):
    """The workflow version cannot be dry-run here; the message says why (a model blob missing,
    a graph that no longer compiles against what the control plane holds)."""


@dataclass
class _Compiled:
    plan: Plan
    runtime: ModelRuntime


class DryRunner:
    """Runs stored workflow versions; thread-safe. :meth:`close` releases every session."""

    def __init__(self, data_dir: Path, blobs: BlobStore, schema_dirs: tuple[Path, ...] = ()) -> None:
        self.root = data_dir / "dryrun"
        self.blobs = blobs
        self.schema_dirs = schema_dirs
        self._plans: OrderedDict[tuple[str, int], _Compiled] = OrderedDict()
        self._lock = threading.Lock()
        self._executor: Executor | None = None

    def run(self, conn: Connection, row: Mapping[str, Any], document: Any) -> RunResult:
        """Run the workflow version ``row`` (a ``workflows`` row) once on ``document``."""
        compiled = self._compiled(conn, row)
        from agent.workflow import Executor

        with self._lock:
            if self._executor is None:
                self._executor = Executor(max_workers=4)
            executor = self._executor
        return executor.run(compiled.plan, document)

    def _compiled(self, conn: Connection, row: Mapping[str, Any]) -> _Compiled:
        key = (str(row["name"]), int(row["version"]))
        with self._lock:
            compiled = self._plans.get(key)
            if compiled is not None:
                self._plans.move_to_end(key)
                return compiled
        compiled = self._compile(conn, row)
        with self._lock:
            self._plans[key] = compiled
            while len(self._plans) > CACHED_PLANS:
                _, evicted = self._plans.popitem(last=False)
                evicted.runtime.close()
        return compiled

    def _compile(self, conn: Connection, row: Mapping[str, Any]) -> _Compiled:
        from agent.inference.backend import BackendOptions
        from agent.inference.onnxruntime_backend import OnnxRuntimeBackend
        from agent.inference.runtime import ModelRuntime
        from agent.inference.store import ModelStore
        from agent.nodes.inference import MODEL_VERSIONS_RESOURCE
        from agent.thresholds import ThresholdStore
        from agent.workflow import CompileError, CompileOptions, compile_workflow

        store = ModelStore(self.root / str(row["name"]) / str(row["version"]) / "models")
        pins: dict[str, str] = {}
        for ref in row["models"]:
            name, version = str(ref["name"]), int(ref["version"])
            sha256 = conn.execute(
                sa.select(models.c.sha256).where(models.c.name == name, models.c.version == version)
            ).scalar()
            if sha256 is None or not self.blobs.exists(sha256):
                raise DryRunError(f"model '{name}' version {version}: its file is not in the blob store")
            if str(version) not in store.versions(name):
                with self.blobs.open(sha256) as source:
                    store.install(source, name, str(version))
            pins[name] = str(version)
        thresholds = ThresholdStore()
        for set_name in sorted(threshold_sets_named(row["document"])):
            newest = conn.execute(
                sa.select(threshold_sets.c.version, threshold_sets.c.thresholds)
                .where(threshold_sets.c.name == set_name)
                .order_by(threshold_sets.c.version.desc())
                .limit(1)
            ).first()
            if newest is not None:
                thresholds.put(set_name, newest.thresholds, newest.version)
        runtime = ModelRuntime(store, [OnnxRuntimeBackend()], BackendOptions(max_batch=1))
        options = CompileOptions(
            schema_dirs=self.schema_dirs,
            resources={"models": runtime, "thresholds": thresholds, MODEL_VERSIONS_RESOURCE: pins},
        )
        try:
            plan = compile_workflow(dict(row["document"]), options)
        except CompileError as exc:
            runtime.close()
            raise DryRunError(
                f"workflow '{row['name']}' version {row['version']} does not compile: {exc}"
            ) from exc
        return _Compiled(plan, runtime)

    def close(self) -> None:
        with self._lock:
            plans, self._plans = list(self._plans.values()), OrderedDict()
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.close()
        for compiled in plans:
            compiled.runtime.close()
