"""Signed release manifests: what a device checks before it accepts an artifact.

Every artifact a device may fetch (a model file, a workflow graph, a threshold set) is described by
a :class:`Manifest` (kind, name, version, sha256, size, created, expires), signed by the control
plane's ed25519 key and shipped as a :class:`SignedManifest` (manifest, base64 signature, key id).

What is signed
    :func:`canonical_bytes` of the manifest, nothing else: JSON of every manifest field with sorted
    keys, ``separators=(",", ":")``, ASCII only, datetimes in UTC as ISO-8601 ending in ``Z``
    (``2026-11-25T18:00:00Z``; ``.ffffff`` microseconds only when non-zero). The envelope's
    ``key_id`` is not signed: it only names the key, and must equal the verifier's key.

What :func:`verify_manifest` checks, in this order (the first failure raises):
    1. the envelope is well formed (:class:`MalformedManifest`);
    2. ``key_id`` is the id of the enrolled key, then the signature verifies with that key
       (:class:`BadSignature`; any change to a signed field makes it fail);
    3. ``now < expires`` (:class:`ExpiredManifest`) and ``created <= now + CLOCK_SKEW``
       (:class:`NotYetValid`);
    4. ``version >= installed_version`` (:class:`DowngradeRefused`); the same version is accepted,
       so re-applying a release is idempotent.
Then :func:`verify_artifact` (or :func:`verify_digest`) checks the fetched bytes against the
verified manifest's sha256 and size (:class:`DigestMismatch`). Only after both may a device use the
artifact.

Every error is a :class:`ManifestError` whose message names the manifest's kind, name and version
where they are known. This module imports only the standard library, pydantic and cryptography:
the control plane imports it too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

__all__ = [
    "CLOCK_SKEW",
    "MAX_MANIFEST_BYTES",
    "ArtifactKind",
    "BadKey",
    "BadSignature",
    "DigestMismatch",
    "DowngradeRefused",
    "ExpiredManifest",
    "MalformedManifest",
    "Manifest",
    "ManifestError",
    "NotYetValid",
    "SignedManifest",
    "canonical_bytes",
    "key_id",
    "load_public_key",
    "verify_artifact",
    "verify_digest",
    "verify_manifest",
]

CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future ``created`` may lie before a manifest is refused as not yet valid."""

MAX_MANIFEST_BYTES = 64 * 1024
"""A serialized signed manifest is a few hundred bytes; anything past this is refused unparsed."""

_CHUNK = 1024 * 1024
_KINDS = ("model", "workflow", "thresholds", "bundle")

ArtifactKind = Literal["model", "workflow", "thresholds", "bundle"]
"""What a manifest describes; a ``bundle`` is a rollout's set of artifacts (docs/rollouts.md)."""


class ManifestError(Exception):
    """A manifest or its artifact was refused; the message says which and why."""


class MalformedManifest(ManifestError):
    """Not a well-formed signed manifest (bad JSON, wrong types, missing or extra fields)."""


class BadKey(ManifestError):
    """Not a usable ed25519 public key."""


class BadSignature(ManifestError):
    """The signature does not verify, or the manifest was signed by another key."""


class ExpiredManifest(ManifestError):
    """The manifest's ``expires`` has passed."""


class NotYetValid(ManifestError):
    """The manifest's ``created`` lies more than :data:`CLOCK_SKEW` in the future."""


class DowngradeRefused(ManifestError):
    """The offered version is older than the installed one (a rollback)."""


class DigestMismatch(ManifestError):
    """The artifact's sha256 or size differs from the manifest's."""


def _timestamp_input(value: object) -> object:
    """Accept a datetime or an ISO-8601 string only (no unix numbers, no numeric strings)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be an ISO-8601 datetime such as 2026-11-25T18:00:00Z") from None
    raise ValueError("must be an ISO-8601 datetime string")


def _aware_utc(value: datetime) -> datetime:
    """Refuse naive datetimes; store aware ones in UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be timezone-aware (end in 'Z' or '+00:00')")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


Timestamp = Annotated[datetime, BeforeValidator(_timestamp_input), AfterValidator(_aware_utc)]


def _format_time(value: datetime) -> str:
    """UTC ISO-8601 with ``Z``; microseconds only when non-zero."""
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds") + "Z"


def _describe(kind: object, name: object, version: object) -> str:
    """``model 'detector' version 3``, leaving out what is unknown or of the wrong type."""
    parts: list[str] = []
    if isinstance(kind, str) and kind in _KINDS:
        parts.append(kind)
    if isinstance(name, str):
        parts.append(repr(name[:128]))
    if isinstance(version, int) and not isinstance(version, bool):
        parts.append(f"version {version}")
    return " ".join(parts) if parts else "manifest"


def _problems(exc: ValidationError) -> str:
    """``manifest.version: Input should be ...; signature: Field required``: one entry per error."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '<root>'}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )


class Manifest(BaseModel):
    """The signed description of one artifact. Immutable; datetimes are stored in UTC."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ArtifactKind
    name: str = Field(strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: int = Field(strict=True, ge=1)
    sha256: str = Field(strict=True, pattern=r"^[0-9a-f]{64}$")
    size: int = Field(strict=True, ge=0)
    created: Timestamp
    expires: Timestamp

    @model_validator(mode="after")
    def _expires_after_created(self) -> Manifest:
        if self.expires <= self.created:
            raise ValueError(
                f"expires ({_format_time(self.expires)}) must be after created ({_format_time(self.created)})"
            )
        return self

    @property
    def label(self) -> str:
        """``model 'detector' version 3``: how error messages name this manifest."""
        return _describe(self.kind, self.name, self.version)

    @classmethod
    def parse(cls, fields: Mapping[str, Any]) -> Manifest:
        """Validate ``fields``; :class:`MalformedManifest` naming each bad field if they are invalid."""
        try:
            return cls.model_validate(dict(fields))
        except ValidationError as exc:
            label = _describe(fields.get("kind"), fields.get("name"), fields.get("version"))
            raise MalformedManifest(f"invalid manifest ({label}): {_problems(exc)}") from None


def canonical_bytes(manifest: Manifest) -> bytes:
    """The exact bytes that are signed: sorted-key compact ASCII JSON, datetimes as ``...Z``."""
    fields = {
        key: _format_time(value) if isinstance(value, datetime) else value
        for key, value in manifest.model_dump().items()
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _check_signature_encoding(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be standard base64") from None
    if len(raw) != 64:
        raise ValueError(f"must encode 64 bytes (an ed25519 signature), got {len(raw)}")
    return value


class SignedManifest(BaseModel):
    """A manifest, its ed25519 signature (standard base64) and the id of the signing key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    manifest: Manifest
    signature: Annotated[str, AfterValidator(_check_signature_encoding)] = Field(strict=True)
    key_id: str = Field(strict=True, pattern=r"^[0-9a-f]{16}$")

    @property
    def signature_bytes(self) -> bytes:
        return base64.b64decode(self.signature, validate=True)

    def to_json(self) -> bytes:
        """The wire form; :meth:`parse` reads it back to an equal object."""
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def parse(cls, data: bytes | str | Mapping[str, Any]) -> SignedManifest:
        """Read a signed manifest from JSON text or a mapping; :class:`MalformedManifest` if it isn't one.

        The message lists each problem by field path (``manifest.version: ...``).
        """
        raw: object
        if isinstance(data, bytes | str):
            if len(data) > MAX_MANIFEST_BYTES:
                raise MalformedManifest(
                    f"malformed signed manifest: {len(data)} bytes, more than {MAX_MANIFEST_BYTES}"
                )
            try:
                raw = json.loads(data)
            except (ValueError, RecursionError) as exc:
                raise MalformedManifest(f"malformed signed manifest: not JSON: {exc}") from None
        else:
            raw = data
        if not isinstance(raw, Mapping):
            raise MalformedManifest(
                f"malformed signed manifest: expected a JSON object, got {type(raw).__name__}"
            )
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as exc:
            inner = raw.get("manifest")
            label = (
                _describe(inner.get("kind"), inner.get("name"), inner.get("version"))
                if isinstance(inner, Mapping)
                else "manifest"
            )
            raise MalformedManifest(f"malformed signed manifest ({label}): {_problems(exc)}") from None


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex characters of the sha256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(data: bytes | str) -> Ed25519PublicKey:
    """Load an ed25519 public key from PEM (SubjectPublicKeyInfo); :class:`BadKey` otherwise."""
    pem = data.encode("utf-8", errors="replace") if isinstance(data, str) else data
    if b"PRIVATE KEY" in pem:
        raise BadKey("expected an ed25519 public key in PEM, got a private key; give the public key")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise BadKey(f"not a PEM public key (-----BEGIN PUBLIC KEY-----): {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadKey(f"expected an ed25519 public key, got {type(key).__name__}")
    return key


def verify_manifest(
    signed: SignedManifest | bytes | str | Mapping[str, Any],
    public_key: Ed25519PublicKey,
    *,
    now: datetime | None = None,
    installed_version: int | None = None,
) -> Manifest:
    """Return the manifest if it is authentic, current and not a downgrade; raise otherwise.

    ``now`` defaults to the current time and must be timezone-aware. ``installed_version`` is the
    version the device already runs for this manifest's name (``None``: nothing installed).
    The checks and their order are those in the module docstring.
    """
    if not isinstance(signed, SignedManifest):
        signed = SignedManifest.parse(signed)
    manifest = signed.manifest
    label = manifest.label

    expected = key_id(public_key)
    if signed.key_id != expected:
        raise BadSignature(f"{label}: signed by key {signed.key_id}, expected key {expected}")
    try:
        public_key.verify(signed.signature_bytes, canonical_bytes(manifest))
    except InvalidSignature:
        raise BadSignature(
            f"{label}: signature does not verify with key {expected} (the manifest or its signature "
            "was altered, or it was signed by another key)"
        ) from None

    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if now >= manifest.expires:
        raise ExpiredManifest(
            f"{label}: expired at {_format_time(manifest.expires)} (now {_format_time(now)})"
        )
    if manifest.created > now + CLOCK_SKEW:
        raise NotYetValid(
            f"{label}: created {_format_time(manifest.created)}, in the future (now {_format_time(now)}, "
            f"allowed clock skew {CLOCK_SKEW})"
        )

    if installed_version is not None and manifest.version < installed_version:
        raise DowngradeRefused(
            f"{label}: refusing downgrade: installed version {installed_version}, "
            f"offered version {manifest.version}"
        )
    return manifest


def verify_digest(manifest: Manifest, sha256: str, size: int) -> None:
    """Raise :class:`DigestMismatch` unless ``sha256`` (hex) and ``size`` are the manifest's."""
    if sha256.lower() != manifest.sha256 or size != manifest.size:
        raise DigestMismatch(
            f"{manifest.label}: content does not match the manifest: "
            f"expected sha256 {manifest.sha256} size {manifest.size}, got sha256 {sha256.lower()} size {size}"
        )


def verify_artifact(manifest: Manifest, path: Path) -> None:
    """Hash ``path`` in 1 MiB chunks and check it with :func:`verify_digest`.

    OSError (missing or unreadable file) propagates unchanged.
    """
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    verify_digest(manifest, digest.hexdigest(), size)
