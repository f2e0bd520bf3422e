"""The device's model store: content-addressed ONNX files plus their metadata.

Layout under the store's root::

    blobs/sha256/<hex>.onnx          the model bytes, named by their sha256
    models/<model_id>/<version>.json the record: sha256, size, inputs, outputs, opset, producer
    tmp/                             partial writes; emptied at start

Installs are atomic: bytes are written to ``tmp/``, hashed on the way, fsync'ed and renamed into
place, then the record is written the same way. A crash or a full disk leaves either the old
state or the new one, never half a model. Versions are immutable: installing a different file
under an existing (model_id, version) is refused; the same file again is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from agent.fsutil import atomic_write, fsync_dir
from agent.inference.errors import ModelFormatError, ModelNotFound, ModelStoreError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
CHUNK = 1 << 20


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output. ``shape`` holds ints for fixed dims and names (or ``None``) for
    dynamic ones, e.g. ``("batch", 3, 224, 224)``."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    @property
    def batched(self) -> bool:
        """True when the first axis is dynamic: the model takes a batch of any size."""
        return bool(self.shape) and not isinstance(self.shape[0], int)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(name=data["name"], dtype=data["dtype"], shape=tuple(data["shape"]))


@dataclass(frozen=True)
class ModelRecord:
    """An installed model version."""

    model_id: str
    version: str
    sha256: str
    size: int
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    producer: str
    installed_at: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["inputs"] = [spec.to_dict() for spec in self.inputs]
        data["outputs"] = [spec.to_dict() for spec in self.outputs]
        return data


_ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "str",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
}


def read_onnx_metadata(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], int, str]:
    """Inputs, outputs, default-domain opset and producer of an ONNX file.

    Raises ``ModelFormatError`` naming the file when it is not a valid ONNX model.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, ValueError, OSError) as exc:
        raise ModelFormatError(f"{path.name} is not a valid ONNX model: {exc}") from exc

    initializers = {init.name for init in model.graph.initializer}

    def specs(values: Any) -> tuple[TensorSpec, ...]:
        result = []
        for value in values:
            if value.name in initializers:
                continue
            tensor = value.type.tensor_type
            shape: list[int | str | None] = []
            for dim in tensor.shape.dim:
                if dim.HasField("dim_value"):
                    shape.append(int(dim.dim_value))
                else:
                    shape.append(dim.dim_param or None)
            result.append(TensorSpec(value.name, _ONNX_DTYPES.get(tensor.elem_type, "unknown"), tuple(shape)))
        return tuple(result)

    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)
    producer = f"{model.producer_name} {model.producer_version}".strip()
    return specs(model.graph.input), specs(model.graph.output), int(opset), producer


def _check_name(kind: str, value: str) -> None:
    if not NAME_PATTERN.match(value) or ".." in value:
        raise ModelStoreError(f"{kind} {value!r} may use only letters, digits, '_', '.', '-' (up to 128)")


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: '10' after '9', '1.10' after '1.9'."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[.\-_]", version))


class ModelStore:
    """Content-addressed model directory. Safe for concurrent readers and one writer process."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs" / "sha256"
        self._records = self.root / "models"
        self._tmp = self.root / "tmp"
        try:
            for directory in (self._blobs, self._records, self._tmp):
                directory.mkdir(parents=True, exist_ok=True)
            for leftover in self._tmp.iterdir():  # partial writes of a crashed install
                leftover.unlink(missing_ok=True)
        except OSError as exc:
            raise ModelStoreError(f"model store {self.root} cannot be prepared: {exc}") from exc

    def install(self, source: Path | IO[bytes], model_id: str, version: str) -> ModelRecord:
        """Install an ONNX model under ``model_id``/``version`` and return its record."""
        _check_name("model_id", model_id)
        _check_name("version", version)
        tmp_path = None
        try:
            with tempfile.NamedTemporaryFile(dir=self._tmp, suffix=".onnx", delete=False) as out:
                tmp_path = Path(out.name)
                digest = hashlib.sha256()
                size = 0
                reader = source.open("rb") if isinstance(source, Path) else source
                try:
                    while chunk := reader.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                finally:
                    if isinstance(source, Path):
                        reader.close()
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            inputs, outputs, opset, producer = read_onnx_metadata(tmp_path)
            existing = self._read_record(model_id, version)
            if existing is not None:
                if existing.sha256 != sha256:
                    raise ModelStoreError(
                        f"model '{model_id}' version '{version}' is already installed with sha256 "
                        f"{existing.sha256[:12]}…; versions are immutable (this file is {sha256[:12]}…)"
                    )
                return existing
            blob = self._blobs / f"{sha256}.onnx"
            if blob.exists():
                tmp_path.unlink()
            else:
                os.replace(tmp_path, blob)
                fsync_dir(self._blobs)
            tmp_path = None
            record = ModelRecord(
                model_id, version, sha256, size, blob, inputs, outputs, opset, producer, time.time()
            )
            self._write_record(record)
            return record
        except OSError as exc:
            raise ModelStoreError(f"installing model '{model_id}' version '{version}' failed: {exc}") from exc
        finally:
            if tmp_path is not None:
                tmp_path.unlink(missing_ok=True)

    def _record_path(self, model_id: str, version: str) -> Path:
        return self._records / model_id / f"{version}.json"

    def _write_record(self, record: ModelRecord) -> None:
        directory = self._records / record.model_id
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self._record_path(record.model_id, record.version),
            json.dumps(record.to_dict(), indent=2).encode(),
        )

    def _read_record(self, model_id: str, version: str) -> ModelRecord | None:
        path = self._record_path(model_id, version)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ModelStoreError(f"model record {path} is unreadable: {exc}") from exc
        return ModelRecord(
            model_id=data["model_id"],
            version=data["version"],
            sha256=data["sha256"],
            size=data["size"],
            path=self._blobs / f"{data['sha256']}.onnx",
            inputs=tuple(TensorSpec.from_dict(spec) for spec in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(spec) for spec in data["outputs"]),
            opset=data["opset"],
            producer=data["producer"],
            installed_at=data["installed_at"],
        )

    def versions(self, model_id: str) -> list[str]:
        """Installed versions of ``model_id``, oldest first."""
        directory = self._records / model_id
        if not NAME_PATTERN.match(model_id) or not directory.is_dir():
            return []
        return sorted((path.stem for path in directory.glob("*.json")), key=_version_key)

    def resolve(self, model_id: str, version: str | None = None) -> ModelRecord:
        """The record of ``model_id`` at ``version`` (the newest when ``None``)."""
        versions = self.versions(model_id)
        if version is None:
            if not versions:
                raise ModelNotFound(model_id, None, self.model_ids())
            version = versions[-1]
        record = self._read_record(model_id, version) if version in versions else None
        if record is None:
            raise ModelNotFound(model_id, version, versions or self.model_ids())
        if not record.path.is_file():
            raise ModelStoreError(
                f"model '{model_id}' version '{version}': blob {record.path.name} is missing"
            )
        return record

    def model_ids(self) -> list[str]:
        return sorted(path.name for path in self._records.iterdir() if path.is_dir())

    def __iter__(self) -> Iterator[ModelRecord]:
        for model_id in self.model_ids():
            for version in self.versions(model_id):
                yield self.resolve(model_id, version)

    def verify(self, record: ModelRecord) -> bool:
        """Re-hash the blob; False when it no longer matches its name."""
        digest = hashlib.sha256()
        with record.path.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest() == record.sha256

    def remove(self, model_id: str, version: str) -> None:
        """Forget a version; its blob goes when no record refers to it."""
        record = self.resolve(model_id, version)
        self._record_path(model_id, version).unlink()
        if not any(other.sha256 == record.sha256 for other in self):
            record.path.unlink(missing_ok=True)
        if not self.versions(model_id):
            shutil.rmtree(self._records / model_id)
