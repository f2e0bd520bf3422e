"""Threshold sets: named, versioned per-class thresholds, assigned to groups or devices.

A ``threshold`` node names the set it reads (``threshold_set``), so per-node thresholds are one
set per node; inside a set, values are per class (``default`` applies to any other class).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, field_validator

from controlplane import audit
from controlplane.access import Principal
from controlplane.api.deps import ServicesDep, guard
from controlplane.api.http import NAME_PATTERN, NamePath, Page, PageDep, VersionPath, paginate
from controlplane.api.routes.assignments import (
    AssignmentIn,
    AssignmentOut,
    TargetKind,
    assign,
    assignment_out,
)
from controlplane.api.routes.releases import (
    SignedManifestOut,
    artifact_reader,
    load_version,
    manifest_out,
    next_version,
    sign_release,
)
from controlplane.audit import canonical_json
from controlplane.store import as_utc, utcnow
from controlplane.store.schema import threshold_assignments, threshold_sets

router = APIRouter(prefix="/api/v1", tags=["thresholds"])

ClassName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class ThresholdSetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    values: dict[ClassName, Annotated[float, Field(strict=True)]] = Field(
        min_length=1, max_length=1000, description="Class → threshold."
    )
    version: int | None = Field(None, ge=1, le=2**31 - 1, description="Newest + 1 when unset.")

    @field_validator("values")
    @classmethod
    def _finite(cls, values: dict[str, float]) -> dict[str, float]:
        for key, value in values.items():
            if not math.isfinite(value):
                raise ValueError(f"threshold '{key}' must be a finite number")
        return values


class ThresholdSetOut(BaseModel):
    name: str
    version: int
    values: dict[str, float]
    sha256: str
    created_at: datetime
    created_by: str


def _out(row: Mapping[Any, Any]) -> ThresholdSetOut:
    return ThresholdSetOut(
        name=row["name"],
        version=row["version"],
        values=row["thresholds"],
        sha256=row["sha256"],
        created_at=as_utc(row["created_at"]),
        created_by=row["created_by"],
    )


def content_of(name: str, version: int, values: Mapping[str, float]) -> bytes:
    """The bytes a device fetches and the manifest signs."""
    return canonical_json({"name": name, "version": version, "values": dict(values)})


@router.post("/thresholds/{name}/versions", status_code=201, response_model=ThresholdSetOut)
def create_threshold_set(
    name: NamePath,
    body: ThresholdSetIn,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("thresholds", "create"))],
) -> ThresholdSetOut:
    with svc.db.write() as conn:
        version = next_version(conn, threshold_sets, "threshold set", name, body.version)
        content = content_of(name, version, body.values)
        digest = hashlib.sha256(content).hexdigest()
        row = {
            "name": name,
            "version": version,
            "thresholds": body.values,
            "sha256": digest,
            "size": len(content),
            "manifest": sign_release(svc, "thresholds", name, version, digest, len(content)),
            "created_at": utcnow(),
            "created_by": caller.actor,
        }
        conn.execute(threshold_sets.insert().values(**row))
        audit.append(
            conn,
            actor=caller.actor,
            action="thresholds.create",
            resource=f"thresholds/{name}/{version}",
            after=body.values,
        )
    return _out(row)


@router.get("/thresholds", response_model=Page[ThresholdSetOut])
def list_threshold_sets(
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("thresholds", "read"))],
    page: PageDep,
    name: Annotated[str | None, Query(max_length=128)] = None,
) -> Page[ThresholdSetOut]:
    with svc.db.read() as conn:
        query = sa.select(threshold_sets)
        if name is not None:
            query = query.where(threshold_sets.c.name == name)
        return paginate(conn, query, [threshold_sets.c.name, threshold_sets.c.version], page, _out)


@router.get("/thresholds/{name}/versions/{version}", response_model=ThresholdSetOut)
def show_threshold_set(
    name: NamePath,
    version: VersionPath,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("thresholds", "read"))],
) -> ThresholdSetOut:
    with svc.db.read() as conn:
        return _out(load_version(conn, threshold_sets, "threshold set", name, version))


@router.get(
    "/thresholds/{name}/versions/{version}/manifest", response_model=SignedManifestOut, tags=["device"]
)
def threshold_manifest(
    name: NamePath,
    version: VersionPath,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(artifact_reader("thresholds"))],
) -> dict[str, Any]:
    with svc.db.read() as conn:
        return manifest_out(load_version(conn, threshold_sets, "threshold set", name, version))


@router.get(
    "/thresholds/{name}/versions/{version}/content",
    responses={200: {"content": {"application/json": {}}}},
    tags=["device"],
)
def threshold_content(
    name: NamePath,
    version: VersionPath,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(artifact_reader("thresholds"))],
) -> Response:
    with svc.db.read() as conn:
        row = load_version(conn, threshold_sets, "threshold set", name, version)
    return Response(
        content_of(name, version, row["thresholds"]),
        media_type="application/json",
        headers={"ETag": f'"{row["sha256"]}"'},
    )


@router.put("/thresholds/{name}/assignments/{target_kind}/{target}", response_model=AssignmentOut)
def assign_threshold_set(
    name: NamePath,
    target_kind: TargetKind,
    target: Annotated[str, PathParam(pattern=NAME_PATTERN, max_length=128)],
    body: AssignmentIn,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("thresholds", "update"))],
) -> AssignmentOut:
    """Make ``version`` of set ``name`` the one a group or a device runs (replaces any earlier)."""
    return assign(
        svc,
        assignments=threshold_assignments,
        versions=threshold_sets,
        kind="threshold set",
        name=name,
        target_kind=target_kind,
        target=target,
        version=body.version,
        caller=caller,
    )


@router.get("/thresholds/{name}/assignments", response_model=Page[AssignmentOut])
def list_assignments(
    name: NamePath,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("thresholds", "read"))],
    page: PageDep,
) -> Page[AssignmentOut]:
    query = sa.select(threshold_assignments).where(threshold_assignments.c.name == name)
    keys = [threshold_assignments.c.target_kind, threshold_assignments.c.target]
    with svc.db.read() as conn:
        return paginate(conn, query, keys, page, assignment_out)
