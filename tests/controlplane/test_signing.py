"""The control plane's signing key file and the manifests it signs."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.manifest import (
    BadSignature,
    MalformedManifest,
    SignedManifest,
    key_id,
    load_public_key,
    verify_artifact,
    verify_manifest,
)
from controlplane.signing import SigningKey, SigningKeyError, make_manifest

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONTENT = b"graph: {}\n"
DIGEST = hashlib.sha256(CONTENT).hexdigest()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_key_file(path: Path, pem: bytes) -> None:
    path.write_bytes(pem)
    path.chmod(0o600)


def pkcs8(key: Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "secrets" / "signing.pem"


@pytest.fixture
def umask_022() -> Iterator[None]:
    """A typical umask, so that a file created without an explicit mode would come out 0644."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# --- signing -----------------------------------------------------------------------------------------


def test_make_manifest_defaults() -> None:
    manifest = make_manifest("workflow", "line-3", 2, DIGEST, len(CONTENT), now=NOW)
    assert (manifest.kind, manifest.name, manifest.version) == ("workflow", "line-3", 2)
    assert manifest.created == NOW
    assert manifest.expires == NOW + timedelta(days=365)
    short = make_manifest("thresholds", "line-3", 2, DIGEST, 1, lifetime=timedelta(hours=1), now=NOW)
    assert short.expires == NOW + timedelta(hours=1)
    current = make_manifest("model", "detector", 1, DIGEST, 1)
    assert abs(current.created - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lifetime": timedelta(0)}, "expires"),
        ({"now": datetime(2026, 3, 1)}, "created"),
    ],
)
def test_make_manifest_refuses_invalid_fields(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(MalformedManifest, match=field):
        make_manifest("model", "detector", 1, DIGEST, 1, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(MalformedManifest, match="name"):
        make_manifest("model", "bad name", 1, DIGEST, 1, now=NOW)


def test_sign_then_verify_on_the_device(tmp_path: Path) -> None:
    key = SigningKey.generate()
    enrolled = load_public_key(key.public_key_pem())
    assert key.key_id == key_id(enrolled) == key_id(key.public_key)

    signed = key.sign(make_manifest("workflow", "line-3", 2, DIGEST, len(CONTENT), now=NOW))
    assert signed.key_id == key.key_id
    assert len(signed.signature_bytes) == 64

    received = SignedManifest.parse(signed.to_json())
    assert received == signed
    manifest = verify_manifest(received.to_json(), enrolled, now=NOW + timedelta(days=1), installed_version=1)
    artifact = tmp_path / "line-3.yaml"
    artifact.write_bytes(CONTENT)
    verify_artifact(manifest, artifact)


def test_another_keys_signature_is_refused() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    signed = other.sign(make_manifest("model", "detector", 1, DIGEST, 1, now=NOW))
    with pytest.raises(BadSignature, match=f"signed by key {other.key_id}, expected key {key.key_id}"):
        verify_manifest(signed, key.public_key, now=NOW)


def test_repr_shows_the_key_id_only() -> None:
    key = SigningKey.generate()
    assert repr(key) == f"SigningKey(key_id={key.key_id!r})"


# --- the key file ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("umask_022")
def test_key_file_is_created_0600_in_a_0700_directory(key_path: Path) -> None:
    key = SigningKey.load_or_create(key_path)
    assert mode_of(key_path) == 0o600
    assert mode_of(key_path.parent) == 0o700
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert sorted(p.name for p in key_path.parent.iterdir()) == ["signing.pem"]  # no temporary file left
    assert key_id(load_public_key(key.public_key_pem())) == key.key_id


def test_key_file_is_0600_even_under_a_permissive_umask(key_path: Path) -> None:
    old = os.umask(0)
    try:
        SigningKey.load_or_create(key_path)
    finally:
        os.umask(old)
    assert mode_of(key_path) == 0o600


def test_loading_again_gives_the_same_key(key_path: Path) -> None:
    first = SigningKey.load_or_create(key_path)
    again = SigningKey.load_or_create(key_path)
    assert again.key_id == first.key_id
    signed = again.sign(make_manifest("model", "detector", 1, DIGEST, 1, now=NOW))
    verify_manifest(signed, first.public_key, now=NOW)


def test_existing_directory_is_used(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path / "signing.pem")
    assert SigningKey.load_or_create(tmp_path / "signing.pem").key_id == key.key_id


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_key_file_readable_or_writable_by_others_is_refused(key_path: Path, mode: int) -> None:
    SigningKey.load_or_create(key_path)
    key_path.chmod(mode)
    with pytest.raises(SigningKeyError, match=rf"{key_path}.* mode {mode:04o}.*chmod 600"):
        SigningKey.load_or_create(key_path)
    assert key_path.exists()  # refused, never replaced


def test_owner_only_modes_are_accepted(key_path: Path) -> None:
    key = SigningKey.load_or_create(key_path)
    key_path.chmod(0o400)
    assert SigningKey.load_or_create(key_path).key_id == key.key_id


@pytest.mark.parametrize(
    ("pem", "expected"),
    [
        (b"this is not a key\n", "not an unencrypted PEM private key"),
        (b"", "not an unencrypted PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not an unencrypted PEM"),
        (
            Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            "not an unencrypted PEM private key",
        ),
        (
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            ),
            "not an unencrypted PEM private key",
        ),
        (pkcs8(ec.generate_private_key(ec.SECP256R1())), "not an ed25519 private key"),
        (b"x" * (70 * 1024), "larger than"),
    ],
)
def test_key_file_that_is_not_an_ed25519_private_key_is_refused(
    key_path: Path, pem: bytes, expected: str
) -> None:
    key_path.parent.mkdir(mode=0o700)
    write_key_file(key_path, pem)
    with pytest.raises(SigningKeyError, match=f"{key_path}.*{expected}"):
        SigningKey.load_or_create(key_path)
    assert key_path.read_bytes() == pem  # never overwritten


def test_rsa_key_file_is_refused(key_path: Path) -> None:
    key_path.parent.mkdir(mode=0o700)
    write_key_file(key_path, pkcs8(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    with pytest.raises(SigningKeyError, match="RSAPrivateKey, not an ed25519 private key"):
        SigningKey.load_or_create(key_path)


def test_a_directory_at_the_key_path_is_refused(key_path: Path) -> None:
    key_path.mkdir(parents=True, mode=0o700)
    with pytest.raises(SigningKeyError, match="not a regular file"):
        SigningKey.load_or_create(key_path)


def test_concurrent_creation_keeps_the_first_key(key_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If another process creates the file between our check and our link, its key wins."""
    winner = Ed25519PrivateKey.generate()
    real_link = os.link

    def racing_link(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        write_key_file(Path(dst), pkcs8(winner))
        real_link(src, dst)

    monkeypatch.setattr(os, "link", racing_link)
    key = SigningKey.load_or_create(key_path)
    assert key.key_id == key_id(winner.public_key())
    assert sorted(p.name for p in key_path.parent.iterdir()) == ["signing.pem"]


def test_a_fifo_at_the_key_path_is_refused_without_blocking(key_path: Path) -> None:
    key_path.parent.mkdir(mode=0o700)
    os.mkfifo(key_path, 0o600)
    with pytest.raises(SigningKeyError, match="not a regular file"):
        SigningKey.load_or_create(key_path)
