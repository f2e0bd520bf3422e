"""A Mosquitto process for edgefleet on this machine: the demo's broker and the tests'.

``MosquittoBroker.start(base_dir)`` writes the configuration ``edgefleet broker-config`` would
(:func:`controlplane.broker.config.write_broker_config`: password file, ACL, persistence) into
``base_dir`` and runs ``mosquitto -c`` on 127.0.0.1 at a free port, independent of any system broker
the Debian package may run on 1883: own port, own configuration, own persistence directory. The
broker logs to ``base_dir/mosquitto.log``; its pid is written to ``base_dir/mosquitto.pid`` for the
control plane (``EDGEFLEET_BROKER_PID_FILE``), which sends SIGHUP after rewriting the password file.

As root the broker keeps running as root (``user root``): otherwise Mosquitto switches to the
``mosquitto`` user before it reads the password file, which may live in a root-only directory.

Errors::

    RuntimeError
     ├── MosquittoUnavailable   the mosquitto binary is not installed (./scripts/setup installs it)
     └── MosquittoError         it did not start, reload or stop; carries the broker's log tail
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

from controlplane.broker.ca import CertificateAuthority
from controlplane.broker.config import (
    CONTROL_PLANE_USER,
    BrokerUser,
    TlsFiles,
    write_broker_config,
    write_password_file,
)

__all__ = [
    "HOST",
    "ClientTls",
    "MosquittoBroker",
    "MosquittoError",
    "MosquittoUnavailable",
    "find_mosquitto",
    "free_port",
    "spawn",
    "terminate",
]

HOST = "127.0.0.1"
SETUP_HINT = "run ./scripts/setup (installs the Debian package mosquitto)"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS = 5
LOG_TAIL_LINES = 40
RELOAD_LINE = "Reloading config."


class MosquittoUnavailable(RuntimeError):
    """The ``mosquitto`` binary is not installed."""


class MosquittoError(RuntimeError):
    """The test broker could not be started, reloaded or stopped."""


def find_mosquitto(search_path: str | None = None) -> str:
    """The path of the ``mosquitto`` binary: on ``PATH`` or in ``/usr/sbin`` (not on every
    ``PATH``), or only in ``search_path`` when given; :class:`MosquittoUnavailable` otherwise."""
    if search_path is not None:
        found = shutil.which("mosquitto", path=search_path)
    else:
        found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise MosquittoUnavailable(f"mosquitto is not installed: {SETUP_HINT}")
    return found


def free_port() -> int:
    """A TCP port on ``HOST`` that nothing listens on right now (another process may take it
    before the caller binds it: callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def spawn(
    conf_path: Path, port: int, log_path: Path, *, binary: str | None = None
) -> subprocess.Popen[bytes]:
    """Run ``mosquitto -c conf_path``, logging to ``log_path``, and return once it accepts
    connections on ``HOST:port``; :class:`MosquittoError` with the log's tail if it exits or does not
    listen within ``START_TIMEOUT_S``."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [binary or find_mosquitto(), "-c", str(conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=conf_path.parent,
            start_new_session=True,  # a ^C to pytest does not reach it first
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        code = process.poll()
        if code is not None:
            raise MosquittoError(f"mosquitto exited with status {code} on start:\n{_tail(log_path)}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return process
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise MosquittoError(
                f"mosquitto did not accept connections on {HOST}:{port} within "
                f"{START_TIMEOUT_S:.0f}s:\n{_tail(log_path)}"
            )
        time.sleep(0.01)


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Mosquitto saves its persistence file) and wait; SIGKILL if it takes too long."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise MosquittoError(f"mosquitto ignored SIGTERM for {STOP_TIMEOUT_S:.0f}s") from None


@dataclass(frozen=True)
class ClientTls:
    """What an MQTT client needs for (mutual) TLS: the CA to check the broker against and, for
    mutual TLS, its certificate and key."""

    ca_certs: Path
    certfile: Path | None = None
    keyfile: Path | None = None


class MosquittoBroker:
    """A Mosquitto process on ``host:port`` with edgefleet's configuration, in its own directory."""

    host = HOST

    def __init__(
        self,
        base_dir: Path,
        *,
        port: int,
        ca: CertificateAuthority | None,
        tls_files: TlsFiles | None,
        require_certificate: bool,
        persistence: bool,
    ) -> None:
        self.base_dir = base_dir
        self.port = port
        self.ca = ca
        self.tls_files = tls_files
        self.require_certificate = require_certificate
        self.persistence = persistence
        self.control_plane_user = CONTROL_PLANE_USER
        self.control_plane_password = secrets.token_urlsafe(24)
        self.data_dir = base_dir / "data"
        self.log_path = base_dir / "mosquitto.log"
        self.conf_path = base_dir / "mosquitto.conf"
        self.password_file = base_dir / "passwd"
        self.pid_file = base_dir / "mosquitto.pid"
        self._users: dict[str, BrokerUser] = {
            self.control_plane_user: BrokerUser.with_password(
                self.control_plane_user, self.control_plane_password
            )
        }
        self._binary = find_mosquitto()
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        base_dir: Path,
        *,
        tls: CertificateAuthority | TlsFiles | None = None,
        require_certificate: bool = False,
        persistence: bool = True,
    ) -> MosquittoBroker:
        """Configure and start a broker in ``base_dir`` on a free port; returns once the port
        accepts connections. ``tls``: a CA (the broker gets a server certificate for 127.0.0.1 and
        localhost from it) or ready files. Raises :class:`MosquittoUnavailable` without mosquitto and
        :class:`MosquittoError`, with the broker's log tail, if it does not start."""
        if require_certificate and tls is None:
            raise ValueError("require_certificate needs tls")
        base_dir.mkdir(parents=True, exist_ok=True)
        ca = tls if isinstance(tls, CertificateAuthority) else None
        tls_files = tls if isinstance(tls, TlsFiles) else None
        if ca is not None:
            tls_files = ca.write_server_files(base_dir / "tls", ["localhost"], [HOST])
            if require_certificate:  # an empty revocation list, which :meth:`revoke` rewrites
                crlfile = ca.write_crl(base_dir / "tls" / "crl.pem", [])
                tls_files = dataclasses.replace(tls_files, crlfile=crlfile)
        broker = cls(
            base_dir,
            port=0,
            ca=ca,
            tls_files=tls_files,
            require_certificate=require_certificate,
            persistence=persistence,
        )
        last_error: MosquittoError | None = None
        for _ in range(START_ATTEMPTS):  # another process may take the free port before mosquitto binds it
            broker.port = free_port()
            broker._write_config()
            try:
                broker._launch()
            except MosquittoError as exc:
                last_error = exc
                if "Address already in use" not in broker.log_tail():
                    raise
            else:
                return broker
        assert last_error is not None
        raise last_error

    def _write_config(self) -> None:
        write_broker_config(
            self.base_dir,
            port=self.port,
            users=self._users.values(),
            control_plane_user=self.control_plane_user,
            tls=self.tls_files,
            require_certificate=self.require_certificate,
            bind=HOST,
            data_dir=self.data_dir,
            persistence=self.persistence,
            run_as="root" if os.geteuid() == 0 else None,
        )

    def _launch(self) -> None:
        self._process = spawn(self.conf_path, self.port, self.log_path, binary=self._binary)
        self.pid_file.write_text(f"{self._process.pid}\n")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise MosquittoError("the broker is not running")
        return self._process.pid

    def stop(self) -> None:
        """SIGTERM and wait: Mosquitto saves its persistence file (retained messages, sessions)."""
        process, self._process = self._process, None
        if process is not None:
            self.pid_file.unlink(missing_ok=True)
            terminate(process)

    def kill(self) -> None:
        """SIGKILL: nothing is saved since the last autosave, as after a crash or a power cut."""
        process, self._process = self._process, None
        if process is None:
            return
        self.pid_file.unlink(missing_ok=True)
        if process.poll() is None:
            process.kill()
        process.wait()

    def restart(self) -> None:
        """Stop (SIGTERM) and start again on the same port with the same persistence directory."""
        self.stop()
        self._launch()

    def __enter__(self) -> MosquittoBroker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- users -----------------------------------------------------------------------------------

    def add_device(self, device_id: str, password: str | None = None) -> str:
        """Add (or replace) a device's user with a random password, rewrite the password file and
        make the running broker reload it (SIGHUP); returns the password once the reload is done."""
        password = secrets.token_urlsafe(24) if password is None else password
        self._users[device_id] = BrokerUser.with_password(device_id, password)
        write_password_file(self.password_file, self._users.values())
        if self.running:
            self.reload()
        return password

    def remove_device(self, device_id: str) -> None:
        """Remove a device's user and reload: on reload Mosquitto checks the clients already connected
        against the new password file and disconnects this device's."""
        self._users.pop(device_id, None)
        write_password_file(self.password_file, self._users.values())
        if self.running:
            self.reload()

    def reload(self) -> None:
        """SIGHUP, then wait for the broker to log the reload. Mosquitto logs the line right before
        rereading the password file and the ACL, in the same turn of its single-threaded loop, so any
        packet it reads after the line is checked against the new files."""
        before = self._log_text().count(RELOAD_LINE)
        os.kill(self.pid, signal.SIGHUP)
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._log_text().count(RELOAD_LINE) <= before:
            if not self.running:
                raise MosquittoError(f"mosquitto exited on SIGHUP:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise MosquittoError(f"mosquitto did not reload on SIGHUP:\n{self.log_tail()}")
            time.sleep(0.005)

    # -- TLS ---------------------------------------------------------------------------------------

    def revoke(self, revoked: Iterable[tuple[str, datetime]]) -> None:
        """Replace the broker's certificate revocation list with ``revoked`` (serial in hex, time)
        and reload: new connections with those certificates fail their handshake."""
        if self.ca is None or self.tls_files is None or self.tls_files.crlfile is None:
            raise MosquittoError("this broker has no revocation list (needs a CA and require_certificate)")
        self.ca.write_crl(self.tls_files.crlfile, revoked)
        self.reload()

    def client_tls(self, common_name: str | None = None) -> ClientTls:
        """The TLS settings of a client: the CA alone, or with ``common_name`` also a client
        certificate for that CN (key made here, signed by the broker's CA)."""
        if self.tls_files is None:
            raise MosquittoError("this broker has no TLS listener")
        if common_name is None:
            return ClientTls(ca_certs=self.tls_files.cafile)
        if self.ca is None:
            raise MosquittoError("this broker was started with TLS files, not a CA: no client certificates")
        cert_pem, key_pem = self.ca.issue_client_cert(common_name)
        return self.write_client_files(common_name, cert_pem, key_pem)

    def write_client_files(self, name: str, cert_pem: bytes, key_pem: bytes) -> ClientTls:
        """Store a client certificate and key (e.g. from a CSR signed by the CA) for paho's tls_set."""
        if self.tls_files is None:
            raise MosquittoError("this broker has no TLS listener")
        directory = self.base_dir / "clients"
        directory.mkdir(mode=0o700, exist_ok=True)
        certfile = directory / f"{name}.crt"
        keyfile = directory / f"{name}.key"
        certfile.write_bytes(cert_pem)
        keyfile.touch(mode=0o600)
        keyfile.write_bytes(key_pem)
        return ClientTls(ca_certs=self.tls_files.cafile, certfile=certfile, keyfile=keyfile)

    # -- logs ------------------------------------------------------------------------------------

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines the broker logged."""
        return _tail(self.log_path, lines)
