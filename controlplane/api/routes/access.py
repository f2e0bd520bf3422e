"""Operator API tokens and attribute policies (admin only)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from controlplane import audit
from controlplane.access import PermissionSpec, Principal
from controlplane.api.deps import CallerDep, ServicesDep, guard
from controlplane.api.http import (
    NAME_PATTERN,
    NamePath,
    Page,
    PageDep,
    paginate,
    require_if_match,
    set_etag,
)
from controlplane.api.problems import Problem
from controlplane.store import as_utc, utcnow
from controlplane.store.db import Database
from controlplane.store.schema import policies, tokens
from controlplane.tokens import new_token

router = APIRouter(prefix="/api/v1", tags=["access"])

Attributes = dict[
    Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], Annotated[str, Field(max_length=128)]
]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN, description="Who the token is for (shows in the audit log).")
    role: Literal["viewer", "operator", "admin"]
    attributes: Attributes = Field(default_factory=dict, description="Caller attributes policies test.")
    policies: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(default_factory=list, max_length=50)
    ttl_s: int | None = Field(None, ge=60, le=5 * 366 * 24 * 3600, description="Server default when unset.")


class TokenOut(BaseModel):
    id: str
    name: str
    role: str
    attributes: dict[str, str]
    policies: list[str]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="Shown once; only its hash is stored.")


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = Field("", max_length=1024)
    permissions: list[PermissionSpec] = Field(min_length=1, max_length=100)


class PolicyOut(PolicyIn):
    name: str
    created_at: datetime
    revision: int


class WhoAmI(BaseModel):
    kind: Literal["operator", "device"]
    name: str
    token_id: str
    role: str | None
    attributes: dict[str, Any]


@router.get("/whoami", response_model=WhoAmI)
def whoami(caller: CallerDep) -> WhoAmI:
    """The caller behind the bearer token (``edgefleet login`` checks a token with it)."""
    return WhoAmI(
        kind=caller.kind,
        name=caller.subject,
        token_id=caller.token_id,
        role=caller.role,
        attributes=dict(caller.attributes),
    )


def _token_out(row: Mapping[Any, Any]) -> TokenOut:
    return TokenOut(
        id=row["id"],
        name=row["subject"],
        role=row["role"],
        attributes=row["attributes"],
        policies=row["policies"],
        created_at=as_utc(row["created_at"]),
        created_by=row["created_by"],
        expires_at=as_utc(row["expires_at"]),
        revoked_at=as_utc(row["revoked_at"]),
    )


def _policy_out(row: Mapping[Any, Any]) -> PolicyOut:
    return PolicyOut(
        name=row["name"],
        description=row["description"],
        permissions=[PermissionSpec.model_validate(p) for p in row["permissions"]],
        created_at=as_utc(row["created_at"]),
        revision=row["revision"],
    )


def create_operator_token(db: Database, body: TokenCreate, *, actor: str, default_ttl_s: int) -> TokenCreated:
    """Issue an operator token (the API route, and ``edgefleet admin create-token`` on the server)."""
    token = new_token("operator")
    now = utcnow()
    row = {
        "id": token.id,
        "kind": "operator",
        "subject": body.name,
        "role": body.role,
        "attributes": body.attributes,
        "policies": body.policies,
        "secret_hash": token.secret_hash,
        "created_at": now,
        "created_by": actor,
        "expires_at": now + timedelta(seconds=body.ttl_s or default_ttl_s),
        "revoked_at": None,
        "details": {},
    }
    with db.write() as conn:
        if body.policies:
            known = set(
                conn.execute(sa.select(policies.c.name).where(policies.c.name.in_(body.policies))).scalars()
            )
            missing = sorted(set(body.policies) - known)
            if missing:
                raise Problem(422, f"body.policies: no such policy: {', '.join(missing)}", type="validation")
        conn.execute(tokens.insert().values(**row))
        audit.append(
            conn,
            actor=actor,
            action="token.create",
            resource=f"tokens/{token.id}",
            after={k: v for k, v in row.items() if k != "secret_hash"},
        )
    return TokenCreated(**_token_out(row).model_dump(), token=token.token)


@router.post("/tokens", status_code=201, response_model=TokenCreated)
def create_token(
    body: TokenCreate,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("tokens", "create"))],
) -> TokenCreated:
    return create_operator_token(
        svc.db, body, actor=caller.actor, default_ttl_s=svc.settings.operator_token_ttl_s
    )


@router.get("/tokens", response_model=Page[TokenOut])
def list_tokens(
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("tokens", "read"))],
    page: PageDep,
) -> Page[TokenOut]:
    with svc.db.read() as conn:
        return paginate(
            conn, sa.select(tokens).where(tokens.c.kind == "operator"), [tokens.c.id], page, _token_out
        )


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(
    token_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")],
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("tokens", "delete"))],
) -> Response:
    """Revoke an operator token at once (a device credential is revoked by decommissioning)."""
    with svc.db.write() as conn:
        row = (
            conn.execute(sa.select(tokens).where(tokens.c.id == token_id, tokens.c.kind == "operator"))
            .mappings()
            .first()
        )
        if row is None:
            raise Problem(404, f"operator token '{token_id}' does not exist", type="not-found")
        if row["revoked_at"] is None:
            conn.execute(tokens.update().where(tokens.c.id == token_id).values(revoked_at=utcnow()))
            audit.append(conn, actor=caller.actor, action="token.revoke", resource=f"tokens/{token_id}")
    return Response(status_code=204)


@router.get("/policies", response_model=Page[PolicyOut])
def list_policies(
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("policies", "read"))],
    page: PageDep,
) -> Page[PolicyOut]:
    with svc.db.read() as conn:
        return paginate(conn, sa.select(policies), [policies.c.name], page, _policy_out)


@router.get("/policies/{name}", response_model=PolicyOut)
def show_policy(
    name: NamePath,
    response: Response,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("policies", "read"))],
) -> PolicyOut:
    with svc.db.read() as conn:
        row = conn.execute(sa.select(policies).where(policies.c.name == name)).mappings().first()
    if row is None:
        raise Problem(404, f"policy '{name}' does not exist", type="not-found")
    set_etag(response, row["revision"])
    return _policy_out(row)


@router.put("/policies/{name}", response_model=PolicyOut)
def put_policy(
    name: NamePath,
    body: PolicyIn,
    request: Request,
    response: Response,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("policies", "update"))],
) -> PolicyOut:
    """Create a policy, or replace it (then ``If-Match`` is required). ``If-None-Match: *``
    creates only: 412 if the policy exists."""
    permissions = [p.model_dump(mode="json") for p in body.permissions]
    with svc.db.write() as conn:
        row = conn.execute(sa.select(policies).where(policies.c.name == name)).mappings().first()
        if row is not None and request.headers.get("if-none-match", "").strip() == "*":
            raise Problem(412, f"policy '{name}' already exists", type="precondition-failed")
        after: dict[str, Any]
        if row is None:
            after = {
                "name": name,
                "description": body.description,
                "permissions": permissions,
                "created_at": utcnow(),
                "revision": 1,
            }
            conn.execute(policies.insert().values(**after))
        else:
            require_if_match(request, row["revision"])
            after = {
                **row,
                "description": body.description,
                "permissions": permissions,
                "revision": row["revision"] + 1,
            }
            conn.execute(policies.update().where(policies.c.name == name).values(**after))
        audit.append(
            conn,
            actor=caller.actor,
            action="policy.put",
            resource=f"policies/{name}",
            before=None if row is None else dict(row),
            after=after,
        )
    set_etag(response, after["revision"])
    return _policy_out(after)


@router.delete("/policies/{name}", status_code=204)
def delete_policy(
    name: NamePath,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("policies", "delete"))],
) -> Response:
    with svc.db.write() as conn:
        row = conn.execute(sa.select(policies).where(policies.c.name == name)).mappings().first()
        if row is None:
            raise Problem(404, f"policy '{name}' does not exist", type="not-found")
        conn.execute(policies.delete().where(policies.c.name == name))
        audit.append(
            conn, actor=caller.actor, action="policy.delete", resource=f"policies/{name}", before=dict(row)
        )
    return Response(status_code=204)
