"""A real control plane for tests: uvicorn serving the app on a free loopback port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from controlplane.api.app import create_app
from controlplane.api.deps import Services
from controlplane.api.routes.access import TokenCreate, create_operator_token
from controlplane.settings import ControlPlaneSettings


@dataclass
class LiveControlPlane:
    url: str
    app: FastAPI
    settings: ControlPlaneSettings
    admin_token: str = ""
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def services(self) -> Services:
        svc: Services = self.app.state.services
        return svc

    def token(self, role: str = "admin", name: str | None = None, **options: Any) -> str:
        """Issue an operator token straight in the database (as ``edgefleet admin create-token``)."""
        body = TokenCreate(name=name or f"{role}-user", role=role, **options)
        created = create_operator_token(self.services.db, body, actor="local:tests", default_ttl_s=3600)
        return created.token

    def client(self, token: str | None = None, **options: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30, **options)
        self._clients.append(client)
        return client

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def enroll(self, device_id: str | None = None, labels: dict[str, str] | None = None) -> tuple[str, str]:
        """Enroll a device through the API; returns its id and credential."""
        admin = self.admin()
        token = admin.post("/api/v1/enrollment-tokens", json={"labels": labels or {}})
        token.raise_for_status()
        body: dict[str, Any] = {"token": token.json()["token"]}
        if device_id is not None:
            body["device_id"] = device_id
        enrolled = self.client().post("/api/v1/enroll", json=body)
        enrolled.raise_for_status()
        data = enrolled.json()
        return data["device_id"], data["credential"]

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()


@contextmanager
def live_control_plane(settings: ControlPlaneSettings, *, admin: bool = True) -> Iterator[LiveControlPlane]:
    """Serve ``settings``' control plane until the block ends; with ``admin``, issue an admin token
    first (that needs a migrated database)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = settings.model_copy(update={"port": port, "log_json": False})
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the control plane did not start")
        time.sleep(0.02)
    live = LiveControlPlane(url=f"http://127.0.0.1:{port}", app=app, settings=settings)
    if admin:
        live.admin_token = live.token("admin", name="root")
    try:
        yield live
    finally:
        live.close_clients()
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
