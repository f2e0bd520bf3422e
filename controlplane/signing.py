"""The control plane's ed25519 release-signing key and the manifests it signs.

The private key lives in one PKCS8 PEM file, unencrypted, mode 0600. :meth:`SigningKey.load_or_create`
creates it on first start and refuses to use a file that group or others may read or write, or that
holds anything but an ed25519 private key. Devices are enrolled with :meth:`SigningKey.public_key_pem`
and check every manifest with :func:`agent.manifest.verify_manifest`.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.fsutil import fsync_dir
from agent.manifest import (
    ArtifactKind,
    Manifest,
    SignedManifest,
    canonical_bytes,
    key_id,
)

__all__ = ["SigningKey", "SigningKeyError", "make_manifest"]

_MAX_KEY_FILE = 64 * 1024


class SigningKeyError(Exception):
    """The signing key file cannot be used; the message names the file and the reason."""


class SigningKey:
    """An ed25519 private key that signs release manifests."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self._public_key = private_key.public_key()
        self._key_id = key_id(self._public_key)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self._key_id!r})"

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key held in memory only."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """Load the key at ``path``, or create it there (mode 0600, parent mode 0700) if missing.

        Creation is atomic and durable: the PEM is written to a temporary file opened with mode
        0600 from the start, fsync'ed, then linked into place, so ``path`` never exists partially
        written or with looser permissions. If another process creates ``path`` first, its key is
        loaded and used instead, so concurrent starts agree on one key.

        Raises :class:`SigningKeyError` if the file is not a regular file, is readable or writable
        by group or others, or is not an unencrypted PEM ed25519 private key.
        """
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o600)  # exactly 0600, whatever the umask
                out.write(pem)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, path)  # unlike rename, never replaces a key another process wrote
            except FileExistsError:
                return cls._load(path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
        return cls(key)

    @classmethod
    def _load(cls, path: Path) -> SigningKey:
        """Read and check an existing key file; FileNotFoundError if there is none."""
        # O_NONBLOCK: a FIFO at ``path`` is refused below instead of blocking the open.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SigningKeyError(f"signing key {path} is not a regular file")
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise SigningKeyError(
                    f"signing key {path} has mode {mode:04o}: group or others may access it; "
                    f"refusing to use it (run: chmod 600 {path})"
                )
            with os.fdopen(fd, "rb", closefd=False) as stream:
                pem = stream.read(_MAX_KEY_FILE + 1)
        finally:
            os.close(fd)
        if len(pem) > _MAX_KEY_FILE:
            raise SigningKeyError(f"signing key {path} is larger than {_MAX_KEY_FILE} bytes: not a key")
        try:
            private_key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise SigningKeyError(
                f"signing key {path} is not an unencrypted PEM private key: {exc}"
            ) from None
        if not isinstance(private_key, Ed25519PrivateKey):
            raise SigningKeyError(
                f"signing key {path} holds a {type(private_key).__name__}, not an ed25519 private key"
            )
        return cls(private_key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public_key

    def public_key_pem(self) -> str:
        """The public key as SubjectPublicKeyInfo PEM: what devices are enrolled with."""
        return self._public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @property
    def key_id(self) -> str:
        """:func:`agent.manifest.key_id` of this key's public half."""
        return self._key_id

    def sign(self, manifest: Manifest) -> SignedManifest:
        """Sign :func:`agent.manifest.canonical_bytes` of ``manifest``."""
        signature = self._private_key.sign(canonical_bytes(manifest))
        return SignedManifest(
            manifest=manifest,
            signature=base64.b64encode(signature).decode("ascii"),
            key_id=self._key_id,
        )


def make_manifest(
    kind: ArtifactKind,
    name: str,
    version: int,
    sha256: str,
    size: int,
    *,
    lifetime: timedelta = timedelta(days=365),
    now: datetime | None = None,
) -> Manifest:
    """A manifest created at ``now`` (default: the current second, UTC) expiring ``lifetime`` later.

    Raises :class:`agent.manifest.MalformedManifest` for invalid fields (a bad name, a non-positive
    ``lifetime``, a naive ``now``...).
    """
    created = datetime.now(UTC).replace(microsecond=0) if now is None else now
    return Manifest.parse(
        {
            "kind": kind,
            "name": name,
            "version": version,
            "sha256": sha256,
            "size": size,
            "created": created,
            "expires": created + lifetime,
        }
    )
