"""Standard health checking follows the agent's life; reflection lets stock tools find the API."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from agent.config import load_settings
from agent.daemon import Agent
from agent.device_api import AgentHost, DeviceApiSettings, DeviceServer, ServerError
from tests.device_api.conftest import write_agent_config

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_is_not_serving_while_starting_and_during_shutdown(
    tmp_path: Path, settings: DeviceApiSettings
) -> None:
    agent = Agent(load_settings(write_agent_config(tmp_path)))
    server = DeviceServer(AgentHost(agent), settings, data_dir=tmp_path)
    server.start()  # before the agent: as the daemon starts it, to answer while models load
    try:
        with grpc.insecure_channel(f"unix:{server.socket_path}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = health.Check(health_pb2.HealthCheckRequest(service="edgefleet.v1.DeviceService"))
            assert check.status == NOT_SERVING
            updates = health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert next(updates).status == NOT_SERVING
            agent.start()
            assert next(updates).status == SERVING
            stopping = threading.Thread(target=server.stop)
            stopping.start()
            assert next(updates).status == NOT_SERVING
            stopping.join()
    finally:
        server.stop()
        agent.stop()
    assert not server.socket_path.exists()


def test_reflection_lists_the_device_service(server: DeviceServer) -> None:
    with grpc.insecure_channel(f"unix:{server.socket_path}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"edgefleet.v1.DeviceService", "grpc.health.v1.Health"} <= services
        service = DescriptorPool(database).FindServiceByName("edgefleet.v1.DeviceService")
        assert {m.name for m in service.methods} == {
            "RunWorkflow",
            "Inspect",
            "GetStatus",
            "ListWorkflows",
            "ListModels",
            "WatchEvents",
            "SetThreshold",
        }


def test_a_second_server_on_a_socket_in_use_is_refused(server: DeviceServer, host: AgentHost) -> None:
    second = DeviceServer(host, server.settings, data_dir=Path("/nonexistent"))
    try:
        with pytest.raises(ServerError, match="another process"):
            second.start()
    finally:
        second.stop()
    assert server.socket_path.exists()
