"""Check an uploaded workflow graph with the agent's own compiler, against the control plane's
model registry instead of a device's model store.

``model_inference`` nodes look their model up through the ``models`` resource when they are
compiled; ``RegistryModels`` answers from the database, so a graph naming a model (or version)
the control plane does not have, or mapping inputs the model does not take, is rejected at
upload with the same message a device would give.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from agent.inference.errors import ModelNotFound
from agent.inference.store import ModelRecord, TensorSpec
from agent.thresholds import ThresholdStore
from agent.workflow import CompileOptions, Plan, builtin_registry, compile_workflow
from controlplane.store.schema import models


class NotInRegistry(ModelNotFound):
    def __init__(self, model_id: str, version: str | None, known: list[str]) -> None:
        super().__init__(model_id, version, known)
        what = f"model '{model_id}'" + (f" version '{version}'" if version else "")
        hint = f" (it has versions {', '.join(known)})" if known else " (it has no version of it)"
        self.args = (f"{what} is not in the control plane's model registry{hint}",)


@dataclass(frozen=True)
class CatalogModel:
    """What a compiling ``model_inference`` node needs: the model's record (inputs, outputs)."""

    record: ModelRecord


class RegistryModels:
    """The ``models`` compile resource, read from the control plane's database."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.used: dict[str, int] = {}

    def get(self, model_id: str, version: str | None = None) -> CatalogModel:
        query = sa.select(models).where(models.c.name == model_id)
        if version is not None:
            if not version.isdigit():
                raise NotInRegistry(model_id, version, self._known(model_id))
            query = query.where(models.c.version == int(version))
        row = self._conn.execute(query.order_by(models.c.version.desc()).limit(1)).mappings().first()
        if row is None:
            raise NotInRegistry(model_id, version, self._known(model_id))
        self.used[model_id] = row["version"]
        return CatalogModel(record=_record(row))

    def _known(self, model_id: str) -> list[str]:
        versions = self._conn.execute(
            sa.select(models.c.version).where(models.c.name == model_id).order_by(models.c.version)
        ).scalars()
        return [str(v) for v in versions]


def _record(row: Mapping[Any, Any]) -> ModelRecord:
    meta = row["onnx"]
    return ModelRecord(
        model_id=row["name"],
        version=str(row["version"]),
        sha256=row["sha256"],
        size=row["size"],
        path=Path("/nonexistent"),
        inputs=tuple(TensorSpec.from_dict(t) for t in meta["inputs"]),
        outputs=tuple(TensorSpec.from_dict(t) for t in meta["outputs"]),
        opset=int(meta.get("opset", {}).get("ai.onnx", 0)),
        producer=meta.get("producer_name", ""),
        installed_at=time.time(),
    )


def check_workflow(
    document: Any, conn: Connection, schema_dirs: tuple[Path, ...]
) -> tuple[Plan, dict[str, int]]:
    """Compile ``document``; returns the plan and the model versions it uses.

    Raises ``agent.workflow.CompileError`` with every problem found."""
    catalog = RegistryModels(conn)
    plan = compile_workflow(
        document,
        CompileOptions(
            registry=builtin_registry(),
            schema_dirs=schema_dirs,
            resources={"models": catalog, "thresholds": ThresholdStore()},
        ),
    )
    return plan, dict(catalog.used)
