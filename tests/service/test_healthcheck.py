"""``python -m agent.service.healthcheck`` against a real gRPC server on a Unix socket."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from agent.service.healthcheck import check_health, default_socket, main
from tests.conftest import REPO

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DEVICE_SERVICE = "edgefleet.v1.Device"


@dataclass
class HealthServer:
    socket: Path
    servicer: health.HealthServicer

    def set(self, status: int, service: str = "") -> None:
        self.servicer.set(service, status)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="ef-state-"))  # short: socket paths have a limit
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def health_server(state_dir: Path) -> Iterator[HealthServer]:
    """A gRPC server with the standard health service, listening where the agent's device API does."""
    path = state_dir / "device.sock"
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{path}")
    server.start()
    try:
        yield HealthServer(path, servicer)
    finally:
        server.stop(grace=None).wait()


def test_serving_exits_0(health_server: HealthServer, capsys: pytest.CaptureFixture[str]) -> None:
    health_server.set(SERVING)
    assert main(["--socket", str(health_server.socket)]) == 0
    assert capsys.readouterr().out == f"unix:{health_server.socket}: the server is SERVING\n"


def test_not_serving_exits_1(health_server: HealthServer, capsys: pytest.CaptureFixture[str]) -> None:
    health_server.set(NOT_SERVING)
    assert main(["--socket", str(health_server.socket)]) == 1
    assert capsys.readouterr().err == f"unix:{health_server.socket}: the server is NOT_SERVING\n"


def test_a_named_service_is_asked_about(health_server: HealthServer) -> None:
    health_server.set(SERVING)
    health_server.set(NOT_SERVING, DEVICE_SERVICE)
    result = check_health(health_server.socket, DEVICE_SERVICE)
    assert (result.healthy, result.status) == (False, "NOT_SERVING")
    health_server.set(SERVING, DEVICE_SERVICE)
    assert check_health(health_server.socket, DEVICE_SERVICE).healthy


def test_an_unknown_service_exits_1(health_server: HealthServer) -> None:
    health_server.set(SERVING)
    result = check_health(health_server.socket, "edgefleet.v1.Nothing")
    assert (result.healthy, result.status) == (False, "SERVICE_UNKNOWN")
    assert "does not know service 'edgefleet.v1.Nothing'" in result.message


def test_no_socket_exits_1_saying_so(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = state_dir / "device.sock"
    assert main(["--socket", str(path)]) == 1
    assert capsys.readouterr().err == (
        f"no socket at {path}: the agent is not running, or its device API listens elsewhere\n"
    )


def test_a_socket_nobody_listens_on_exits_1_saying_so(state_dir: Path) -> None:
    path = state_dir / "device.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a socket file left by an agent that died
    stale.close()
    result = check_health(path)
    assert (result.healthy, result.status) == (False, "UNREACHABLE")
    assert result.message.startswith(f"unix:{path}: nothing answers (is the agent running?)")


def test_a_file_that_is_not_a_socket_exits_1(state_dir: Path) -> None:
    path = state_dir / "device.sock"
    path.write_text("")
    assert check_health(path).message == f"{path} is not a socket"


def test_the_default_socket_is_in_the_data_dir() -> None:
    assert default_socket({}) == Path("/var/lib/edgefleet/device.sock")
    assert default_socket({"EDGEFLEET_DATA_DIR": "/srv/ef"}) == Path("/srv/ef/device.sock")


def test_the_module_runs_as_the_container_runs_it(health_server: HealthServer) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent.service.healthcheck", "--socket", str(health_server.socket)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )

    health_server.set(SERVING)
    serving = run()
    assert (serving.returncode, serving.stderr) == (0, "")
    health_server.set(NOT_SERVING)
    not_serving = run()
    assert not_serving.returncode == 1
    assert not_serving.stderr == f"unix:{health_server.socket}: the server is NOT_SERVING\n"
