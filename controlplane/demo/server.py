"""A control plane served by uvicorn in a background thread of this process.

It is the same application ``edgefleet serve`` runs (:func:`controlplane.api.app.create_app`:
migrations, signing key, MQTT bridge when ``mqtt_host`` is set), bound to a socket this module
opens first, so the port is known, and free, before the server starts. Starting takes about a
second (no process to spawn, no imports to repeat); stopping asks uvicorn to exit, which runs the
application's shutdown (the bridge disconnects, the database is disposed), and joins the thread.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from controlplane.api.app import create_app
from controlplane.api.deps import Services
from controlplane.demo.errors import FleetStartError
from controlplane.settings import ControlPlaneSettings

__all__ = ["ServedControlPlane"]

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise FleetStartError(
                f"port {port} on {host} is busy: stop what listens there, or pick another port "
                "(0 picks a free one)"
            ) from exc
        raise FleetStartError(f"cannot listen on {host}:{port}: {exc}") from exc
    return sock


class ServedControlPlane:
    """The control plane of ``settings`` on ``settings.host`` at ``port`` (0: a free port).

    :meth:`start` returns once uvicorn accepts requests (and, when the settings name a broker,
    once the bridge is connected to it); :meth:`stop` is idempotent. ``settings.port`` is
    replaced by the bound port, so ``base_url`` (what devices download from) is right.
    """

    def __init__(self, settings: ControlPlaneSettings, port: int = 0) -> None:
        self._requested = settings
        self._port = port
        self.settings = settings
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._services: Services | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def services(self) -> Services:
        """The running application's services (database, signer, bridge)."""
        if self._services is None:
            raise RuntimeError("the control plane is not running")
        return self._services

    def start(self, bridge_timeout_s: float = 30.0) -> ServedControlPlane:
        """Serve; :class:`FleetStartError` when the port is busy, the application fails to start
        (the cause is chained) or the bridge does not connect within ``bridge_timeout_s``."""
        sock = _bind(self._requested.host, self._port)
        port = sock.getsockname()[1]
        self.settings = self._requested.model_copy(update={"port": port})
        app = create_app(self.settings)
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, log_config=None)
        server = uvicorn.Server(config)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # noqa: BLE001 -- reported by start(): a failed lifespan exits
                failure.append(exc)

        thread = threading.Thread(target=run, name="edgefleet-controlplane", daemon=True)
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                cause = failure[0] if failure else None
                raise FleetStartError(
                    f"the control plane did not start on port {port}"
                    + (f": {type(cause).__name__}: {cause}" if cause else " (see the log)")
                ) from cause
            time.sleep(0.02)
        self._services = app.state.services
        bridge = self.services.bridge
        if bridge is not None and not bridge.connected.wait(bridge_timeout_s):
            self.stop()
            raise FleetStartError(
                f"the control plane's MQTT bridge did not connect to "
                f"{self.settings.mqtt_host}:{self.settings.mqtt_port} within {bridge_timeout_s:.0f}s"
            )
        return self

    def write_admin_token(self, path: Path, name: str = "demo") -> str:
        """Issue an admin operator token straight in the database (as ``edgefleet admin
        create-token`` does on the server's host), store it in ``path`` (mode 0600) and return it."""
        from controlplane.api.routes.access import TokenCreate, create_operator_token

        created = create_operator_token(
            self.services.db,
            TokenCreate(name=name, role="admin"),
            actor="local:demo",
            default_ttl_s=self.settings.operator_token_ttl_s,
        )
        path.touch(mode=0o600)
        path.write_text(created.token + "\n")
        return created.token

    def stop(self) -> None:
        """Ask uvicorn to exit (the application's shutdown runs) and wait for the thread."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        self._services = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
        if sock is not None:
            sock.close()

    def __enter__(self) -> ServedControlPlane:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
