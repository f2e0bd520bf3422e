"""The device API server: ``DeviceService``, standard health checking and reflection, on a Unix
socket and, when configured, on TCP with TLS.

Lifecycle (:attr:`DeviceServer.state`): ``created`` → :meth:`~DeviceServer.start` → ``serving``
→ :meth:`~DeviceServer.stop` → ``stopped``. Health (``grpc.health.v1``, for the whole server
``""`` and for ``edgefleet.v1.DeviceService``) follows the host: NOT_SERVING while the agent
starts or builds an engine that nothing else can serve, SERVING in between, and NOT_SERVING
from the moment :meth:`~DeviceServer.stop` is called.

gRPC's C core owns the network I/O; each call is served on a thread of a bounded pool
(``max_concurrent_rpcs``; more calls at once get RESOURCE_EXHAUSTED), and ``Inspect`` frames run
on a separate pool of ``run_workers`` threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from agent.device_api.auth import Authoriser, read_token
from agent.device_api.errors import ServerError
from agent.device_api.host import DeviceHost
from agent.device_api.service import DeviceServicer
from agent.device_api.settings import DeviceApiSettings
from protos import device_pb2, device_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME: str = device_pb2.DESCRIPTOR.services_by_name["DeviceService"].full_name
SOCKET_MODE = 0o660
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with its terminating NUL
HEALTH_POLL_S = 0.25

ServerState = Literal["created", "serving", "stopped"]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServerError(f"device API {what} {path} cannot be read: {exc}") from exc


class DeviceServer:
    """Serves ``host`` as ``settings`` say. ``data_dir`` is where the default socket goes."""

    def __init__(self, host: DeviceHost, settings: DeviceApiSettings, *, data_dir: Path) -> None:
        self.host = host
        self.settings = settings
        self.socket_path = settings.socket(data_dir)
        self.tcp_port: int | None = None
        self.state: ServerState = "created"
        self._server: grpc.Server | None = None
        self._health = health.HealthServicer()
        self._pool = ThreadPoolExecutor(settings.run_workers, thread_name_prefix="edgefleet-api-run")
        token = read_token(settings.token_file) if settings.tcp_address and settings.token_file else None
        self.servicer = DeviceServicer(host, settings, Authoriser(token), self._pool)
        self._stop_health = threading.Event()
        self._health_thread: threading.Thread | None = None
        self._serving: bool | None = None

    def __enter__(self) -> DeviceServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def inspect_peak_in_flight(self) -> int:
        """The most ``Inspect`` frames that were ever in flight at once (all streams together)."""
        return self.servicer.inspect_in_flight.peak

    def start(self) -> None:
        """Bind and serve; health starts NOT_SERVING and follows the host. ``ServerError`` when a
        socket cannot be bound or a TLS file cannot be read (nothing is left listening)."""
        if self.state != "created":
            raise RuntimeError(f"the device API server is {self.state}")
        settings = self.settings
        limit = settings.max_message_bytes
        server = grpc.server(
            ThreadPoolExecutor(settings.max_concurrent_rpcs, thread_name_prefix="edgefleet-api"),
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        device_pb2_grpc.add_DeviceServiceServicer_to_server(self.servicer, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self._set_health(False)
        try:
            self._bind_socket(server)
            if settings.tcp_address is not None:
                self.tcp_port = self._bind_tcp(server, settings.tcp_address)
            server.start()
        except BaseException:
            server.stop(None)
            raise
        with contextlib.suppress(FileNotFoundError):
            os.chmod(self.socket_path, SOCKET_MODE)
        self._server = server
        self.state = "serving"
        self._health_thread = threading.Thread(
            target=self._follow_health, name="edgefleet-api-health", daemon=True
        )
        self._health_thread.start()
        log.info(
            "device API on unix:%s%s",
            self.socket_path,
            f" and tcp {settings.tcp_address} (port {self.tcp_port}, TLS)" if self.tcp_port else "",
        )

    def _bind_socket(self, server: grpc.Server) -> None:
        path = self.socket_path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ServerError(f"device API socket path {path} is longer than {MAX_SOCKET_PATH} bytes")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ServerError(f"device API socket path {path} exists and is not a socket")
            if _in_use(path):
                raise ServerError(f"another process serves the device API on {path}")
            path.unlink()
        try:
            server.add_insecure_port(f"unix:{path}")
        except RuntimeError as exc:
            raise ServerError(f"cannot listen on unix:{path}: {exc}") from exc

    def _bind_tcp(self, server: grpc.Server, address: str) -> int:
        settings = self.settings
        assert settings.tls_cert_file is not None  # the settings' validator checks both
        assert settings.tls_key_file is not None
        client_ca = (
            _read(settings.tls_client_ca_file, "client CA file") if settings.tls_client_ca_file else None
        )
        credentials = grpc.ssl_server_credentials(
            [
                (
                    _read(settings.tls_key_file, "TLS key file"),
                    _read(settings.tls_cert_file, "TLS certificate file"),
                )
            ],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
        try:
            port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise ServerError(f"cannot listen on {address}: {exc}") from exc
        if port == 0:
            raise ServerError(f"cannot listen on {address}")
        return port

    def _set_health(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            self._health.set(name, status)

    def _follow_health(self) -> None:
        while not self._stop_health.is_set():
            try:
                state, _ = self.host.health()
            except Exception:
                log.exception("device API: reading the agent's health failed")
                state = "starting"
            if not self._stop_health.is_set():
                self._set_health(state == "serving")
            self._stop_health.wait(HEALTH_POLL_S)

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, end event watchers, let calls in progress finish for ``grace``
        seconds (default: the settings'), then cancel the rest and remove the socket."""
        if self.state != "serving":
            self.state = "stopped"
            self._pool.shutdown(wait=False)
            return
        self.state = "stopped"
        self._stop_health.set()
        self._health.enter_graceful_shutdown()
        self.servicer.shutdown()
        assert self._server is not None
        self._server.stop(self.settings.shutdown_grace_s if grace is None else grace).wait()
        if self._health_thread is not None:
            self._health_thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


def _in_use(path: Path) -> bool:
    """Whether a process accepts connections on the Unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True
