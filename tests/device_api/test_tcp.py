"""TCP: TLS (with client certificates when configured) and a bearer token on every call."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from agent.daemon import Agent
from agent.device_api import AgentHost, DeviceApiSettings, DeviceServer, ServerError
from controlplane.broker.ca import CertificateAuthority
from protos import device_pb2 as pb
from protos import device_pb2_grpc

TOKEN = "line1-gateway-0123456789abcdef"


@dataclass
class Pki:
    ca: bytes
    client_cert: bytes
    client_key: bytes
    settings: DeviceApiSettings


@pytest.fixture
def pki(tmp_path: Path, socket_dir: Path) -> Pki:
    ca = CertificateAuthority.generate("line1 test CA")
    cert, key = ca.issue_server_cert(["localhost"], ["127.0.0.1"])
    client_cert, client_key = ca.issue_client_cert("line1-gateway")
    for name, data in {
        "server.pem": cert,
        "server.key": key,
        "ca.pem": ca.ca_pem,
        "token": TOKEN.encode(),
    }.items():
        (tmp_path / name).write_bytes(data)
    settings = DeviceApiSettings(
        socket_path=socket_dir / "device.sock",
        tcp_address="127.0.0.1:0",
        tls_cert_file=tmp_path / "server.pem",
        tls_key_file=tmp_path / "server.key",
        tls_client_ca_file=tmp_path / "ca.pem",
        token_file=tmp_path / "token",
        shutdown_grace_s=1,
    )
    return Pki(ca.ca_pem, client_cert, client_key, settings)


@pytest.fixture
def tcp_server(host: AgentHost, agent: Agent, pki: Pki) -> Iterator[DeviceServer]:
    with DeviceServer(host, pki.settings, data_dir=agent.settings.data_dir) as server:
        yield server


def tls_stub(
    server: DeviceServer, pki: Pki, *, client_cert: bool = True
) -> device_pb2_grpc.DeviceServiceStub:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca,
        private_key=pki.client_key if client_cert else None,
        certificate_chain=pki.client_cert if client_cert else None,
    )
    channel = grpc.secure_channel(f"127.0.0.1:{server.tcp_port}", credentials)
    return device_pb2_grpc.DeviceServiceStub(channel)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_a_caller_with_the_token_is_served(tcp_server: DeviceServer, pki: Pki) -> None:
    stub = tls_stub(tcp_server, pki)
    run = stub.RunWorkflow(
        pb.RunWorkflowRequest(workflow_id="echo", input_json='{"n": 11}'), metadata=bearer(TOKEN)
    )
    assert run.decision == "reject"
    reply = stub.SetThreshold(
        pb.SetThresholdRequest(threshold_set="echo", key="default", value=20), metadata=bearer(TOKEN)
    )
    assert reply.override.origin.startswith("ipv4:127.0.0.1")


@pytest.mark.parametrize(
    "metadata", [(), bearer("line1-gateway-0123456789abcdeX"), (("authorization", TOKEN),)]
)
def test_without_the_right_token_every_method_is_unauthenticated(
    tcp_server: DeviceServer, pki: Pki, metadata: tuple[tuple[str, str], ...]
) -> None:
    stub = tls_stub(tcp_server, pki)
    calls = [
        lambda: stub.RunWorkflow(pb.RunWorkflowRequest(workflow_id="echo"), metadata=metadata),
        lambda: stub.GetStatus(pb.GetStatusRequest(), metadata=metadata),
        lambda: stub.ListWorkflows(pb.ListWorkflowsRequest(), metadata=metadata),
        lambda: stub.ListModels(pb.ListModelsRequest(), metadata=metadata),
        lambda: stub.SetThreshold(
            pb.SetThresholdRequest(threshold_set="echo", key="x", value=1), metadata=metadata
        ),
        lambda: list(stub.WatchEvents(pb.WatchEventsRequest(), metadata=metadata)),
        lambda: list(stub.Inspect(iter([pb.InspectFrame(workflow_id="echo")]), metadata=metadata)),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


def test_a_client_without_a_certificate_cannot_connect(tcp_server: DeviceServer, pki: Pki) -> None:
    stub = tls_stub(tcp_server, pki, client_cert=False)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetStatus(pb.GetStatusRequest(), metadata=bearer(TOKEN), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_the_unix_socket_needs_no_token_beside_tcp(tcp_server: DeviceServer) -> None:
    with grpc.insecure_channel(f"unix:{tcp_server.socket_path}") as channel:
        status = device_pb2_grpc.DeviceServiceStub(channel).GetStatus(pb.GetStatusRequest())
    assert status.health == "serving"


def test_a_short_token_file_is_refused_at_start(host: AgentHost, agent: Agent, pki: Pki) -> None:
    assert pki.settings.token_file is not None
    pki.settings.token_file.write_text("short")
    with pytest.raises(ServerError, match="shorter than 16"):
        DeviceServer(host, pki.settings, data_dir=agent.settings.data_dir)
