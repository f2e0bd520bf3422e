"""Keeping the broker's password file in step with the fleet.

Each enrolled device gets an MQTT password whose hash (in Mosquitto's format) is stored with the
device; the plaintext is shown to the device once. ``device_users`` reads the active devices'
entries; ``sync_password_file`` rewrites the broker's password file — the devices plus the
control plane's own entry, kept from the current file — and, given the broker's pid file, sends it
SIGHUP so it reloads (a decommissioned device is disconnected at once). The control plane calls it
after every enrollment and decommission when ``EDGEFLEET_BROKER_PASSWORD_FILE`` is set, as on a
single-host installation where both share a machine.
"""

from __future__ import annotations

import logging
import os
import signal
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from controlplane.broker.config import BrokerUser, render_password_file
from controlplane.store import Database, as_utc
from controlplane.store.schema import devices

if TYPE_CHECKING:
    from controlplane.broker.ca import CertificateAuthority

log = logging.getLogger("edgefleet.controlplane.broker")


def device_users(db: Database) -> list[BrokerUser]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(devices.c.id, devices.c.mqtt_password_hash)
            .where(devices.c.status == "active", devices.c.mqtt_password_hash.is_not(None))
            .order_by(devices.c.id)
        ).all()
    return [BrokerUser(device_id, hashed) for device_id, hashed in rows]


def _kept_entries(password_file: Path, skip: set[str]) -> list[BrokerUser]:
    """Entries of the current file that are not devices (the control plane's own user)."""
    try:
        lines = password_file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    kept = []
    for line in lines:
        name, sep, hashed = line.partition(":")
        if sep and name not in skip:
            kept.append(BrokerUser(name, hashed))
    return kept


def sync_password_file(db: Database, password_file: Path, pid_file: Path | None = None) -> int:
    """Rewrite ``password_file`` from the database; returns the number of device entries."""
    from agent.fsutil import atomic_write

    users = device_users(db)
    with db.read() as conn:
        every_device = set(conn.execute(sa.select(devices.c.id)).scalars())
    entries = _kept_entries(password_file, every_device) + users
    atomic_write(password_file, render_password_file(entries).encode("utf-8"))
    os.chmod(password_file, 0o600)
    reload_broker(pid_file, password_file)
    return len(users)


def revoked_certificates(db: Database) -> list[tuple[str, datetime]]:
    """(serial in hex, decommission time) of every decommissioned device's client certificate."""
    with db.read() as conn:
        rows = conn.execute(
            sa.select(devices.c.certificate_serial, devices.c.decommissioned_at, devices.c.enrolled_at)
            .where(devices.c.status == "decommissioned", devices.c.certificate_serial.is_not(None))
            .order_by(devices.c.certificate_serial)
        ).all()
    revoked = []
    for serial, gone, enrolled in rows:
        when = as_utc(gone or enrolled)  # enrolled_at: a device decommissioned before the time was kept
        assert when is not None  # enrolled_at is NOT NULL
        revoked.append((str(serial), when))
    return revoked


def sync_crl(
    db: Database, authority: CertificateAuthority, crl_file: Path, pid_file: Path | None = None
) -> int:
    """Rewrite ``crl_file`` from the database (every decommissioned device's certificate) and
    make the broker reread it; returns the number of revoked certificates. Mosquitto applies it
    to new connections: a device already connected keeps its session until it drops."""
    revoked = revoked_certificates(db)
    authority.write_crl(crl_file, revoked)
    reload_broker(pid_file, crl_file)
    return len(revoked)


def reload_broker(pid_file: Path | None, changed: Path) -> None:
    """SIGHUP to the broker in ``pid_file`` (nothing without one); a failure is logged, not raised:
    the file is written, and the broker reads it at its next reload or start."""
    if pid_file is None:
        return
    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)
    except (OSError, ValueError) as exc:
        log.warning("could not make the broker reload %s (pid file %s): %s", changed, pid_file, exc)
