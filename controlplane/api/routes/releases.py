"""What models, workflows and threshold sets share: immutable versions that only go up, a signed
release manifest per version, and who may fetch the bytes (operators who may read the
resource, and enrolled devices)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from agent.manifest import ArtifactKind
from controlplane.access import Principal
from controlplane.api.deps import Services, authenticate, ensure_item
from controlplane.api.problems import Problem
from controlplane.signing import make_manifest


class SignedManifestOut(BaseModel):
    manifest: dict[str, Any]
    signature: str
    key_id: str


class VersionRef(BaseModel):
    name: str
    version: int


def next_version(conn: Connection, table: sa.Table, kind: str, name: str, requested: int | None) -> int:
    """The version a new upload gets: ``requested`` if it is newer than every stored one, else
    one more than the newest. Stored versions never change."""
    latest = conn.execute(sa.select(sa.func.max(table.c.version)).where(table.c.name == name)).scalar()
    if requested is None:
        return int(latest or 0) + 1
    if latest is not None and requested <= latest:
        raise Problem(
            409,
            f"{kind} '{name}' already has version {latest}; versions are immutable, upload a newer one",
            type="version-exists",
            latest=latest,
        )
    return requested


def load_version(conn: Connection, table: sa.Table, kind: str, name: str, version: int) -> Mapping[Any, Any]:
    row = (
        conn.execute(sa.select(table).where(table.c.name == name, table.c.version == version))
        .mappings()
        .first()
    )
    if row is None:
        raise Problem(404, f"{kind} '{name}' has no version {version}", type="not-found")
    return row


def sign_release(
    svc: Services, kind: ArtifactKind, name: str, version: int, sha256: str, size: int
) -> dict[str, Any]:
    manifest = make_manifest(
        kind, name, version, sha256, size, lifetime=timedelta(days=svc.settings.manifest_lifetime_days)
    )
    signed: dict[str, Any] = json.loads(svc.signer.sign(manifest).to_json())
    return signed


def manifest_out(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The stored signed manifest, as signed (re-serialising could change the bytes)."""
    manifest: dict[str, Any] = row["manifest"]
    return manifest


def artifact_reader(resource: str) -> Callable[..., Awaitable[Principal]]:
    """Operators who may read ``resource``, or any enrolled device."""

    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if principal.kind == "device" or principal.may_allow_item(resource, "read"):
            return principal
        raise Problem(
            403,
            f"operator '{principal.subject}' (role {principal.role}) may not read {resource}",
            type="forbidden",
        )

    return dependency


def ensure_reader(principal: Principal, resource: str, labels: Mapping[Any, Any]) -> None:
    if principal.kind != "device":
        ensure_item(principal, resource, "read", labels)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
