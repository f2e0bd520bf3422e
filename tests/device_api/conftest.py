"""A real agent (the reference model, the surface-inspection workflow and a light workflow) and a
real device API server on a Unix socket, with clients."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
import yaml

from agent.config import load_settings
from agent.daemon import Agent
from agent.device_api import AgentHost, DeviceApiSettings, DeviceServer, EventBus
from protos import device_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "surface_inspection_v1.onnx"
SURFACE = REPO / "examples" / "workflows" / "surface_inspection.json"

ECHO_WORKFLOW = {
    "id": "echo",
    "version": 2,
    "nodes": [
        {"id": "facts", "type": "transform", "config": {"output": {"n": "$.n"}}},
        {"id": "gate", "type": "threshold", "config": {"score": "$.n", "threshold_set": "echo"}},
    ],
    "edges": [{"source": "facts", "target": "gate"}],
}
"""A cheap workflow: rejects when the input's ``n`` is at or above the live threshold."""


def write_agent_config(directory: Path) -> Path:
    (directory / "echo.json").write_text(json.dumps(ECHO_WORKFLOW))
    config = {
        "device_id": "line1-cam1",
        "data_dir": "data",
        "profile": "x86-cpu",
        "models": [{"id": "surface_inspection", "version": "1", "file": str(MODEL)}],
        "thresholds": {"echo": {"default": 10}},
        "workflows": [{"file": str(SURFACE), "workers": 1}, {"file": "echo.json", "workers": 1}],
    }
    path = directory / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def jpeg(width: int = 64, height: int = 48) -> bytes:
    image = np.full((height, width, 3), 128, np.uint8)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (their paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ef-api-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = Agent(load_settings(write_agent_config(tmp_path)))
    agent.start()
    yield agent
    agent.stop()


@pytest.fixture
def host(agent: Agent) -> AgentHost:
    return AgentHost(agent, EventBus(capacity=64))


@pytest.fixture
def settings(socket_dir: Path) -> DeviceApiSettings:
    return DeviceApiSettings(socket_path=socket_dir / "device.sock", inspect_window=4, shutdown_grace_s=1)


@pytest.fixture
def server(host: AgentHost, settings: DeviceApiSettings, agent: Agent) -> Iterator[DeviceServer]:
    server = DeviceServer(host, settings, data_dir=agent.settings.data_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def channel(server: DeviceServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"unix:{server.socket_path}") as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.Channel) -> device_pb2_grpc.DeviceServiceStub:
    return device_pb2_grpc.DeviceServiceStub(channel)
