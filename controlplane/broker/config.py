"""Mosquitto's configuration for edgefleet: ``mosquitto.conf``, the password file and the ACL.

Devices and the control plane talk MQTT 5 over the topics of ``protos/sync.proto``, all under
``edgefleet/v1/devices/{device_id}/``:

==========  ===========================  ==============================
leaf        direction                    notes
==========  ===========================  ==============================
desired     control plane -> device      retained
reported    device -> control plane
telemetry   device -> control plane      shared subscription on ingest
events      device -> control plane
ack         control plane -> device
status      device -> control plane      retained, with last will
==========  ===========================  ==============================

Anonymous access is off. A device logs in with its device id as username (with mutual TLS the
certificate's CN becomes the username) and the ACL lets it write only its own ``reported``,
``telemetry``, ``events`` and ``status`` and read only its own ``desired`` and ``ack``. The
control plane's user reads and writes everything under ``edgefleet/v1/``, through shared
subscriptions (``$share/edgefleet/edgefleet/v1/devices/+/telemetry``) too. Mosquitto 2.0 does not
check SUBSCRIBE against the ACL file (it grants the subscription): it checks every message it
delivers against the subscriber's read rules, retained messages included.

Everything here is pure text rendering except :func:`write_broker_config`, which writes the three
files atomically.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.fsutil import atomic_write

__all__ = [
    "CONTROL_PLANE_USER",
    "DEVICES_TOPIC",
    "DEVICE_READ_TOPICS",
    "DEVICE_WRITE_TOPICS",
    "SHARED_GROUP",
    "BrokerUser",
    "TlsFiles",
    "check_username",
    "device_topic",
    "password_hash",
    "render_acl",
    "render_mosquitto_conf",
    "render_password_file",
    "shared_subscription",
    "verify_password",
    "write_broker_config",
    "write_password_file",
]

TOPIC_ROOT = "edgefleet/v1"
DEVICES_TOPIC = f"{TOPIC_ROOT}/devices"
# What a device may publish under its own edgefleet/v1/devices/{device_id}/ and what it may read there.
DEVICE_WRITE_TOPICS = ("reported", "telemetry", "events", "status")
DEVICE_READ_TOPICS = ("desired", "ack")
# The shared-subscription group the control-plane replicas ingest through.
SHARED_GROUP = "edgefleet"
CONTROL_PLANE_USER = "edgefleet-controlplane"

# Usernames are device ids (the control plane's NAME_PATTERN) or the control plane's own user. They
# end up in ACL patterns through %u, so MQTT wildcards and topic separators must never be part of one.
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# Mosquitto 2.0's PBKDF2-SHA512 password-file entry: $7$<iterations>$<base64 salt>$<base64 hash>.
_PBKDF2_ID = "7"
_SALT_BYTES = 12
_HASH_BYTES = 64
_HASH_PATTERN = re.compile(r"^\$7\$([1-9][0-9]*)\$([A-Za-z0-9+/]+=*)\$([A-Za-z0-9+/]+=*)$")


def check_username(username: str) -> str:
    """Return ``username`` if it can be a broker user (a device id or the control plane's user)."""
    if not USERNAME_PATTERN.fullmatch(username):
        raise ValueError(
            f"invalid MQTT username {username!r}: 1-128 characters of letters, digits, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    return username


def device_topic(device_id: str, leaf: str) -> str:
    """``edgefleet/v1/devices/{device_id}/{leaf}``."""
    return f"{DEVICES_TOPIC}/{check_username(device_id)}/{leaf}"


def shared_subscription(leaf: str, group: str = SHARED_GROUP) -> str:
    """The shared subscription control-plane replicas use for ``leaf`` from every device, e.g.
    ``$share/edgefleet/edgefleet/v1/devices/+/telemetry``: each message goes to one replica."""
    return f"$share/{group}/{DEVICES_TOPIC}/+/{leaf}"


def password_hash(password: str, *, salt: bytes | None = None, iterations: int = 101) -> str:
    """The password-file value Mosquitto 2.0 checks ``password`` against (what ``mosquitto_passwd``
    writes): ``$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512, 64 bytes>``.

    ``salt`` is 12 random bytes unless given (the same salt gives the same output). 101 iterations
    is ``mosquitto_passwd``'s default; the broker recomputes the hash on every CONNECT, and
    edgefleet's passwords are long random secrets, so more iterations would buy nothing.
    """
    if not password:
        raise ValueError("empty password")
    if iterations < 1:
        raise ValueError(f"iterations must be positive, not {iterations}")
    if salt is None:
        salt = secrets.token_bytes(_SALT_BYTES)
    elif len(salt) != _SALT_BYTES:
        raise ValueError(f"Mosquitto needs a {_SALT_BYTES}-byte salt, not {len(salt)} bytes")
    derived = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, _HASH_BYTES)
    return "$".join(
        (
            "",
            _PBKDF2_ID,
            str(iterations),
            base64.b64encode(salt).decode("ascii"),
            base64.b64encode(derived).decode("ascii"),
        )
    )


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` entry from :func:`password_hash` or ``mosquitto_passwd``."""
    match = _HASH_PATTERN.fullmatch(hashed)
    if match is None:
        raise ValueError(f"not a Mosquitto PBKDF2-SHA512 password hash: {hashed[:16]!r}...")
    iterations = int(match.group(1))
    salt = base64.b64decode(match.group(2), validate=True)
    expected = base64.b64decode(match.group(3), validate=True)
    derived = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, len(expected))
    return hmac.compare_digest(derived, expected)


@dataclass(frozen=True)
class BrokerUser:
    """One line of Mosquitto's password file: a device (username = device id) or the control plane."""

    username: str
    password_hash: str

    def __post_init__(self) -> None:
        check_username(self.username)
        if not _HASH_PATTERN.fullmatch(self.password_hash):
            raise ValueError(
                f"user {self.username!r}: the password hash is not a Mosquitto $7$ (PBKDF2-SHA512) entry"
            )

    @classmethod
    def with_password(cls, username: str, password: str) -> BrokerUser:
        """A user whose entry is :func:`password_hash` of ``password``, with a fresh salt."""
        return cls(username, password_hash(password))


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of a TLS listener: the CA that signs client certificates (and that clients
    check the broker against), the broker's certificate and its private key."""

    cafile: Path
    certfile: Path
    keyfile: Path
    crlfile: Path | None = None
    """Client certificates the CA revoked (decommissioned devices); used with mutual TLS."""


def render_password_file(users: Iterable[BrokerUser]) -> str:
    """Mosquitto's password file: ``username:hash`` lines. Duplicate usernames are refused."""
    lines: list[str] = []
    seen: set[str] = set()
    for user in users:
        if user.username in seen:
            raise ValueError(f"user {user.username!r} listed twice")
        seen.add(user.username)
        lines.append(f"{user.username}:{user.password_hash}\n")
    return "".join(lines)


def render_acl(control_plane_user: str) -> str:
    """Mosquitto's ACL file: devices get their own topics through ``pattern`` rules on ``%u`` (the
    username, which is the device id, or the certificate's CN with ``use_identity_as_username``); the
    control plane gets ``edgefleet/v1/#``. Nothing else is allowed to anyone: Mosquitto denies what
    no rule grants, ``$SYS`` included."""
    check_username(control_plane_user)
    lines = [
        "# edgefleet's MQTT access control, written by `edgefleet broker-config`: edits are overwritten.",
        "# A device's username is its device id (with mutual TLS, its certificate's CN): %u below.",
        "# Pattern rules apply to every user, and they grant nothing beyond the user's own topics.",
    ]
    lines += [f"pattern write {DEVICES_TOPIC}/%u/{leaf}" for leaf in DEVICE_WRITE_TOPICS]
    lines += [f"pattern read {DEVICES_TOPIC}/%u/{leaf}" for leaf in DEVICE_READ_TOPICS]
    lines += [
        "",
        "# The control plane: desired state and acks out, everything devices send in, also through",
        f"# shared subscriptions such as $share/{SHARED_GROUP}/{DEVICES_TOPIC}/+/telemetry. Read rules",
        "# are checked on each message delivered, whatever the subscription.",
        f"user {control_plane_user}",
        f"topic readwrite {TOPIC_ROOT}/#",
    ]
    return "\n".join(lines) + "\n"


def _conf_path(path: Path) -> str:
    text = str(path.resolve())
    if any(c in text for c in "\r\n\0"):
        raise ValueError(f"path {text!r} cannot go into mosquitto.conf")
    return text


def render_mosquitto_conf(
    *,
    port: int,
    data_dir: Path,
    password_file: Path | None,
    acl_file: Path,
    tls: TlsFiles | None = None,
    require_certificate: bool = False,
    bind: str | None = "127.0.0.1",
    max_queued_messages: int = 100000,
    max_inflight_messages: int = 100,
    persistence: bool = True,
    log_file: Path | None = None,
    run_as: str | None = None,
) -> str:
    """``mosquitto.conf`` for one listener on ``bind:port`` (``bind=None``: every interface).

    ``password_file`` may be ``None`` only with ``require_certificate``, where the client
    certificate's CN is the username (``use_identity_as_username``) and Mosquitto checks no password.
    ``data_dir`` holds the persistence file (``mosquitto.db``), saved on a clean shutdown (SIGTERM)
    and every ``autosave_interval``: retained messages and persistent sessions survive a restart.

    ``run_as`` sets ``user``: Mosquitto started as root switches to that user (``mosquitto`` when
    unset) *before* it reads the password file and the ACL and writes ``data_dir``, so those must be
    readable (and ``data_dir`` writable) by it. Leave it unset for a system broker and give the files
    to the ``mosquitto`` user (:func:`write_broker_config` ``owner=``); ``run_as="root"`` keeps a
    broker started as root running as root, which throwaway test brokers in root-only temporary
    directories use. Started as any other user, Mosquitto ignores it.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid port {port}")
    if max_queued_messages < 0 or max_inflight_messages < 0:
        raise ValueError("max_queued_messages and max_inflight_messages must be >= 0 (0: unlimited)")
    if password_file is None and not require_certificate:
        raise ValueError("without require_certificate the broker needs a password file")
    if require_certificate and tls is None:
        raise ValueError("require_certificate needs TLS")
    if bind is not None and (not bind or any(c.isspace() for c in bind)):
        raise ValueError(f"invalid bind address {bind!r}")
    if run_as is not None and not re.fullmatch(r"[a-z_][a-z0-9_-]*\$?", run_as):
        raise ValueError(f"invalid user name {run_as!r}")

    lines = [
        "# edgefleet's Mosquitto configuration, written by `edgefleet broker-config`: edits are overwritten.",
        "# Every setting applies to every listener; there is one listener.",
        "per_listener_settings false",
        "allow_anonymous false",
    ]
    if run_as is not None:
        lines += [
            "# Started as root, Mosquitto switches to this user before reading the password file and",
            "# the ACL and before writing the persistence directory.",
            f"user {run_as}",
        ]
    lines += [
        "",
        f"listener {port} {bind}" if bind is not None else f"listener {port}",
        "protocol mqtt",
    ]
    if tls is not None:
        lines += [
            f"cafile {_conf_path(tls.cafile)}",
            f"certfile {_conf_path(tls.certfile)}",
            f"keyfile {_conf_path(tls.keyfile)}",
            "# TLS 1.2 at least (1.3 when both sides have it).",
            "tls_version tlsv1.2",
        ]
        if require_certificate:
            lines += [
                "# Mutual TLS: a client certificate signed by cafile is required and its CN is the",
                "# username the ACL sees (the device id); no password is checked.",
                "require_certificate true",
                "use_identity_as_username true",
            ]
            if tls.crlfile is not None:
                lines += [
                    "# Certificates of decommissioned devices: their handshakes fail. Reread on SIGHUP.",
                    f"crlfile {_conf_path(tls.crlfile)}",
                ]
    lines += [""]
    if password_file is not None:
        lines.append(f"password_file {_conf_path(password_file)}")
    lines += [
        f"acl_file {_conf_path(acl_file)}",
        "",
        f"persistence {'true' if persistence else 'false'}",
        # Mosquitto 1.x needs the trailing slash; 2.0 adds its own.
        f"persistence_location {_conf_path(data_dir)}/",
        "autosave_interval 60",
        "",
        "# QoS 1 messages queued for an offline persistent session beyond this are dropped silently;",
        "# edgefleet's acks make devices send again what the control plane has not stored, and a",
        "# high limit keeps those re-sends rare.",
        f"max_queued_messages {max_queued_messages}",
        f"max_inflight_messages {max_inflight_messages}",
        "",
        f"log_dest file {_conf_path(log_file)}" if log_file is not None else "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    return "\n".join(lines) + "\n"


def _give_to(path: Path, owner: str | None) -> None:
    if owner is None:
        return
    entry = pwd.getpwnam(owner)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def write_broker_config(
    directory: Path,
    *,
    port: int,
    users: Iterable[BrokerUser],
    control_plane_user: str = CONTROL_PLANE_USER,
    tls: TlsFiles | None = None,
    require_certificate: bool = False,
    bind: str | None = "127.0.0.1",
    data_dir: Path | None = None,
    max_queued_messages: int = 100000,
    max_inflight_messages: int = 100,
    persistence: bool = True,
    log_file: Path | None = None,
    run_as: str | None = None,
    owner: str | None = None,
) -> Path:
    """Write ``mosquitto.conf``, ``passwd`` and ``acl`` into ``directory`` and return the conf's path.

    ``users`` are every password-file entry: the control plane's own user and the devices (which the
    control plane lists from its database). Each file is replaced atomically, mode 0600, so a broker
    reloading on SIGHUP reads the old file or the new one. ``data_dir`` (default ``directory/data``)
    is created for the persistence file. With ``owner`` (a system user, e.g. ``mosquitto``) the
    password file, the ACL and ``data_dir`` are given to that user, who must read and write them once
    Mosquitto has dropped root (needs root). See :func:`render_mosquitto_conf` for the rest.
    """
    users = list(users)
    check_username(control_plane_user)
    if not require_certificate and control_plane_user not in {user.username for user in users}:
        raise ValueError(f"the control plane's user {control_plane_user!r} has no password-file entry")
    directory.mkdir(parents=True, exist_ok=True)
    data_dir = directory / "data" if data_dir is None else data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _give_to(data_dir, owner)

    password_file = directory / "passwd"
    acl_file = directory / "acl"
    conf_file = directory / "mosquitto.conf"
    conf = render_mosquitto_conf(
        port=port,
        data_dir=data_dir,
        password_file=password_file,
        acl_file=acl_file,
        tls=tls,
        require_certificate=require_certificate,
        bind=bind,
        max_queued_messages=max_queued_messages,
        max_inflight_messages=max_inflight_messages,
        persistence=persistence,
        log_file=log_file,
        run_as=run_as,
    )
    # atomic_write creates its temporary file with mode 0600, which the rename keeps.
    atomic_write(password_file, render_password_file(users).encode("utf-8"))
    _give_to(password_file, owner)
    atomic_write(acl_file, render_acl(control_plane_user).encode("utf-8"))
    _give_to(acl_file, owner)
    atomic_write(conf_file, conf.encode("utf-8"))
    return conf_file


def write_password_file(path: Path, users: Iterable[BrokerUser], *, owner: str | None = None) -> None:
    """Replace the password file alone (atomically, mode 0600), e.g. when a device is enrolled;
    send the broker SIGHUP afterwards and it reloads the file."""
    atomic_write(path, render_password_file(users).encode("utf-8"))
    _give_to(path, owner)
