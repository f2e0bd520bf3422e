"""FileBlobStore: content addressing, atomic commit, limits, cleanup and digest validation."""

from __future__ import annotations

import hashlib
import os
import stat
import time
import tracemalloc
from pathlib import Path

import pytest

from controlplane.artifacts import (
    BlobNotFound,
    BlobStore,
    BlobStoreError,
    BlobTooLarge,
    DigestMismatch,
    FileBlobStore,
)

DATA = b"edgefleet model bytes " * 1000
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs")


def _temp_files(store: FileBlobStore) -> list[Path]:
    return list(store.tmp_dir.iterdir())


def _put(store: FileBlobStore, data: bytes, chunk: int = 4096) -> str:
    with store.writer() as writer:
        for start in range(0, len(data), chunk):
            writer.write(data[start : start + chunk])
        return writer.commit()


def test_file_store_satisfies_the_protocol(store: FileBlobStore) -> None:
    assert isinstance(store, BlobStore)


def test_write_commit_and_read_back(store: FileBlobStore) -> None:
    with store.writer() as writer:
        writer.write(DATA[:100])
        assert writer.size == 100
        assert writer.sha256 == hashlib.sha256(DATA[:100]).hexdigest()
        writer.write(DATA[100:])
        digest = writer.commit(expected_sha256=DIGEST, expected_size=len(DATA))
    assert digest == DIGEST
    assert store.exists(DIGEST)
    assert store.size(DIGEST) == len(DATA)
    path = store.local_path(DIGEST)
    assert path == store.root / "sha256" / DIGEST[:2] / DIGEST
    with store.open(DIGEST) as blob:
        assert blob.read() == DATA
        blob.seek(len(DATA) - 5)
        assert blob.read() == DATA[-5:]
        assert not blob.writable()
    assert _temp_files(store) == []


def test_committed_blob_is_read_only(store: FileBlobStore) -> None:
    digest = _put(store, DATA)
    path = store.local_path(digest)
    assert path is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


def test_empty_blob(store: FileBlobStore) -> None:
    with store.writer() as writer:
        digest = writer.commit()
    assert digest == hashlib.sha256(b"").hexdigest()
    assert store.size(digest) == 0


def test_digest_mismatch_leaves_nothing_behind(store: FileBlobStore) -> None:
    wrong = "0" * 64
    with store.writer() as writer:
        writer.write(DATA)
        with pytest.raises(DigestMismatch) as info:
            writer.commit(expected_sha256=wrong)
        assert writer.closed
    assert wrong in str(info.value)
    assert DIGEST in str(info.value)
    assert (info.value.expected, info.value.actual) == (wrong, DIGEST)
    assert _temp_files(store) == []
    assert not store.exists(DIGEST)
    assert not store.exists(wrong)


def test_size_mismatch_leaves_nothing_behind(store: FileBlobStore) -> None:
    writer = store.writer()
    writer.write(DATA)
    with pytest.raises(DigestMismatch, match=rf"size mismatch: expected {len(DATA) + 1}, got {len(DATA)}"):
        writer.commit(expected_sha256=DIGEST, expected_size=len(DATA) + 1)
    assert _temp_files(store) == []
    assert not store.exists(DIGEST)


def test_malformed_expected_digest_aborts(store: FileBlobStore) -> None:
    with store.writer() as writer:
        writer.write(DATA)
        with pytest.raises(ValueError, match="not a sha256"):
            writer.commit(expected_sha256=DIGEST.upper())
    assert _temp_files(store) == []


def test_max_bytes_exceeded_removes_the_temp_file(store: FileBlobStore) -> None:
    with store.writer(max_bytes=10) as writer:
        writer.write(b"0123456789")  # exactly the limit is fine
        with pytest.raises(BlobTooLarge, match="limit of 10 bytes") as info:
            writer.write(b"x")
        assert info.value.limit == 10
        assert _temp_files(store) == []
        with pytest.raises(BlobStoreError, match="aborted"):
            writer.write(b"more")
        with pytest.raises(BlobStoreError, match="aborted"):
            writer.commit()


def test_exception_inside_with_aborts(store: FileBlobStore) -> None:
    writer = store.writer()

    def upload() -> None:
        with writer:
            writer.write(DATA[:1000])
            assert len(_temp_files(store)) == 1
            raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        upload()
    assert writer.closed
    assert _temp_files(store) == []
    assert list(store.blob_dir.iterdir()) == []


def test_leaving_with_without_commit_aborts(store: FileBlobStore) -> None:
    with store.writer() as writer:
        writer.write(DATA)
    assert _temp_files(store) == []
    assert not store.exists(DIGEST)
    writer.abort()  # idempotent


def test_identical_content_is_stored_once(store: FileBlobStore) -> None:
    first = _put(store, DATA)
    path = store.local_path(first)
    assert path is not None
    inode = path.stat().st_ino
    second = _put(store, DATA, chunk=777)
    assert first == second == DIGEST
    assert path.stat().st_ino == inode  # the existing blob was kept
    assert [p.name for p in (store.blob_dir / DIGEST[:2]).iterdir()] == [DIGEST]
    assert _temp_files(store) == []


def test_commit_twice_is_an_error(store: FileBlobStore) -> None:
    with store.writer() as writer:
        writer.write(DATA)
        writer.commit()
        with pytest.raises(BlobStoreError, match="committed"):
            writer.commit()
        writer.abort()  # no-op after commit
    assert store.exists(DIGEST)


@pytest.mark.parametrize(
    "bad",
    [
        "../../etc/passwd",
        "../" + "a" * 61,
        DIGEST.upper(),
        DIGEST[:63],
        DIGEST + "0",
        DIGEST[:62] + "/x",
        DIGEST + "\n",
        "",
        "g" * 64,
    ],
)
def test_malformed_digests_are_rejected(store: FileBlobStore, bad: str) -> None:
    with pytest.raises(ValueError, match="not a sha256"):
        store.exists(bad)
    with pytest.raises(ValueError, match="not a sha256"):
        store.size(bad)
    with pytest.raises(ValueError, match="not a sha256"):
        store.open(bad)
    with pytest.raises(ValueError, match="not a sha256"):
        store.local_path(bad)
    with pytest.raises(ValueError, match="not a sha256"):
        store.delete(bad)


def test_missing_blob(store: FileBlobStore) -> None:
    missing = "ab" * 32
    assert not store.exists(missing)
    for call in (store.size, store.open, store.local_path, store.delete):
        with pytest.raises(BlobNotFound, match=missing):
            call(missing)
    with pytest.raises(LookupError):
        store.size(missing)


def test_delete(store: FileBlobStore) -> None:
    digest = _put(store, DATA)
    store.delete(digest)
    assert not store.exists(digest)
    with pytest.raises(BlobNotFound):
        store.delete(digest)


def test_stale_temp_files_are_removed_on_init(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = FileBlobStore(root)
    stale = store.tmp_dir / "upload-crashed.part"
    stale.write_bytes(b"half an upload")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    fresh = store.tmp_dir / "upload-in-progress.part"
    fresh.write_bytes(b"still uploading")
    digest = _put(store, DATA)

    FileBlobStore(root)

    assert not stale.exists()
    assert fresh.exists()
    assert store.exists(digest)


def test_streaming_write_keeps_memory_flat(store: FileBlobStore) -> None:
    chunk = os.urandom(1024 * 1024)
    expected = hashlib.sha256()
    tracemalloc.start()
    try:
        with store.writer() as writer:
            for _ in range(64):
                writer.write(chunk)
                expected.update(chunk)
            digest = writer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == expected.hexdigest()
    assert store.size(digest) == 64 * len(chunk)
    assert peak < 5 * 1024 * 1024
