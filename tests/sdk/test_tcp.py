"""The SDK against a device over TCP: TLS with a client certificate, and the bearer token."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.device_api import DeviceServer
from edgefleet import InvalidArgument, Unauthenticated, Unavailable, WorkflowClient
from tests.device_api.conftest import jpeg
from tests.device_api.test_tcp import TOKEN, Pki


def tls_client(server: DeviceServer, pki: Pki, tmp_path: Path, api_key: str | None) -> WorkflowClient:
    (tmp_path / "client.pem").write_bytes(pki.client_cert)
    (tmp_path / "client.key").write_bytes(pki.client_key)
    return WorkflowClient(
        endpoint=f"grpcs://127.0.0.1:{server.tcp_port}",
        api_key=api_key,
        root_certificates=pki.ca,
        client_certificate=tmp_path / "client.pem",
        client_key=str(tmp_path / "client.key"),
    )


def test_a_client_with_the_token_runs_workflows_and_streams(
    tcp_server: DeviceServer, pki: Pki, tmp_path: Path
) -> None:
    with tls_client(tcp_server, pki, tmp_path, TOKEN) as client:
        assert client.kind == "device"
        assert client.execute_workflow("echo", {"n": 11}).decision == "reject"
        assert client.status().health == "serving"
        results = list(client.inspect([jpeg(), jpeg()], "echo", input_data={"n": 1}))
        assert [(r.frame_id, r.ok) for r in results] == [(0, True), (1, True)]
        change = client.set_threshold("echo", "default", 20)
        assert change.origin.startswith("ipv4:127.0.0.1")


@pytest.mark.parametrize("api_key", ["line1-gateway-0123456789abcdeX", None])
def test_a_wrong_or_missing_token_is_unauthenticated_on_every_method(
    tcp_server: DeviceServer, pki: Pki, tmp_path: Path, api_key: str | None
) -> None:
    with tls_client(tcp_server, pki, tmp_path, api_key) as client:
        with pytest.raises(Unauthenticated) as caught:
            client.execute_workflow("echo", {"n": 1})
        assert caught.value.code == "UNAUTHENTICATED"
        assert f"device at grpcs://127.0.0.1:{tcp_server.tcp_port}" in str(caught.value)
        with pytest.raises(Unauthenticated):
            client.status()
        with pytest.raises(Unauthenticated):
            next(client.watch_events())
        with pytest.raises(Unauthenticated):
            list(client.inspect([jpeg()], "echo"))


def test_a_client_without_a_certificate_cannot_connect(tcp_server: DeviceServer, pki: Pki) -> None:
    endpoint = f"127.0.0.1:{tcp_server.tcp_port}"
    with (
        WorkflowClient(endpoint, TOKEN, root_certificates=pki.ca, timeout=10) as client,
        pytest.raises(Unavailable),
    ):
        client.status()


def test_a_certificate_without_its_key_is_refused(pki: Pki) -> None:
    with pytest.raises(InvalidArgument, match="go together"):
        WorkflowClient("127.0.0.1:50051", TOKEN, client_certificate=pki.client_cert)
    with pytest.raises(InvalidArgument, match="cannot read"):
        WorkflowClient("127.0.0.1:50051", TOKEN, root_certificates="/nonexistent/ca.pem")
