"""Request dependencies: the service objects, and who is calling.

Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in the
thread pool, and each hand-off costs more CPU than the check itself. ``authenticate`` reads the
database, so it stays in the pool.

Every route declares what it needs with one of ``guard`` (operator routes), ``guard_item``
(operator routes on one labelled resource, finished by ``ensure_item``) or ``device_caller``
(device routes). A route with none of them is public (``/healthz``, enrollment).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Connection

from controlplane import desired
from controlplane.access import PermissionSpec, Principal
from controlplane.api.problems import Problem
from controlplane.artifacts import BlobStore
from controlplane.bridge.service import Bridge
from controlplane.broker.ca import CertificateAuthority
from controlplane.rollouts.controller import Clock, RolloutController
from controlplane.rollouts.leader import ControllerDriver, leadership_for
from controlplane.settings import ControlPlaneSettings
from controlplane.signing import SigningKey
from controlplane.store import Database, as_utc, utcnow
from controlplane.store.schema import devices, policies, tokens
from controlplane.tokens import parse_token, secret_matches

LAST_SEEN_RESOLUTION = timedelta(seconds=30)


@dataclass
class Services:
    settings: ControlPlaneSettings
    db: Database
    blobs: BlobStore
    signer: SigningKey
    bridge: Bridge | None = None
    rollout_driver: ControllerDriver | None = None

    def refresh_desired(self, conn: Connection, device_ids: Iterable[str] | None = None) -> list[str]:
        """Recompute desired states in ``conn``'s transaction; returns the devices that changed."""
        return desired.refresh(conn, self.settings.base_url, device_ids)

    def publish_desired(self, device_ids: Iterable[str]) -> None:
        """After the commit: publish the new desired states (when the MQTT bridge runs)."""
        if self.bridge is not None:
            self.bridge.publish_desired(device_ids)

    def rollout_controller(self, clock: Clock = utcnow) -> RolloutController:
        """A controller that refreshes and publishes desired states through these services."""
        return RolloutController(
            self.db, refresh=self.refresh_desired, publish=self.publish_desired, clock=clock
        )

    def start_rollout_driver(self) -> None:
        """Tick the rollout controller in the background while this process leads (when
        ``rollout_tick_s`` > 0)."""
        if self.settings.rollout_tick_s > 0 and self.rollout_driver is None:
            leadership = leadership_for(self.db, self.settings.data_dir)
            self.rollout_driver = ControllerDriver(
                self.rollout_controller(), leadership, self.settings.rollout_tick_s
            )
            self.rollout_driver.start()

    def stop_rollout_driver(self) -> None:
        if self.rollout_driver is not None:
            self.rollout_driver.stop()
            self.rollout_driver = None

    def certificate_authority(self) -> CertificateAuthority:
        """The fleet's CA (``<data dir>/ca``), created on first use; it signs devices' CSRs."""
        from controlplane.broker.ca import CertificateAuthority

        return CertificateAuthority.load_or_create(self.settings.data_dir / "ca")

    def broker_users_changed(self, *, revoked: bool = False) -> None:
        """After an enrollment, or a decommission (``revoked``): update the broker's password
        file and, after a decommission, its certificate revocation list, those of them we keep."""
        if self.settings.broker_password_file is not None:
            from controlplane.broker.users import sync_password_file

            sync_password_file(self.db, self.settings.broker_password_file, self.settings.broker_pid_file)
        if revoked and self.settings.broker_crl_file is not None:
            from controlplane.broker.users import sync_crl

            sync_crl(
                self.db,
                self.certificate_authority(),
                self.settings.broker_crl_file,
                self.settings.broker_pid_file,
            )

    def clear_desired(self, device_id: str) -> None:
        """Remove a retired device's retained desired state from the broker."""
        if self.bridge is not None:
            self.bridge.clear_desired(device_id)


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


ServicesDep = Annotated[Services, Depends(services)]
_bearer = HTTPBearer(auto_error=False, description="An operator API token or a device credential.")


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, type="unauthorized", headers={"WWW-Authenticate": "Bearer"})


def authenticate(
    request: Request,
    svc: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise _unauthorized("missing credentials: send 'Authorization: Bearer <token>'")
    parsed = parse_token(credentials.credentials)
    if parsed is None or parsed.kind == "enrollment":
        raise _unauthorized("the bearer token is not an edgefleet operator token or device credential")
    now = utcnow()
    with svc.db.read() as conn:
        row = conn.execute(sa.select(tokens).where(tokens.c.id == parsed.id)).mappings().first()
        if row is None or row["kind"] != parsed.kind or not secret_matches(parsed.secret, row["secret_hash"]):
            raise _unauthorized("unknown token")
        if row["revoked_at"] is not None:
            raise _unauthorized(f"token {parsed.id} was revoked")
        expires = as_utc(row["expires_at"])
        if expires is not None and expires <= now:
            raise _unauthorized(f"token {parsed.id} expired at {expires.isoformat()}")
        permissions: list[PermissionSpec] = []
        if row["kind"] == "operator" and row["policies"]:
            for doc in conn.execute(
                sa.select(policies.c.permissions).where(policies.c.name.in_(row["policies"]))
            ).scalars():
                permissions.extend(PermissionSpec.model_validate(p) for p in doc)
        device_seen = None
        if row["kind"] == "device":
            device = conn.execute(
                sa.select(devices.c.status, devices.c.last_seen_at).where(devices.c.id == row["subject"])
            ).first()
            if device is None or device.status != "active":
                raise _unauthorized(f"device {row['subject']} is decommissioned")
            device_seen = as_utc(device.last_seen_at)
    if row["kind"] == "device" and (device_seen is None or now - device_seen > LAST_SEEN_RESOLUTION):
        with svc.db.write() as conn:
            conn.execute(devices.update().where(devices.c.id == row["subject"]).values(last_seen_at=now))
    principal = Principal(
        kind=row["kind"],
        subject=row["subject"],
        token_id=row["id"],
        role=row["role"],
        attributes=row["attributes"] or {},
        permissions=tuple(permissions),
    )
    request.state.principal = principal
    return principal


CallerDep = Annotated[Principal, Depends(authenticate)]


def _forbidden(principal: Principal, resource: str, action: str) -> Problem:
    if principal.kind == "device":
        return Problem(403, "a device credential cannot be used on operator routes", type="forbidden")
    return Problem(
        403,
        f"operator '{principal.subject}' (role {principal.role}) may not {action} {resource}",
        type="forbidden",
    )


def guard(resource: str, action: str) -> Callable[..., Awaitable[Principal]]:
    """An operator allowed ``action`` on the collection ``resource``."""

    async def dependency(principal: CallerDep) -> Principal:
        if not principal.allows(resource, action):
            raise _forbidden(principal, resource, action)
        return principal

    return dependency


def guard_item(resource: str, action: str) -> Callable[..., Awaitable[Principal]]:
    """An operator who may be allowed ``action`` on one ``resource``; the route loads the item and
    calls ``ensure_item`` with its labels."""

    async def dependency(principal: CallerDep) -> Principal:
        if not principal.may_allow_item(resource, action):
            raise _forbidden(principal, resource, action)
        return principal

    return dependency


def ensure_item(principal: Principal, resource: str, action: str, labels: Mapping[str, Any]) -> None:
    if not principal.allows(resource, action, labels):
        raise _forbidden(principal, resource, action)


async def device_caller(principal: CallerDep) -> Principal:
    if principal.kind != "device":
        raise Problem(403, "this route takes a device credential, not an operator token", type="forbidden")
    return principal
