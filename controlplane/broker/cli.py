"""``edgefleet broker-config``: write a Mosquitto configuration for the fleet.

Writes ``mosquitto.conf``, the password file and the ACL into ``--out`` for the broker host; with
``--tls`` also the broker's certificate and key and the CA certificate, the CA itself living in the
control plane's data directory (``EDGEFLEET_DATA_DIR``, default ``./edgefleet-data``, under ``ca/``).
The control plane's own MQTT user gets the password in ``EDGEFLEET_MQTT_PASSWORD``, the one already
in the password file, or a generated one printed once. With ``--require-certificate`` every client
authenticates with a certificate from that CA (its CN is its username), the control plane included:
its client certificate and key are written under ``<data dir>/mqtt/``.

Device users come from the control plane's database: :func:`generate_broker_config` takes them as
``users``. With ``--require-certificate`` it also writes ``crl.pem``, the certificates of
decommissioned devices, which the control plane rewrites after each decommission when
``EDGEFLEET_BROKER_CRL_FILE`` names it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import pwd
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from agent.fsutil import atomic_write
from controlplane.broker.config import (
    CONTROL_PLANE_USER,
    BrokerUser,
    TlsFiles,
    check_username,
    password_hash,
    write_broker_config,
)

__all__ = ["BrokerConfigResult", "broker_config", "generate_broker_config"]

PASSWORD_ENV = "EDGEFLEET_MQTT_PASSWORD"
USERNAME_ENV = "EDGEFLEET_MQTT_USERNAME"
DEFAULT_BROKER_USER = "mosquitto"  # what Mosquitto switches to when started as root without `user`


@dataclass(frozen=True)
class BrokerConfigResult:
    conf_path: Path
    control_plane_user: str
    generated_password: str | None  # set only when a new password was made: show it once
    kept_password: bool  # the control plane's entry already in the password file was kept
    tls: TlsFiles | None
    client_certfile: Path | None  # the control plane's client certificate (mutual TLS)
    client_keyfile: Path | None


def _existing_hash(password_file: Path, username: str) -> str | None:
    try:
        lines = password_file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        name, sep, hashed = line.partition(":")
        if sep and name == username:
            return hashed
    return None


def _split_hosts(hosts: Sequence[str]) -> tuple[list[str], list[str]]:
    names: list[str] = []
    ips: list[str] = []
    for host in hosts:
        try:
            ips.append(str(ipaddress.ip_address(host)))
        except ValueError:
            names.append(host)
    return names, ips


def generate_broker_config(
    out: Path,
    *,
    data_dir: Path,
    port: int | None = None,
    tls: bool = False,
    require_certificate: bool = False,
    hosts: Sequence[str] = (),
    bind: str | None = None,
    control_plane_user: str = CONTROL_PLANE_USER,
    control_plane_password: str | None = None,
    users: Iterable[BrokerUser] = (),
    revoked: Iterable[tuple[str, datetime]] = (),
    broker_user: str | None = None,
    persistence_dir: Path | None = None,
) -> BrokerConfigResult:
    """Write the broker's configuration into ``out`` (see the module's docstring).

    ``users``: the devices' password-file entries (from the control plane's database); the control
    plane's own entry is added here. ``revoked``: the decommissioned devices' certificates (serial,
    time), written to ``crl.pem`` for the broker when ``require_certificate``. ``broker_user``: the
    system user Mosquitto runs as when started as root (``user`` in the conf; unset: Mosquitto's
    default, ``mosquitto``); run as root, this gives that user the files it must read and the
    persistence directory. ``port`` defaults to 8883 with TLS, 1883 without; ``bind=None`` listens
    on every interface.
    """
    check_username(control_plane_user)
    tls = tls or require_certificate
    port = (8883 if tls else 1883) if port is None else port
    out.mkdir(parents=True, exist_ok=True)

    owner: str | None = None
    owner_uid: int | None = None
    if os.geteuid() == 0:
        candidate = broker_user or DEFAULT_BROKER_USER
        try:
            owner_uid = pwd.getpwnam(candidate).pw_uid
            owner = candidate
        except KeyError:
            if broker_user is not None:
                raise ValueError(f"no system user {broker_user!r}") from None

    generated: str | None = None
    kept = False
    if control_plane_password is not None:
        cp_hash = password_hash(control_plane_password)
    else:
        existing = _existing_hash(out / "passwd", control_plane_user)
        if existing is not None:
            cp_hash, kept = existing, True
        else:
            generated = secrets.token_urlsafe(32)
            cp_hash = password_hash(generated)
    device_users = list(users)
    if any(user.username == control_plane_user for user in device_users):
        raise ValueError(f"a device user is named like the control plane's user {control_plane_user!r}")
    all_users = [BrokerUser(control_plane_user, cp_hash), *device_users]

    tls_files: TlsFiles | None = None
    client_certfile: Path | None = None
    client_keyfile: Path | None = None
    if tls:
        from controlplane.broker.ca import CertificateAuthority

        ca = CertificateAuthority.load_or_create(data_dir / "ca")
        names, ips = _split_hosts(hosts or ["localhost", socket.gethostname(), "127.0.0.1"])
        tls_files = ca.write_server_files(out, list(dict.fromkeys(names)), ips, owner_uid=owner_uid)
        if require_certificate:
            tls_files = dataclasses.replace(tls_files, crlfile=ca.write_crl(out / "crl.pem", revoked))
            client_dir = data_dir / "mqtt"
            client_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            client_certfile = client_dir / "client.crt"
            client_keyfile = client_dir / "client.key"
            if not (client_certfile.exists() and client_keyfile.exists()):
                cert_pem, key_pem = ca.issue_client_cert(control_plane_user)
                atomic_write(client_keyfile, key_pem)  # mode 0600
                atomic_write(client_certfile, cert_pem)
            atomic_write(client_dir / "ca.crt", ca.ca_pem)

    conf_path = write_broker_config(
        out,
        port=port,
        users=all_users,
        control_plane_user=control_plane_user,
        tls=tls_files,
        require_certificate=require_certificate,
        bind=bind,
        data_dir=persistence_dir,
        run_as=broker_user,
        owner=owner,
    )
    return BrokerConfigResult(
        conf_path=conf_path,
        control_plane_user=control_plane_user,
        generated_password=generated,
        kept_password=kept,
        tls=tls_files,
        client_certfile=client_certfile,
        client_keyfile=client_keyfile,
    )


def broker_config(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for mosquitto.conf, passwd and acl (and TLS files).")
    ],
    port: Annotated[
        int | None,
        typer.Option(help="Listener port; default 8883 with --tls, 1883 without.", min=1, max=65535),
    ] = None,
    tls: Annotated[
        bool, typer.Option("--tls", help="TLS listener with a certificate from edgefleet's CA.")
    ] = False,
    require_certificate: Annotated[
        bool,
        typer.Option(
            "--require-certificate",
            help="Mutual TLS (implies --tls): clients need a certificate from the CA, "
            "whose CN is their username.",
        ),
    ] = False,
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="DNS name or IP address devices reach the broker at (repeatable); "
            "default: localhost, this host's name, 127.0.0.1.",
        ),
    ] = None,
    bind: Annotated[str | None, typer.Option(help="Listen address; default: every interface.")] = None,
    control_plane_user: Annotated[
        str, typer.Option(envvar=USERNAME_ENV, help="The control plane's MQTT username.")
    ] = CONTROL_PLANE_USER,
    broker_user: Annotated[
        str | None,
        typer.Option(help="System user Mosquitto runs as when started as root; default: mosquitto."),
    ] = None,
    persistence_dir: Annotated[
        Path | None,
        typer.Option(help="Where the broker keeps retained messages and sessions; default OUT/data."),
    ] = None,
) -> None:
    """Write the MQTT broker's (Mosquitto's) configuration, password file and ACL."""
    from controlplane.server_cli import load_settings

    settings = load_settings()
    users: list[BrokerUser] = []
    revoked: list[tuple[str, datetime]] = []
    if settings.database_url or (settings.data_dir / "controlplane.db").exists():
        from controlplane.broker.users import device_users, revoked_certificates
        from controlplane.store import Database

        db = Database(settings.resolved_database_url)
        try:
            users = device_users(db)
            revoked = revoked_certificates(db)
        finally:
            db.dispose()
    try:
        result = generate_broker_config(
            out,
            data_dir=settings.data_dir,
            port=port,
            tls=tls,
            require_certificate=require_certificate,
            hosts=host or (),
            bind=bind,
            control_plane_user=control_plane_user,
            control_plane_password=os.environ.get(PASSWORD_ENV) or None,
            broker_user=broker_user,
            persistence_dir=persistence_dir,
            users=users,
            revoked=revoked,
        )
    except ValueError as exc:
        typer.echo(f"edgefleet: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {result.conf_path}, {out / 'passwd'} ({len(users)} devices) and {out / 'acl'}")
    if result.tls is not None:
        typer.echo(f"wrote {result.tls.cafile}, {result.tls.certfile} and {result.tls.keyfile}")
    if result.client_certfile is not None and result.client_keyfile is not None:
        typer.echo(
            f"the control plane's client certificate: {result.client_certfile} (key {result.client_keyfile})"
        )
    if result.generated_password is not None:
        typer.echo(
            f"MQTT password of {result.control_plane_user} (shown once; give it to the control plane as "
            f"{PASSWORD_ENV}): {result.generated_password}"
        )
    elif result.kept_password:
        typer.echo(f"kept the existing password of {result.control_plane_user}")
    typer.echo(f"run the broker with: mosquitto -c {result.conf_path.resolve()}")
