"""Release manifests on the device side: parsing, signature, validity window, rollback, digest."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.manifest import (
    CLOCK_SKEW,
    MAX_MANIFEST_BYTES,
    BadKey,
    BadSignature,
    DigestMismatch,
    DowngradeRefused,
    ExpiredManifest,
    MalformedManifest,
    Manifest,
    ManifestError,
    NotYetValid,
    SignedManifest,
    canonical_bytes,
    key_id,
    load_public_key,
    verify_artifact,
    verify_digest,
    verify_manifest,
)

CREATED = datetime(2026, 1, 1, tzinfo=UTC)
EXPIRES = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
CONTENT = b"model weights " * 1000
DIGEST = hashlib.sha256(CONTENT).hexdigest()


def make(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "kind": "model",
        "name": "detector",
        "version": 3,
        "sha256": DIGEST,
        "size": len(CONTENT),
        "created": CREATED,
        "expires": EXPIRES,
    }
    fields.update(changes)
    return Manifest(**fields)


def sign(manifest: Manifest, private_key: Ed25519PrivateKey) -> SignedManifest:
    """Sign as the control plane does, independently of its code."""
    signature = private_key.sign(canonical_bytes(manifest))
    return SignedManifest(
        manifest=manifest,
        signature=base64.b64encode(signature).decode("ascii"),
        key_id=key_id(private_key.public_key()),
    )


@pytest.fixture
def private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signed(private_key: Ed25519PrivateKey) -> SignedManifest:
    return sign(make(), private_key)


def wire(signed: SignedManifest) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(signed.to_json())
    return data


# --- canonical form --------------------------------------------------------------------------------


def test_canonical_bytes_are_sorted_compact_json_with_utc_z_times() -> None:
    assert canonical_bytes(make()) == (
        b'{"created":"2026-01-01T00:00:00Z","expires":"2026-11-25T18:00:00Z","kind":"model",'
        b'"name":"detector","sha256":"' + DIGEST.encode() + b'","size":14000,"version":3}'
    )


def test_canonical_bytes_normalise_offsets_and_keep_non_zero_microseconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    shifted = make(created=datetime(2026, 1, 1, 2, 0, tzinfo=plus_two), expires="2026-11-25T20:00:00+02:00")
    assert canonical_bytes(shifted) == canonical_bytes(make())
    assert shifted.created.tzinfo is UTC
    precise = make(created=datetime(2026, 1, 1, 0, 0, 0, 1500, tzinfo=UTC))
    assert b'"created":"2026-01-01T00:00:00.001500Z"' in canonical_bytes(precise)


def test_manifest_is_frozen() -> None:
    manifest = make()
    with pytest.raises(ValueError, match="frozen"):
        manifest.version = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"created": datetime(2026, 1, 1)}, "created"),
        ({"expires": "2026-11-25T18:00:00"}, "expires"),
        ({"expires": 1_800_000_000}, "expires"),
        ({"created": "1767225600"}, "created"),
        ({"expires": CREATED}, "expires"),
        ({"name": "../etc/passwd"}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"name": ""}, "name"),
        ({"version": 0}, "version"),
        ({"version": "3"}, "version"),
        ({"version": True}, "version"),
        ({"size": -1}, "size"),
        ({"sha256": DIGEST.upper()}, "sha256"),
        ({"sha256": DIGEST[:-1]}, "sha256"),
        ({"kind": "firmware"}, "kind"),
    ],
)
def test_invalid_manifest_fields_are_refused(changes: dict[str, Any], field: str) -> None:
    fields = make().model_dump()
    fields.update(changes)
    with pytest.raises(MalformedManifest, match=field):
        Manifest.parse(fields)


# --- keys --------------------------------------------------------------------------------------------


def test_key_id_is_a_sha256_prefix_of_the_raw_public_key(private_key: Ed25519PrivateKey) -> None:
    public = private_key.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(public) == hashlib.sha256(raw).hexdigest()[:16]
    assert key_id(Ed25519PrivateKey.generate().public_key()) != key_id(public)


def test_load_public_key_reads_pem_text_and_bytes(private_key: Ed25519PrivateKey) -> None:
    pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    expected = key_id(private_key.public_key())
    assert key_id(load_public_key(pem)) == expected
    assert key_id(load_public_key(pem.decode())) == expected


def test_load_public_key_refuses_garbage_other_algorithms_and_private_keys(
    private_key: Ed25519PrivateKey,
) -> None:
    with pytest.raises(BadKey, match="not a PEM public key"):
        load_public_key("hello")
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(BadKey, match="expected an ed25519 public key"):
        load_public_key(ec_pem)
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(BadKey, match="private key"):
        load_public_key(private_pem)
    assert issubclass(BadKey, ManifestError)


# --- wire form ---------------------------------------------------------------------------------------


def test_to_json_parse_round_trip(signed: SignedManifest) -> None:
    assert SignedManifest.parse(signed.to_json()) == signed
    assert SignedManifest.parse(signed.to_json().decode()) == signed
    assert SignedManifest.parse(wire(signed)) == signed
    assert wire(signed)["manifest"]["expires"] == "2026-11-25T18:00:00Z"


def _without(data: dict[str, Any], *path: str) -> dict[str, Any]:
    target = data
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return data


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: _without(d, "signature"), r"signature: Field required"),
        (lambda d: _without(d, "manifest", "sha256"), r"manifest\.sha256: Field required"),
        (lambda d: {**d, "manifest": {**d["manifest"], "version": "4"}}, r"manifest\.version"),
        (lambda d: {**d, "manifest": {**d["manifest"], "size": 1.5}}, r"manifest\.size"),
        (lambda d: {**d, "manifest": {**d["manifest"], "extra": 1}}, r"manifest\.extra"),
        (lambda d: {**d, "manifest": "model"}, r"manifest:"),
        (lambda d: {**d, "key_id": 7}, r"key_id"),
        (lambda d: {**d, "signature": "not base64!"}, r"signature: .*base64"),
        (lambda d: {**d, "signature": base64.b64encode(b"short").decode()}, r"signature: .*64 bytes"),
    ],
)
def test_malformed_envelopes_name_the_field(
    signed: SignedManifest, mutate: Any, expected: str, private_key: Ed25519PrivateKey
) -> None:
    data = mutate(wire(signed))
    with pytest.raises(MalformedManifest, match=expected):
        SignedManifest.parse(json.dumps(data))
    with pytest.raises(MalformedManifest, match=expected):
        verify_manifest(data, private_key.public_key(), now=NOW)


def test_malformed_message_names_the_manifest_where_known(signed: SignedManifest) -> None:
    data = wire(signed)
    data["manifest"]["size"] = "big"
    with pytest.raises(MalformedManifest, match=r"\(model 'detector' version 3\): manifest\.size"):
        SignedManifest.parse(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ("null", "expected a JSON object, got NoneType"),
        ("[" * 50_000, "not JSON"),
        (b" " * (MAX_MANIFEST_BYTES + 1), "more than"),
    ],
)
def test_garbage_is_malformed(data: bytes | str, expected: str) -> None:
    with pytest.raises(MalformedManifest, match=expected):
        SignedManifest.parse(data)


# --- signature ---------------------------------------------------------------------------------------


def test_sign_verify_round_trip(signed: SignedManifest, private_key: Ed25519PrivateKey) -> None:
    public = private_key.public_key()
    assert verify_manifest(signed, public, now=NOW) == make()
    assert verify_manifest(signed.to_json(), public, now=NOW) == make()
    assert verify_manifest(signed.to_json().decode(), public, now=NOW) == make()
    assert verify_manifest(wire(signed), public, now=NOW) == make()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sha256", "0" * 64),
        ("version", 4),
        ("name", "detector2"),
        ("expires", "2027-11-25T18:00:00Z"),
        ("size", 1),
        ("kind", "workflow"),
        ("created", "2025-12-31T00:00:00Z"),
    ],
)
def test_tampered_field_fails_the_signature(
    signed: SignedManifest, private_key: Ed25519PrivateKey, field: str, value: object
) -> None:
    data = wire(signed)
    data["manifest"][field] = value
    with pytest.raises(BadSignature, match="does not verify"):
        verify_manifest(json.dumps(data), private_key.public_key(), now=NOW)


def test_tampered_signature_bytes_fail(signed: SignedManifest, private_key: Ed25519PrivateKey) -> None:
    raw = bytearray(signed.signature_bytes)
    raw[10] ^= 0x01
    data = wire(signed)
    data["signature"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(BadSignature, match=r"model 'detector' version 3: signature does not verify"):
        verify_manifest(data, private_key.public_key(), now=NOW)


def test_resigned_by_another_key_names_both_key_ids(private_key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    forged = sign(make(), other)
    expected, found = key_id(private_key.public_key()), key_id(other.public_key())
    with pytest.raises(BadSignature, match=f"signed by key {found}, expected key {expected}"):
        verify_manifest(forged, private_key.public_key(), now=NOW)


def test_forged_key_id_with_another_keys_signature_fails(private_key: Ed25519PrivateKey) -> None:
    data = wire(sign(make(), Ed25519PrivateKey.generate()))
    data["key_id"] = key_id(private_key.public_key())
    with pytest.raises(BadSignature, match="does not verify"):
        verify_manifest(data, private_key.public_key(), now=NOW)


# --- validity window and rollback ----------------------------------------------------------------------


def test_expired_manifest_names_expiry_and_now(
    signed: SignedManifest, private_key: Ed25519PrivateKey
) -> None:
    later = EXPIRES + timedelta(days=1)
    with pytest.raises(
        ExpiredManifest,
        match=r"model 'detector' version 3: expired at 2026-11-25T18:00:00Z \(now 2026-11-26T18:00:00Z\)",
    ):
        verify_manifest(signed, private_key.public_key(), now=later)
    with pytest.raises(ExpiredManifest):
        verify_manifest(signed, private_key.public_key(), now=EXPIRES)
    verify_manifest(signed, private_key.public_key(), now=EXPIRES - timedelta(seconds=1))


def test_not_yet_valid_beyond_the_clock_skew(signed: SignedManifest, private_key: Ed25519PrivateKey) -> None:
    public = private_key.public_key()
    with pytest.raises(NotYetValid, match="model 'detector' version 3: created 2026-01-01T00:00:00Z"):
        verify_manifest(signed, public, now=CREATED - CLOCK_SKEW - timedelta(seconds=1))
    assert verify_manifest(signed, public, now=CREATED - CLOCK_SKEW) == make()


def test_now_must_be_timezone_aware(signed: SignedManifest, private_key: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_manifest(signed, private_key.public_key(), now=datetime(2026, 6, 1))


def test_default_now_is_the_current_time(private_key: Ed25519PrivateKey) -> None:
    now = datetime.now(UTC)
    fresh = sign(make(created=now - timedelta(minutes=1), expires=now + timedelta(hours=1)), private_key)
    assert verify_manifest(fresh, private_key.public_key()).version == 3
    with pytest.raises(ExpiredManifest):
        verify_manifest(sign(make(), private_key), private_key.public_key())


def test_downgrade_refused_same_and_newer_versions_accepted(
    signed: SignedManifest, private_key: Ed25519PrivateKey
) -> None:
    public = private_key.public_key()
    with pytest.raises(
        DowngradeRefused, match=r"model 'detector' version 3: .*installed version 4, offered version 3"
    ):
        verify_manifest(signed, public, now=NOW, installed_version=4)
    assert verify_manifest(signed, public, now=NOW, installed_version=3).version == 3
    assert verify_manifest(signed, public, now=NOW, installed_version=2).version == 3
    assert verify_manifest(signed, public, now=NOW, installed_version=None).version == 3


def test_signature_is_checked_before_expiry_and_version(private_key: Ed25519PrivateKey) -> None:
    forged = sign(make(), Ed25519PrivateKey.generate())
    with pytest.raises(BadSignature):
        verify_manifest(
            forged, private_key.public_key(), now=EXPIRES + timedelta(days=1), installed_version=9
        )


# --- artifact digest -------------------------------------------------------------------------------------


def test_verify_artifact_accepts_the_matching_file(tmp_path: Path) -> None:
    path = tmp_path / "detector.onnx"
    path.write_bytes(CONTENT)
    verify_artifact(make(), path)


def test_verify_artifact_streams_files_larger_than_a_chunk(tmp_path: Path) -> None:
    content = bytes(range(256)) * 10_000  # 2.4 MiB: three chunks
    path = tmp_path / "big.onnx"
    path.write_bytes(content)
    verify_artifact(make(sha256=hashlib.sha256(content).hexdigest(), size=len(content)), path)


def test_verify_artifact_refuses_a_modified_file(tmp_path: Path) -> None:
    path = tmp_path / "detector.onnx"
    path.write_bytes(CONTENT[:-1] + b"X")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(
        DigestMismatch,
        match=f"model 'detector' version 3: .*expected sha256 {DIGEST} size 14000, "
        f"got sha256 {actual} size 14000",
    ):
        verify_artifact(make(), path)


def test_verify_artifact_refuses_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "detector.onnx"
    path.write_bytes(CONTENT[:100])
    with pytest.raises(DigestMismatch, match=r"size 14000, got sha256 [0-9a-f]{64} size 100"):
        verify_artifact(make(), path)


def test_verify_artifact_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        verify_artifact(make(), tmp_path / "absent.onnx")


def test_verify_digest() -> None:
    verify_digest(make(), DIGEST, len(CONTENT))
    verify_digest(make(), DIGEST.upper(), len(CONTENT))
    with pytest.raises(DigestMismatch):
        verify_digest(make(), DIGEST, len(CONTENT) + 1)
    with pytest.raises(DigestMismatch):
        verify_digest(make(), "0" * 64, len(CONTENT))


# --- module contract ---------------------------------------------------------------------------------


def test_module_imports_no_control_plane_or_heavy_library() -> None:
    code = (
        "import sys, agent.manifest\n"
        "bad = {'controlplane', 'numpy', 'cv2', 'onnxruntime'} & {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
