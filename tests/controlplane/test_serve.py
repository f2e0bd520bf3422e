"""``edgefleet serve`` as operators run it: a subprocess on embedded defaults, and over TLS."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

EDGEFLEET = [sys.executable, "-c", "from controlplane.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    env: dict[str, str], url: str, verify: ssl.SSLContext | bool = True, cwd: Path | None = None
) -> Iterator[list[str]]:
    """Run ``edgefleet serve`` until the block ends; yields a list that receives its stderr lines."""
    process = subprocess.Popen(
        [*EDGEFLEET, "serve"], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    logs: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", verify=verify).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("edgefleet serve did not become ready")
            time.sleep(0.1)
        yield logs
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
        logs.extend(err.decode().splitlines())


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgefleet-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def base_env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    return {**env, "EDGEFLEET_PORT": str(port)}


def test_serve_on_embedded_defaults(tmp_path: Path) -> None:
    port = free_port()
    env = base_env(tmp_path, port)
    token = subprocess.run(
        [*EDGEFLEET, "admin", "create-token", "--name", "ana"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    url = f"http://127.0.0.1:{port}"
    with serve(env, url, cwd=tmp_path) as logs:
        me = httpx.get(f"{url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["name"] == "ana"
    data = tmp_path / "edgefleet-data"
    assert (data / "controlplane.db").exists()
    assert (data / "signing_key.pem").stat().st_mode & 0o777 == 0o600
    lines = [json.loads(line) for line in logs if line.startswith("{")]
    assert any(line.get("route") == "/api/v1/whoami" and line.get("status") == 200 for line in lines)


def test_serve_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    env = {
        **base_env(tmp_path, port),
        "EDGEFLEET_DATA_DIR": str(tmp_path / "data"),
        "EDGEFLEET_TLS_CERT": str(cert),
        "EDGEFLEET_TLS_KEY": str(key),
    }
    url = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(cert))
    with serve(env, url, verify=trust):
        assert httpx.get(f"{url}/healthz", verify=trust).json() == {"status": "ok"}
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            plain_ok = True
        except httpx.HTTPError:
            plain_ok = False
        assert not plain_ok


def test_bad_settings_are_named(tmp_path: Path) -> None:
    env = {**base_env(tmp_path, free_port()), "EDGEFLEET_TLS_CERT": str(tmp_path / "cert.pem")}
    result = subprocess.run([*EDGEFLEET, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert "tls_cert and tls_key must be set together" in result.stderr
