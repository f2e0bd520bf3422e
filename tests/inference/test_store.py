"""The device's model store: content addressing, metadata, immutability, atomic installs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from agent.inference.errors import ModelFormatError, ModelNotFound, ModelStoreError
from agent.inference.store import ModelStore
from tests.inference.onnx_models import affine


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def test_install_reads_metadata_and_addresses_by_content(store: ModelStore, tmp_path: Path) -> None:
    record = store.install(affine(tmp_path / "a.onnx"), "scaler", "1")
    assert record.path.name == f"{record.sha256}.onnx"
    assert [(s.name, s.dtype, s.shape) for s in record.inputs] == [("x", "float32", ("batch", 4))]
    assert [s.name for s in record.outputs] == ["y", "total"]
    assert record.inputs[0].batched
    assert record.opset == 17
    assert "edgefleet-tests" in record.producer
    assert store.verify(record)
    again = store.install(affine(tmp_path / "same.onnx"), "other_name", "7")
    assert again.path == record.path  # one blob for identical bytes


def test_versions_are_immutable_and_resolve_newest_in_natural_order(
    store: ModelStore, tmp_path: Path
) -> None:
    store.install(affine(tmp_path / "v9.onnx", scale=9), "m", "9")
    store.install(affine(tmp_path / "v10.onnx", scale=10), "m", "10")
    assert store.versions("m") == ["9", "10"]
    assert store.resolve("m").version == "10"
    assert store.install(tmp_path / "v9.onnx", "m", "9").version == "9"  # same bytes: no-op
    with pytest.raises(ModelStoreError, match="versions are immutable"):
        store.install(tmp_path / "v10.onnx", "m", "9")


def test_unknown_models_name_what_is_installed(store: ModelStore, tmp_path: Path) -> None:
    store.install(affine(tmp_path / "a.onnx"), "scaler", "1")
    with pytest.raises(ModelNotFound, match="model 'pricing_model_v3' is not in the model store"):
        store.resolve("pricing_model_v3")
    with pytest.raises(ModelNotFound, match=r"version '2'.*installed: 1"):
        store.resolve("scaler", "2")


def test_a_file_that_is_not_onnx_is_refused_and_leaves_nothing(store: ModelStore) -> None:
    with pytest.raises(ModelFormatError, match="not a valid ONNX model"):
        store.install(io.BytesIO(b"\x89PNG\r\n\x1a\n not a model"), "bad", "1")
    assert store.model_ids() == []
    assert list((store.root / "tmp").iterdir()) == []
    assert list((store.root / "blobs" / "sha256").iterdir()) == []


def test_bad_names_are_refused(store: ModelStore, tmp_path: Path) -> None:
    for model_id in ("../etc", "a/b", ""):
        with pytest.raises(ModelStoreError, match="may use only"):
            store.install(affine(tmp_path / "a.onnx"), model_id, "1")


def test_tampered_blob_is_detected(store: ModelStore, tmp_path: Path) -> None:
    record = store.install(affine(tmp_path / "a.onnx"), "scaler", "1")
    record.path.chmod(0o644)
    with record.path.open("ab") as blob:
        blob.write(b"x")
    assert not store.verify(record)


def test_partial_writes_of_a_crash_are_cleaned_at_start(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ModelStore(root)
    (root / "tmp" / "half.onnx").write_bytes(b"partial")
    ModelStore(root)
    assert list((root / "tmp").iterdir()) == []


def test_full_disk_is_a_clear_error(store: ModelStore) -> None:
    class FullDisk(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise OSError(28, "No space left on device")

    with pytest.raises(ModelStoreError, match="No space left on device"):
        store.install(FullDisk(), "m", "1")  # type: ignore[arg-type]
    assert list((store.root / "tmp").iterdir()) == []


def test_remove_keeps_shared_blobs(store: ModelStore, tmp_path: Path) -> None:
    a = store.install(affine(tmp_path / "a.onnx"), "one", "1")
    store.install(tmp_path / "a.onnx", "two", "1")
    store.remove("one", "1")
    assert a.path.exists()
    store.remove("two", "1")
    assert not a.path.exists()
    assert store.model_ids() == []
