"""A throwaway PostgreSQL server for the control plane's tests.

``PostgresServer.start(base_dir)`` runs ``initdb`` and ``pg_ctl start`` on a private data directory
under ``base_dir``, listening on 127.0.0.1 at a free port with its unix socket in that directory too,
so it never touches a cluster the Debian ``postgresql`` package may have set up. Authentication is
``trust`` on loopback only and durability is switched off for speed: this is for tests, nothing else.

``initdb`` and ``postgres`` refuse to run as root; as root the server runs as the ``postgres``
system user (through ``runuser``) on a directory that user owns, otherwise as the current user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import uuid
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

__all__ = ["PostgresError", "PostgresServer", "PostgresUnavailable", "find_bindir"]

SERVER_USER = "postgres"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
START_ATTEMPTS = 5
START_TIMEOUT_S = 60
LOG_TAIL_LINES = 40
# sun_path holds 108 bytes with the terminating NUL; postgres names its socket ".s.PGSQL.<port>"
MAX_SOCKET_PATH = 107
SETUP_HINT = "run ./scripts/setup, which installs the Debian package 'postgresql'"

_PORT_IN_USE = re.compile(r"could not bind|could not create any TCP/IP sockets|Address already in use")


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (or the ``postgres`` system user) are not installed."""


class PostgresError(RuntimeError):
    """The test server could not be initialised, started or stopped."""


def _has_server_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def _version_key(bindir: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> ``(15,)``; unparsable versions sort first."""
    parts = bindir.parent.name.split(".")
    return tuple(int(part) for part in parts) if all(part.isdigit() for part in parts) else (-1,)


def find_bindir() -> Path:
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` live.

    ``pg_config --bindir`` first, then the newest ``/usr/lib/postgresql/*/bin``, then ``PATH``.
    ``pg_config`` alone proves nothing (the client development package ships it), so every
    candidate must hold the server binaries.
    """
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            result = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
            )
            bindir = Path(result.stdout.strip())
            if result.stdout.strip() and _has_server_binaries(bindir):
                return bindir
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for bindir in candidates:
        if _has_server_binaries(bindir):
            return bindir
    initdb = shutil.which("initdb")
    if initdb is not None:
        bindir = Path(initdb).resolve().parent
        if _has_server_binaries(bindir):
            return bindir
    raise PostgresUnavailable(
        f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: {SETUP_HINT}"
    )


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (it may be taken again before we bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def _log_tail(log_file: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log_file.read_text(errors="replace")
    except OSError as exc:
        return f"(no server log at {log_file}: {exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(server log {log_file} is empty)"


class PostgresServer:
    """One running test cluster; make it with :meth:`start`, end it with :meth:`stop`."""

    def __init__(self, *, bindir: Path, root: Path, port: int, run_as: tuple[int, int] | None) -> None:
        self.bindir = bindir
        self.root = root
        self.port = port
        self._run_as = run_as
        self._running = False

    # -- paths -----------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def _settings_file(self) -> Path:
        return self.data_dir / "edgefleet-test.conf"

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def start(cls, base_dir: Path) -> PostgresServer:
        """Initialise a cluster in a fresh directory under ``base_dir`` and start it.

        Returns once the server accepts connections. As root, ``base_dir`` and its parents must be
        traversable by the ``postgres`` user (the directory made inside it is handed to that user).
        """
        bindir = find_bindir()
        run_as = cls._server_user() if os.geteuid() == 0 else None
        base_dir = Path(base_dir).resolve()
        if run_as is not None:
            cls._check_traversable(base_dir)
        root = base_dir / f"pg-{uuid.uuid4().hex[:8]}"
        root.mkdir(mode=0o700)
        server = cls(bindir=bindir, root=root, port=free_port(), run_as=run_as)
        try:
            server.socket_dir.mkdir(mode=0o700)
            if len(str(server.socket_dir)) + len("/.s.PGSQL.65535") > MAX_SOCKET_PATH:
                raise PostgresError(f"socket directory path too long for a unix socket: {server.socket_dir}")
            if run_as is not None:
                for path in (root, server.socket_dir):
                    os.chown(path, *run_as)
            server._initdb()
            server._start_with_retries()
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory; safe to call twice."""
        try:
            if self._running or (self.data_dir / "postmaster.pid").exists():
                result = self._pg_ctl("stop", "-m", "fast")
                self._running = False
                if result.returncode != 0 and (self.data_dir / "postmaster.pid").exists():
                    raise PostgresError(
                        f"pg_ctl stop failed ({result.returncode}): {result.stdout.strip()}\n"
                        f"--- tail of the server log ---\n{_log_tail(self.log_file)}"
                    )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------------------

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def create_database(self) -> str:
        """Create a fresh, uniquely named database and return its SQLAlchemy URL."""
        name = f"edgefleet_test_{uuid.uuid4().hex[:12]}"
        with self._admin_connection() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting whoever is still connected to it."""
        with self._admin_connection() as conn:
            if conn.info.server_version >= 130000:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                return
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))

    def _admin_connection(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=HOST, port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True, connect_timeout=10
        )

    # -- internals -------------------------------------------------------------------------------

    @staticmethod
    def _server_user() -> tuple[int, int]:
        try:
            entry = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root, but there is no '{SERVER_USER}' system user to run the server as: "
                f"{SETUP_HINT}"
            ) from None
        if shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root, but 'runuser' (util-linux) is not installed")
        return entry.pw_uid, entry.pw_gid

    @staticmethod
    def _check_traversable(base_dir: Path) -> None:
        """As root: the ``postgres`` user must be able to reach ``base_dir``."""
        for path in (base_dir, *base_dir.parents):
            mode = path.stat().st_mode
            if not mode & stat.S_IXOTH:
                raise PostgresError(
                    f"{path} is not traversable by the '{SERVER_USER}' user (mode {stat.filemode(mode)}); "
                    "start the server under a directory others can enter, e.g. one from "
                    "tempfile.mkdtemp() chmod 0755"
                )

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self._run_as is not None:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        # cwd: the server user may not be allowed into ours; stdout and stderr merged for messages
        return subprocess.run(
            command,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            timeout=START_TIMEOUT_S + 30,
        )

    def _pg_ctl(self, mode: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``pg_ctl <mode>`` on our data directory, waiting (``-w``) for it to finish."""
        log = ["-l", str(self.log_file)] if mode == "start" else []
        return self._run(
            str(self.bindir / "pg_ctl"),
            mode,
            *args,
            "-D",
            str(self.data_dir),
            *log,
            "-w",
            "-t",
            str(START_TIMEOUT_S),
        )

    def _initdb(self) -> None:
        result = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        if result.returncode != 0:
            raise PostgresError(f"initdb failed ({result.returncode}):\n{result.stdout.strip()}")
        # trust on loopback only: no unix-socket or remote entries
        (self.data_dir / "pg_hba.conf").write_text(
            "# edgefleet test cluster: trust on loopback TCP only\nhost all all 127.0.0.1/32 trust\n"
        )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude '{self._settings_file.name}'\n")

    def _write_settings(self) -> None:
        settings = {
            "port": str(self.port),
            "listen_addresses": f"'{HOST}'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "100",
        }
        self._settings_file.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
        if self._run_as is not None:
            self._settings_file.chmod(0o644)

    def _start_with_retries(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            self._write_settings()
            log_size = self.log_file.stat().st_size if self.log_file.exists() else 0
            result = self._pg_ctl("start")
            if result.returncode == 0:
                self._running = True
                return
            log = self.log_file.read_text(errors="replace")[log_size:] if self.log_file.exists() else ""
            # a timed-out start may have left a postmaster behind
            if (self.data_dir / "postmaster.pid").exists():
                self._pg_ctl("stop", "-m", "immediate")
            if attempt < START_ATTEMPTS and _PORT_IN_USE.search(log):
                self.port = free_port()
                continue
            raise PostgresError(
                f"PostgreSQL did not start on port {self.port} (pg_ctl exited {result.returncode}): "
                f"{result.stdout.strip()}\n--- tail of the server log ---\n{_log_tail(self.log_file)}"
            )
