"""Content-addressed blob storage for model artifacts.

A blob is an immutable byte string named by the lowercase hex sha256 of its content. Uploads go
through a :class:`BlobWriter`: bytes are hashed as they are written, and :meth:`BlobWriter.commit`
either publishes the complete blob under its digest or leaves nothing behind (a size limit that is
exceeded, a digest or size that does not match the declared one, an exception inside the ``with``
block, a client that disconnects halfway: the partial upload is discarded).

:class:`BlobStore` is the interface the API layer programs against; :class:`FileBlobStore` keeps
blobs on the local filesystem::

    root/sha256/<first 2 hex>/<64 hex>    committed blobs, read-only (0o444)
    root/tmp/                              uploads in progress (same filesystem, so renames are atomic)

Every digest argument is validated (64 lowercase hex characters, else ``ValueError``) before it
is turned into a path, so no caller-supplied string can reach the filesystem.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self, runtime_checkable

from agent.fsutil import fsync_dir

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "BlobTooLarge",
    "BlobWriter",
    "DigestMismatch",
    "FileBlobStore",
    "validate_sha256",
]

_SHA256 = re.compile(r"[0-9a-f]{64}")
STALE_TEMP_SECONDS = 3600.0


class BlobStoreError(Exception):
    """Base class of the errors the blob store raises."""


class BlobTooLarge(BlobStoreError):
    """More than ``limit`` bytes were written to a writer created with ``max_bytes=limit``."""

    def __init__(self, limit: int, size: int) -> None:
        super().__init__(f"blob exceeds the limit of {limit} bytes ({size} bytes written)")
        self.limit = limit
        self.size = size


class DigestMismatch(BlobStoreError):
    """The uploaded content does not match the declared sha256 (``what="sha256"``) or size."""

    def __init__(self, what: str, expected: str | int, actual: str | int) -> None:
        super().__init__(f"{what} mismatch: expected {expected}, got {actual}")
        self.what = what
        self.expected = expected
        self.actual = actual


class BlobNotFound(BlobStoreError, LookupError):
    """No blob with this digest is stored."""

    def __init__(self, sha256: str) -> None:
        super().__init__(f"no blob with sha256 {sha256}")
        self.sha256 = sha256


def validate_sha256(sha256: object) -> str:
    """Return ``sha256`` if it is 64 lowercase hex characters, else raise ``ValueError``."""
    if not isinstance(sha256, str) or _SHA256.fullmatch(sha256) is None:
        raise ValueError(f"not a sha256 digest (64 lowercase hex characters): {sha256!r}")
    return sha256


class BlobWriter(ABC):
    """One upload in progress: ``write`` chunks, then ``commit`` once, or ``abort``.

    Use it as a context manager: leaving the block without a successful ``commit`` (an
    exception included) aborts, which discards everything written. After ``commit`` or
    ``abort`` the writer is closed and ``write``/``commit`` raise :class:`BlobStoreError`;
    ``abort`` is idempotent and a no-op after a commit. Any failure inside ``write`` or
    ``commit`` aborts the writer before the error propagates.

    Implementations provide ``_write_raw`` (store a chunk), ``_publish`` (make the complete
    content available under its digest; keep an existing blob with that digest) and
    ``_discard`` (drop the partial content; must be idempotent and not raise on cleanup).
    """

    def __init__(self, *, max_bytes: int | None = None) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self._size = 0
        self._state = "open"

    @property
    def sha256(self) -> str:
        """Hex sha256 of the bytes written so far."""
        return self._hash.hexdigest()

    @property
    def size(self) -> int:
        """Number of bytes written so far."""
        return self._size

    @property
    def closed(self) -> bool:
        """True once committed or aborted."""
        return self._state != "open"

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; raises :class:`BlobTooLarge` (and aborts) past ``max_bytes``."""
        self._check_open()
        size = self._size + len(chunk)
        if self._max_bytes is not None and size > self._max_bytes:
            self.abort()
            raise BlobTooLarge(self._max_bytes, size)
        try:
            self._write_raw(chunk)
        except BaseException:
            self.abort()
            raise
        self._hash.update(chunk)
        self._size = size

    def commit(self, expected_sha256: str | None = None, expected_size: int | None = None) -> str:
        """Publish the blob and return its sha256.

        Raises :class:`DigestMismatch` (and aborts) when the content's digest or size differs
        from the expected one, ``ValueError`` (and aborts) for a malformed ``expected_sha256``.
        If the store already holds a blob with this digest, it is kept and the upload dropped.
        """
        self._check_open()
        try:
            if expected_sha256 is not None:
                validate_sha256(expected_sha256)
            if expected_size is not None and expected_size != self._size:
                raise DigestMismatch("size", expected_size, self._size)
            digest = self.sha256
            if expected_sha256 is not None and expected_sha256 != digest:
                raise DigestMismatch("sha256", expected_sha256, digest)
            self._publish(digest)
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        return digest

    def abort(self) -> None:
        """Discard the upload. Idempotent; does nothing after a successful commit."""
        if self._state == "open":
            self._state = "aborted"
            self._discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()

    def _check_open(self) -> None:
        if self._state != "open":
            raise BlobStoreError(f"blob writer is already {self._state}")

    @abstractmethod
    def _write_raw(self, chunk: bytes) -> None: ...

    @abstractmethod
    def _publish(self, sha256: str) -> None: ...

    @abstractmethod
    def _discard(self) -> None: ...


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed storage. Every ``sha256`` argument must be 64 lowercase hex (``ValueError``).

    ``size``, ``open``, ``local_path`` and ``delete`` raise :class:`BlobNotFound` for a digest
    that is not stored. ``open`` returns a seekable, read-only binary file the caller closes.
    ``local_path`` is the path of the blob on the local filesystem (to serve it with HTTP
    Range support), or ``None`` for stores that keep blobs elsewhere.
    """

    def writer(self, *, max_bytes: int | None = None) -> BlobWriter: ...

    def exists(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int: ...

    def open(self, sha256: str) -> BinaryIO: ...

    def local_path(self, sha256: str) -> Path | None: ...

    def delete(self, sha256: str) -> None: ...


class _FileBlobWriter(BlobWriter):
    """Writes into a temp file under ``root/tmp``; commit fsyncs it and renames it into place."""

    def __init__(self, store: FileBlobStore, *, max_bytes: int | None) -> None:
        super().__init__(max_bytes=max_bytes)
        self._store = store
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-", suffix=".part")
        self._tmp = Path(name)
        self._file = os.fdopen(fd, "wb")

    def _write_raw(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def _publish(self, sha256: str) -> None:
        self._file.flush()
        os.fchmod(self._file.fileno(), 0o444)
        os.fsync(self._file.fileno())
        self._file.close()
        target = self._store.blob_path(sha256)
        if target.is_file():  # dedupe: the same content is already stored
            self._tmp.unlink(missing_ok=True)
            return
        shard = target.parent
        if not shard.is_dir():
            shard.mkdir(parents=True, exist_ok=True)
            fsync_dir(shard.parent)
        os.replace(self._tmp, target)
        fsync_dir(shard)

    def _discard(self) -> None:
        try:
            self._file.close()
        finally:
            self._tmp.unlink(missing_ok=True)


class FileBlobStore:
    """A :class:`BlobStore` in a local directory (see the module docstring for the layout).

    Creating the store creates ``root``, ``root/sha256`` and ``root/tmp``, and removes temp
    files not modified for ``stale_after`` seconds (uploads left behind by a crash; an upload
    still in progress keeps touching its file). Blobs become visible atomically: a reader sees
    the complete blob or none.
    """

    def __init__(self, root: Path, *, stale_after: float = STALE_TEMP_SECONDS) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.remove_stale_temp_files(stale_after)

    def remove_stale_temp_files(self, older_than: float = STALE_TEMP_SECONDS) -> int:
        """Delete temp files not modified for ``older_than`` seconds; return how many."""
        cutoff = time.time() - older_than
        removed = 0
        for entry in self.tmp_dir.iterdir():
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:  # another process removed it first
                continue
        return removed

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this digest lives (whether or not it exists)."""
        validate_sha256(sha256)
        return self.blob_dir / sha256[:2] / sha256

    def writer(self, *, max_bytes: int | None = None) -> BlobWriter:
        return _FileBlobWriter(self, max_bytes=max_bytes)

    def exists(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.blob_path(sha256).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def open(self, sha256: str) -> BinaryIO:
        try:
            return self.blob_path(sha256).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def local_path(self, sha256: str) -> Path | None:
        path = self.blob_path(sha256)
        if not path.is_file():
            raise BlobNotFound(sha256)
        return path

    def delete(self, sha256: str) -> None:
        try:
            self.blob_path(sha256).unlink()
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
