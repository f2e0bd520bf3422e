"""``edgefleet-agent enroll`` against a real control plane, and the sync settings it feeds."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.config import Credentials, load_settings
from agent.daemon import Agent
from agent.manifest import load_public_key
from agent.workflow import SpecError
from tests.controlplane.live import LiveControlPlane

runner = CliRunner()


def enrollment_token(cp: LiveControlPlane, **body: object) -> str:
    response = cp.admin().post("/api/v1/enrollment-tokens", json=body)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def test_enroll_writes_private_credentials_and_prints_the_device_id(
    sqlite_control_plane: LiveControlPlane, tmp_path: Path
) -> None:
    cp = sqlite_control_plane
    data_dir = tmp_path / "data"
    token = enrollment_token(cp, labels={"line": "3"})
    result = runner.invoke(
        app,
        [
            "enroll",
            "--url",
            cp.url + "/",
            "--token",
            token,
            "--label",
            "station=2",
            "--data-dir",
            str(data_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    device_id = result.output.strip()
    assert device_id.startswith("dev-")

    path = data_dir / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored["device_id"] == device_id
    assert stored["api_url"] == cp.settings.base_url
    assert stored["signing_key_id"] == cp.services.signer.key_id
    load_public_key(stored["signing_public_key"])
    credentials = Credentials.load(path)
    me = cp.client(credentials.credential).get("/api/v1/device/self")
    assert me.status_code == 200, me.text
    assert me.json()["device"]["labels"] == {"line": "3", "station": "2"}
    assert me.json()["device"]["hostname"] == socket.gethostname()

    again = runner.invoke(app, ["enroll", "--url", cp.url, "--token", token, "--data-dir", str(data_dir)])
    assert again.exit_code == 2
    assert "already enrolled" in again.output
    forced = runner.invoke(
        app, ["enroll", "--url", cp.url, "--token", token, "--data-dir", str(data_dir), "--force"]
    )
    assert forced.exit_code == 1
    assert forced.output.count("\n") == 1
    assert "enrollment refused (HTTP 401)" in forced.output
    assert "already used" in forced.output
    assert json.loads(path.read_text()) == stored  # untouched


def test_enroll_errors_are_one_clear_line(sqlite_control_plane: LiveControlPlane, tmp_path: Path) -> None:
    cp = sqlite_control_plane
    bad_label = runner.invoke(
        app, ["enroll", "--url", cp.url, "--token", "x", "--label", "novalue", "--data-dir", str(tmp_path)]
    )
    assert bad_label.exit_code == 2
    assert "not key=value" in bad_label.output

    bad_token = runner.invoke(
        app, ["enroll", "--url", cp.url, "--token", "nope", "--data-dir", str(tmp_path)]
    )
    assert bad_token.exit_code == 1
    assert bad_token.output.startswith("error: enrollment refused (HTTP 401): ")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = runner.invoke(
        app, ["enroll", "--url", f"http://127.0.0.1:{port}", "--token", "t", "--data-dir", str(tmp_path)]
    )
    assert unreachable.exit_code == 1
    assert unreachable.output.startswith("error: cannot reach the control plane at ")
    assert not (tmp_path / "credentials.json").exists()


def write_credentials(path: Path, **extra: object) -> None:
    from controlplane.signing import SigningKey

    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "device_id": "cam-9",
        "credential": "secret",
        "signing_public_key": SigningKey.generate().public_key_pem(),
        "api_url": "https://fleet.example.com/",
        **extra,
    }
    path.write_text(json.dumps(data))


def test_sync_settings_take_their_defaults_from_the_credentials(tmp_path: Path) -> None:
    write_credentials(
        tmp_path / "data" / "credentials.json",
        mqtt={"host": "mqtt.example.com", "tls": True, "password": "from-enroll"},
    )
    settings = load_settings(None, data_dir=tmp_path / "data", sync={})
    resolved = settings.resolve_sync(Credentials.load(settings.credentials_file))
    assert (resolved.device_id, resolved.control_plane_url) == ("cam-9", "https://fleet.example.com")
    assert (resolved.mqtt_host, resolved.mqtt_port, resolved.mqtt_tls) == ("mqtt.example.com", 8883, True)
    assert (resolved.mqtt_username, resolved.mqtt_password) == ("cam-9", "from-enroll")
    assert (resolved.keepalive_s, resolved.session_expiry_s) == (30, 7 * 24 * 3600)

    plain = load_settings(None, data_dir=tmp_path / "data", sync={"mqtt_host": "broker", "mqtt_tls": False})
    assert plain.resolve_sync(Credentials.load(plain.credentials_file)).mqtt_port == 1883

    other = load_settings(None, device_id="cam-1", data_dir=tmp_path / "data", sync={})
    with pytest.raises(ValueError, match="enrolled as 'cam-9'"):
        other.resolve_sync(Credentials.load(other.credentials_file))
    with pytest.raises(Exception, match="mqtt_cert_file and mqtt_key_file"):
        load_settings(None, sync={"mqtt_cert_file": "c.pem"})
    with pytest.raises(Exception, match="mqtt_bogus"):
        load_settings(None, sync={"mqtt_bogus": 1})


def test_sync_paths_in_a_config_file_are_relative_to_it(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("sync:\n  credentials_file: creds.json\n  mqtt_ca_file: ca.pem\n  mqtt_host: broker\n")
    settings = load_settings(config)
    assert settings.sync is not None
    assert settings.credentials_file == tmp_path / "creds.json"
    assert settings.sync.mqtt_ca_file == tmp_path / "ca.pem"


def test_an_agent_with_sync_but_no_enrollment_says_so(tmp_path: Path) -> None:
    settings = load_settings(
        None, data_dir=tmp_path / "data", profile="x86-cpu", sync={"mqtt_host": "broker"}
    )
    agent = Agent(settings)
    with pytest.raises(SpecError, match="enroll first"):
        agent.start()
    agent.stop()
