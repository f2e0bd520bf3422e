"""The audit log: read it, and verify its hash chain."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from controlplane import audit
from controlplane.access import Principal
from controlplane.api.deps import ServicesDep, guard
from controlplane.api.http import Page, PageDep, paginate
from controlplane.store import as_utc
from controlplane.store.schema import audit_log

router = APIRouter(prefix="/api/v1", tags=["audit"])


class AuditEntryOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    resource: str
    before_digest: str | None
    after_digest: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerifyOut(BaseModel):
    ok: bool
    entries: int
    problems: list[str]


def _out(row: Mapping[Any, Any]) -> AuditEntryOut:
    return AuditEntryOut(**{**row, "at": as_utc(row["at"])})


@router.get("/audit", response_model=Page[AuditEntryOut])
def list_audit(
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("audit", "read"))],
    page: PageDep,
    actor: Annotated[str | None, Query(max_length=160)] = None,
    resource: Annotated[str | None, Query(max_length=255, description="A prefix, e.g. devices/cam-1")] = None,
    order: Annotated[
        Literal["asc", "desc"], Query(description="asc: oldest first; desc: newest first.")
    ] = "asc",
) -> Page[AuditEntryOut]:
    """Entries, oldest first unless ``order=desc``."""
    query = sa.select(audit_log)
    if actor is not None:
        query = query.where(audit_log.c.actor == actor)
    if resource is not None:
        query = query.where(audit_log.c.resource.startswith(resource, autoescape=True))
    with svc.db.read() as conn:
        return paginate(conn, query, [audit_log.c.seq], page, _out, descending=order == "desc")


@router.get("/audit/verify", response_model=AuditVerifyOut)
def verify_audit(
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("audit", "read"))],
) -> AuditVerifyOut:
    """Recompute the hash chain: an edited, deleted or re-ordered entry is reported."""
    with svc.db.read() as conn:
        report = audit.verify(conn)
    return AuditVerifyOut(ok=report.ok, entries=report.entries, problems=report.problems)
