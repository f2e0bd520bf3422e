"""The device API's settings refuse TCP without TLS and a token."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.device_api import DeviceApiSettings


def test_the_socket_defaults_to_the_data_dir() -> None:
    assert DeviceApiSettings().socket(Path("/var/lib/edgefleet")) == Path("/var/lib/edgefleet/device.sock")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tcp_address": "0.0.0.0:50051", "token_file": "t"}, "TLS only"),
        ({"tcp_address": "0.0.0.0:50051", "tls_cert_file": "c", "tls_key_file": "k"}, "token_file"),
        ({"tls_cert_file": "c"}, "together"),
        ({"tls_client_ca_file": "ca"}, "TCP only"),
        ({"inspect_window": 0}, "inspect_window"),
    ],
)
def test_unusable_settings_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DeviceApiSettings.model_validate(fields)


def test_relative_paths_resolve_against_the_config_directory() -> None:
    settings = DeviceApiSettings(
        tcp_address="127.0.0.1:0",
        tls_cert_file=Path("c.pem"),
        tls_key_file=Path("/abs/k.pem"),
        token_file=Path("t"),
    ).resolve(Path("/etc/edgefleet"))
    assert settings.tls_cert_file == Path("/etc/edgefleet/c.pem")
    assert settings.tls_key_file == Path("/abs/k.pem")
    assert settings.token_file == Path("/etc/edgefleet/t")
