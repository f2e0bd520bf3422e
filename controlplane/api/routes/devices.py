"""Devices: enrollment, the registry, labels, decommissioning, and groups."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from controlplane import audit
from controlplane.access import Principal
from controlplane.api.deps import ServicesDep, device_caller, ensure_item, guard, guard_item
from controlplane.api.http import (
    NAME_PATTERN,
    NamePath,
    Page,
    PageDep,
    PageParams,
    encode_cursor,
    etag,
    json_response,
    label_query,
    paginate,
    require_if_match,
    set_etag,
)
from controlplane.api.problems import Problem
from controlplane.broker.config import password_hash
from controlplane.fleet import groups_of, in_group
from controlplane.store import as_utc, utcnow
from controlplane.store.schema import devices, groups, tokens
from controlplane.tokens import new_token, parse_token, secret_matches

router = APIRouter(prefix="/api/v1", tags=["devices"])

Labels = dict[
    Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")],
    Annotated[str, Field(max_length=128)],
]


class EnrollmentTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttl_s: int | None = Field(
        None, ge=60, le=30 * 24 * 3600, description="Lifetime; the server default when unset."
    )
    labels: Labels = Field(
        default_factory=dict, description="Labels given to the device that enrolls with it."
    )
    profile: str | None = Field(None, max_length=128)
    note: str = Field("", max_length=256)


class EnrollmentTokenOut(BaseModel):
    id: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    used_at: datetime | None
    used_by: str | None
    revoked_at: datetime | None
    labels: dict[str, str]
    note: str


class EnrollmentTokenCreated(EnrollmentTokenOut):
    token: str = Field(description="Shown once: give it to the device being enrolled.")


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(max_length=256)
    device_id: str | None = Field(None, pattern=NAME_PATTERN, description="Chosen by the server when unset.")
    hostname: str | None = Field(None, max_length=255)
    profile: str | None = Field(None, max_length=128)
    labels: Labels = Field(default_factory=dict)
    csr: str | None = Field(
        None, max_length=8192, description="PEM certificate signing request for the broker (mutual TLS)."
    )


class MqttAccess(BaseModel):
    host: str | None = Field(
        description="The broker devices connect to; null when the control plane has none."
    )
    port: int
    tls: bool
    username: str
    password: str = Field(description="Shown once; only its hash is stored (in Mosquitto's format).")
    client_certificate: str | None = Field(
        None, description="PEM, signed from the request's CSR; CN = device id."
    )
    ca_certificate: str | None = Field(None, description="PEM of the CA the broker's certificate chains to.")


class Enrolled(BaseModel):
    device_id: str
    credential: str = Field(description="The device's own bearer credential; shown once.")
    mqtt: MqttAccess
    signing_public_key: str = Field(description="PEM: verify release manifests with it.")
    signing_key_id: str
    api_url: str


class DeviceOut(BaseModel):
    id: str
    labels: dict[str, str]
    profile: str | None
    hostname: str | None
    status: str
    enrolled_at: datetime
    last_seen_at: datetime | None
    reported_state: dict[str, Any] | None
    reported_at: datetime | None
    online: bool | None = Field(None, description="From the MQTT status; null before the first connect.")
    status_at: datetime | None = None
    revision: int
    groups: list[str] = Field(default_factory=list)


class DevicePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")],
        Annotated[str, Field(max_length=128)] | None,
    ] = Field(default_factory=dict, description="Merge: a value sets a label, null removes it.")
    profile: str | None = Field(None, max_length=128)


class DeviceSelf(BaseModel):
    device: DeviceOut
    signing_public_key: str
    signing_key_id: str


class GroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = Field("", max_length=1024)
    selector: Labels | None = Field(None, description="Devices whose labels include all of these.")
    devices: list[Annotated[str, Field(pattern=NAME_PATTERN)]] | None = Field(
        None, max_length=10000, description="A static list of device ids."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> GroupIn:
        if (self.selector is None) == (self.devices is None):
            raise ValueError("give exactly one of 'selector' (labels) or 'devices' (a static list)")
        return self


class GroupCreate(GroupIn):
    name: str = Field(pattern=NAME_PATTERN)


class GroupOut(BaseModel):
    name: str
    description: str
    selector: dict[str, str] | None
    devices: list[str] | None
    created_at: datetime
    revision: int


# ---- helpers ---------------------------------------------------------------------------------


def _device_out(row: Mapping[Any, Any], group_names: list[str] | None = None) -> DeviceOut:
    data = {k: v for k, v in row.items() if k != "mqtt_password_hash"}
    for key in ("enrolled_at", "last_seen_at", "reported_at", "status_at"):
        data[key] = as_utc(data.get(key))
    return DeviceOut(**data, groups=group_names or [])


def _group_out(row: Mapping[Any, Any]) -> GroupOut:
    return GroupOut(
        name=row["name"],
        description=row["description"],
        selector=row["selector"],
        devices=row["members"],
        created_at=as_utc(row["created_at"]),
        revision=row["revision"],
    )


def _load_device(conn: Connection, device_id: str) -> Mapping[Any, Any]:
    row = conn.execute(sa.select(devices).where(devices.c.id == device_id)).mappings().first()
    if row is None:
        raise Problem(404, f"device '{device_id}' is not registered", type="not-found")
    return row


def _filtered_page(
    conn: Connection, query: sa.Select[Any], page: PageParams, keep: Callable[[DeviceOut], bool]
) -> Page[DeviceOut]:
    """A page of devices that pass ``keep`` (a filter on labels, which live in JSON): walks the
    table in key order until the page is full."""
    items: list[DeviceOut] = []
    current = page
    while True:
        chunk = paginate(conn, query, [devices.c.id], current, _device_out)
        for device in chunk.items:
            if keep(device):
                items.append(device)
                if len(items) == page.limit:
                    cursor = encode_cursor([device.id])
                    return Page(items=items, next_cursor=cursor)
        if chunk.next_cursor is None:
            return Page(items=items)
        current = PageParams(limit=page.limit, cursor=chunk.next_cursor)


def _token_out(row: Mapping[Any, Any]) -> dict[str, Any]:
    details = row["details"] or {}
    return {
        "id": row["id"],
        "created_at": as_utc(row["created_at"]),
        "created_by": row["created_by"],
        "expires_at": as_utc(row["expires_at"]),
        "used_at": as_utc(row["used_at"]),
        "used_by": details.get("used_by"),
        "revoked_at": as_utc(row["revoked_at"]),
        "labels": details.get("labels", {}),
        "note": details.get("note", ""),
    }


# ---- enrollment ------------------------------------------------------------------------------


@router.post("/enrollment-tokens", status_code=201, response_model=EnrollmentTokenCreated)
def create_enrollment_token(
    body: EnrollmentTokenCreate,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("enrollment_tokens", "create"))],
) -> dict[str, Any]:
    """A single-use token that enrolls one device; it expires after ``ttl_s``."""
    token = new_token("enrollment")
    now = utcnow()
    ttl = body.ttl_s or svc.settings.enrollment_token_ttl_s
    row: dict[str, Any] = {
        "id": token.id,
        "kind": "enrollment",
        "subject": caller.subject,
        "role": None,
        "attributes": {},
        "policies": [],
        "secret_hash": token.secret_hash,
        "created_at": now,
        "created_by": caller.actor,
        "expires_at": now + timedelta(seconds=ttl),
        "details": {"labels": body.labels, "profile": body.profile, "note": body.note},
    }
    with svc.db.write() as conn:
        conn.execute(tokens.insert().values(**row))
        audit.append(
            conn,
            actor=caller.actor,
            action="enrollment_token.create",
            resource=f"enrollment-tokens/{token.id}",
            after={k: v for k, v in row.items() if k != "secret_hash"},
        )
    return {**_token_out({**row, "used_at": None, "revoked_at": None}), "token": token.token}


@router.get("/enrollment-tokens", response_model=Page[EnrollmentTokenOut])
def list_enrollment_tokens(
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("enrollment_tokens", "read"))],
    page: PageDep,
) -> Page[dict[str, Any]]:
    with svc.db.read() as conn:
        query = sa.select(tokens).where(tokens.c.kind == "enrollment")
        return paginate(conn, query, [tokens.c.id], page, _token_out)


@router.delete("/enrollment-tokens/{token_id}", status_code=204)
def revoke_enrollment_token(
    token_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")],
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("enrollment_tokens", "delete"))],
) -> Response:
    with svc.db.write() as conn:
        row = (
            conn.execute(sa.select(tokens).where(tokens.c.id == token_id, tokens.c.kind == "enrollment"))
            .mappings()
            .first()
        )
        if row is None:
            raise Problem(404, f"enrollment token '{token_id}' does not exist", type="not-found")
        if row["revoked_at"] is None:
            conn.execute(tokens.update().where(tokens.c.id == token_id).values(revoked_at=utcnow()))
            audit.append(
                conn,
                actor=caller.actor,
                action="enrollment_token.revoke",
                resource=f"enrollment-tokens/{token_id}",
            )
    return Response(status_code=204)


@router.post("/enroll", status_code=201, response_model=Enrolled, tags=["device"])
def enroll(body: EnrollRequest, svc: ServicesDep) -> Enrolled:
    """Exchange a single-use enrollment token for the device's own credential."""
    parsed = parse_token(body.token)
    if parsed is None or parsed.kind != "enrollment":
        raise Problem(401, "body.token: not an edgefleet enrollment token", type="unauthorized")
    now = utcnow()
    device_id = body.device_id or f"dev-{new_token('device').id[:12]}"
    credential = new_token("device")
    client_certificate = ca_certificate = serial = None
    if body.csr is not None:
        from controlplane.broker.ca import CsrRejected, certificate_serial

        authority = svc.certificate_authority()
        try:
            client_certificate = authority.sign_csr(body.csr.encode(), device_id).decode()
            serial = certificate_serial(client_certificate.encode())
        except CsrRejected as exc:
            raise Problem(422, f"body.csr: {exc}", type="validation") from exc
        ca_certificate = authority.ca_pem.decode()
    with svc.db.write() as conn:
        row = conn.execute(sa.select(tokens).where(tokens.c.id == parsed.id)).mappings().first()
        if (
            row is None
            or row["kind"] != "enrollment"
            or not secret_matches(parsed.secret, row["secret_hash"])
        ):
            raise Problem(401, "body.token: unknown enrollment token", type="unauthorized")
        if row["revoked_at"] is not None:
            raise Problem(401, f"enrollment token {parsed.id} was revoked", type="unauthorized")
        if row["used_at"] is not None:
            raise Problem(401, f"enrollment token {parsed.id} was already used", type="unauthorized")
        expires = as_utc(row["expires_at"])
        if expires is not None and expires <= now:
            raise Problem(
                401, f"enrollment token {parsed.id} expired at {expires.isoformat()}", type="unauthorized"
            )
        if conn.execute(sa.select(devices.c.id).where(devices.c.id == device_id)).first() is not None:
            raise Problem(409, f"body.device_id: device '{device_id}' is already registered", type="conflict")
        details = dict(row["details"] or {})
        claimed = conn.execute(
            tokens.update()
            .where(tokens.c.id == parsed.id, tokens.c.used_at.is_(None))
            .values(used_at=now, details={**details, "used_by": device_id})
        )
        if claimed.rowcount != 1:
            raise Problem(401, f"enrollment token {parsed.id} was already used", type="unauthorized")
        mqtt_password = secrets.token_urlsafe(24)
        device = {
            "id": device_id,
            "mqtt_password_hash": password_hash(mqtt_password),
            "certificate_serial": serial,
            "labels": {**details.get("labels", {}), **body.labels},
            "profile": body.profile or details.get("profile"),
            "hostname": body.hostname,
            "status": "active",
            "enrolled_at": now,
            "last_seen_at": now,
            "reported_state": None,
            "reported_at": None,
            "revision": 1,
        }
        conn.execute(devices.insert().values(**device))
        conn.execute(
            tokens.insert().values(
                id=credential.id,
                kind="device",
                subject=device_id,
                role=None,
                attributes={},
                policies=[],
                secret_hash=credential.secret_hash,
                created_at=now,
                created_by=f"enrollment:{parsed.id}",
                expires_at=None,
                details={},
            )
        )
        audit.append(
            conn,
            actor=f"enrollment:{parsed.id}",
            action="device.enroll",
            resource=f"devices/{device_id}",
            after=dict(_load_device(conn, device_id)),
        )
        changed = svc.refresh_desired(conn, [device_id])
    svc.publish_desired(changed)
    svc.broker_users_changed()
    settings = svc.settings
    return Enrolled(
        device_id=device_id,
        credential=credential.token,
        mqtt=MqttAccess(
            host=settings.mqtt_public_host or settings.mqtt_host,
            port=settings.mqtt_public_port or settings.mqtt_port,
            tls=settings.mqtt_tls,
            username=device_id,
            password=mqtt_password,
            client_certificate=client_certificate,
            ca_certificate=ca_certificate,
        ),
        signing_public_key=svc.signer.public_key_pem(),
        signing_key_id=svc.signer.key_id,
        api_url=svc.settings.base_url,
    )


# ---- devices ---------------------------------------------------------------------------------


@router.get("/devices", response_model=Page[DeviceOut])
async def list_devices(
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("devices", "read"))],
    page: PageDep,
    status: Annotated[str | None, Query(pattern=r"^(active|decommissioned)$")] = None,
    label: Annotated[
        list[str] | None, Query(description="key=value; repeat to require several.", max_length=20)
    ] = None,
) -> Response:
    """Devices by id; ``label=k=v`` (repeatable) and ``status`` filter them."""
    query = sa.select(devices)
    if status is not None:
        query = query.where(devices.c.status == status)
    wanted = label_query(label)

    def fetch() -> Page[DeviceOut]:
        with svc.db.read() as conn:
            if not wanted:
                return paginate(conn, query, [devices.c.id], page, _device_out)
            return _filtered_page(
                conn, query, page, lambda d: all(d.labels.get(k) == v for k, v in wanted.items())
            )

    return json_response(await run_in_threadpool(fetch))


@router.get("/devices/{device_id}", response_model=DeviceOut)
async def show_device(
    device_id: NamePath,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard_item("devices", "read"))],
) -> Response:
    def fetch() -> DeviceOut:
        with svc.db.read() as conn:
            row = _load_device(conn, device_id)
            ensure_item(caller, "devices", "read", row["labels"])
            return _device_out(row, groups_of(conn, device_id, row["labels"]))

    out = await run_in_threadpool(fetch)
    return json_response(out, headers={"ETag": etag(out.revision)})


@router.patch("/devices/{device_id}", response_model=DeviceOut)
def update_device(
    device_id: NamePath,
    body: DevicePatch,
    request: Request,
    response: Response,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard_item("devices", "update"))],
) -> DeviceOut:
    """Change labels (merge: null removes a label) or the profile. Needs ``If-Match``."""
    with svc.db.write() as conn:
        row = _load_device(conn, device_id)
        ensure_item(caller, "devices", "update", row["labels"])
        require_if_match(request, row["revision"])
        if row["status"] != "active":
            raise Problem(409, f"device '{device_id}' is decommissioned", type="conflict")
        labels = dict(row["labels"])
        for key, value in body.labels.items():
            if value is None:
                labels.pop(key, None)
            else:
                labels[key] = value
        changes: dict[str, Any] = {"labels": labels, "revision": row["revision"] + 1}
        if "profile" in body.model_fields_set:
            changes["profile"] = body.profile
        conn.execute(devices.update().where(devices.c.id == device_id).values(**changes))
        after = {**row, **changes}
        audit.append(
            conn,
            actor=caller.actor,
            action="device.update",
            resource=f"devices/{device_id}",
            before=dict(row),
            after=after,
        )
        changed = svc.refresh_desired(conn, [device_id])
        out = _device_out(after, groups_of(conn, device_id, labels))
    svc.publish_desired(changed)
    set_etag(response, after["revision"])
    return out


@router.post("/devices/{device_id}/decommission", response_model=DeviceOut)
def decommission_device(
    device_id: NamePath,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard_item("devices", "delete"))],
) -> DeviceOut:
    """Retire a device: its credential is revoked at once; its history is kept."""
    now = utcnow()
    with svc.db.write() as conn:
        row = _load_device(conn, device_id)
        ensure_item(caller, "devices", "delete", row["labels"])
        if row["status"] == "decommissioned":
            raise Problem(409, f"device '{device_id}' is already decommissioned", type="conflict")
        changes = {"status": "decommissioned", "decommissioned_at": now, "revision": row["revision"] + 1}
        conn.execute(devices.update().where(devices.c.id == device_id).values(**changes))
        conn.execute(
            tokens.update()
            .where(tokens.c.kind == "device", tokens.c.subject == device_id, tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        after = {**row, **changes}
        audit.append(
            conn,
            actor=caller.actor,
            action="device.decommission",
            resource=f"devices/{device_id}",
            before=dict(row),
            after=after,
        )
    svc.clear_desired(device_id)
    svc.broker_users_changed(revoked=True)
    return _device_out(after)


@router.get("/device/self", response_model=DeviceSelf, tags=["device"])
def device_self(svc: ServicesDep, caller: Annotated[Principal, Depends(device_caller)]) -> DeviceSelf:
    """The calling device's own record and the key its artifacts are signed with."""
    with svc.db.read() as conn:
        row = _load_device(conn, caller.subject)
        out = _device_out(row, groups_of(conn, caller.subject, row["labels"]))
    return DeviceSelf(
        device=out, signing_public_key=svc.signer.public_key_pem(), signing_key_id=svc.signer.key_id
    )


# ---- groups ----------------------------------------------------------------------------------


def _load_group(conn: Connection, name: str) -> Mapping[Any, Any]:
    row = conn.execute(sa.select(groups).where(groups.c.name == name)).mappings().first()
    if row is None:
        raise Problem(404, f"group '{name}' does not exist", type="not-found")
    return row


@router.post("/groups", status_code=201, response_model=GroupOut, tags=["groups"])
def create_group(
    body: GroupCreate,
    response: Response,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("groups", "create"))],
) -> GroupOut:
    row = {
        "name": body.name,
        "description": body.description,
        "selector": body.selector,
        "members": body.devices,
        "created_at": utcnow(),
        "revision": 1,
    }
    with svc.db.write() as conn:
        if conn.execute(sa.select(groups.c.name).where(groups.c.name == body.name)).first() is not None:
            raise Problem(409, f"body.name: group '{body.name}' already exists", type="conflict")
        conn.execute(groups.insert().values(**row))
        audit.append(
            conn, actor=caller.actor, action="group.create", resource=f"groups/{body.name}", after=row
        )
        changed = svc.refresh_desired(conn)
    svc.publish_desired(changed)
    set_etag(response, 1)
    return _group_out(row)


@router.get("/groups", response_model=Page[GroupOut], tags=["groups"])
def list_groups(
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("groups", "read"))],
    page: PageDep,
) -> Page[GroupOut]:
    with svc.db.read() as conn:
        return paginate(conn, sa.select(groups), [groups.c.name], page, _group_out)


@router.get("/groups/{name}", response_model=GroupOut, tags=["groups"])
def show_group(
    name: NamePath,
    response: Response,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("groups", "read"))],
) -> GroupOut:
    with svc.db.read() as conn:
        row = _load_group(conn, name)
    set_etag(response, row["revision"])
    return _group_out(row)


@router.put("/groups/{name}", response_model=GroupOut, tags=["groups"])
def replace_group(
    name: NamePath,
    body: GroupIn,
    request: Request,
    response: Response,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("groups", "update"))],
) -> GroupOut:
    """Replace a group's definition. Needs ``If-Match``."""
    with svc.db.write() as conn:
        row = _load_group(conn, name)
        require_if_match(request, row["revision"])
        changes = {
            "description": body.description,
            "selector": body.selector,
            "members": body.devices,
            "revision": row["revision"] + 1,
        }
        conn.execute(groups.update().where(groups.c.name == name).values(**changes))
        after = {**row, **changes}
        audit.append(
            conn,
            actor=caller.actor,
            action="group.update",
            resource=f"groups/{name}",
            before=dict(row),
            after=after,
        )
        changed = svc.refresh_desired(conn)
    svc.publish_desired(changed)
    set_etag(response, after["revision"])
    return _group_out(after)


@router.delete("/groups/{name}", status_code=204, tags=["groups"])
def delete_group(
    name: NamePath,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("groups", "delete"))],
) -> Response:
    with svc.db.write() as conn:
        row = _load_group(conn, name)
        conn.execute(groups.delete().where(groups.c.name == name))
        audit.append(
            conn, actor=caller.actor, action="group.delete", resource=f"groups/{name}", before=dict(row)
        )
        changed = svc.refresh_desired(conn)
    svc.publish_desired(changed)
    return Response(status_code=204)


@router.get("/groups/{name}/devices", response_model=Page[DeviceOut], tags=["groups"])
def group_devices(
    name: NamePath,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("devices", "read"))],
    page: PageDep,
) -> Page[DeviceOut]:
    """The active devices in a group, resolved now."""
    with svc.db.read() as conn:
        group = _load_group(conn, name)
        query = sa.select(devices).where(devices.c.status == "active")
        return _filtered_page(conn, query, page, lambda d: in_group(group, d.id, d.labels))
