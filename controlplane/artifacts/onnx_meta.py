"""Read an ONNX model's metadata (opsets, producer, inputs, outputs) without loading the model.

:func:`read_onnx_metadata` walks the protobuf wire format of ``onnx.ModelProto`` straight from
the file. It reads only the fields it reports and seeks over everything else, so the weights
(initializers, Constant nodes) are never read into memory: the cost is the same for a 1 KB and
a 1 GB model, apart from the number of seeks. Field numbers are those of ``onnx.proto``:

* ModelProto: ir_version=1, producer_name=2, producer_version=3, graph=7, opset_import=8
* GraphProto: node=1 (skipped), name=2, initializer=5 (only the name is read),
  input=11, output=12, sparse_initializer=15 (only the values' name is read)
* TensorProto: name=8; SparseTensorProto: values=1
* ValueInfoProto: name=1, type=2; TypeProto: tensor_type=1, sparse_tensor_type=8;
  TypeProto.Tensor: elem_type=1, shape=2; TensorShapeProto: dim=1;
  Dimension: dim_value=1, dim_param=2; OperatorSetIdProto: domain=1, version=2

Anything that is not a well-formed model raises :class:`NotOnnxError` (a ``ValueError``):
bad wire types or varints, lengths that run past the end of the file or of the enclosing
message, missing ``ir_version`` or graph, invalid UTF-8 in a name. Each field read advances
the file position, so any input terminates; a value or submessage that is decoded in memory is
at most :data:`MAX_DECODED_BYTES` long.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["MAX_DECODED_BYTES", "NotOnnxError", "OnnxMetadata", "TensorInfo", "read_onnx_metadata"]

#: Largest string or small submessage (ValueInfoProto, OperatorSetIdProto) read into memory.
MAX_DECODED_BYTES = 16 * 1024 * 1024

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_FIXED_SIZE = {_I64: 8, _I32: 4}
_READ_BUFFER = 64 * 1024

# TensorProto.DataType -> numpy-style name (ml_dtypes' names for the narrow float types; STRING is
# "str" as in the agent's model store, not numpy's "object")
_DTYPES: dict[int, str] = {
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
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8_e4m3fn",
    18: "float8_e4m3fnuz",
    19: "float8_e5m2",
    20: "float8_e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4_e2m1fn",
    24: "float8_e8m0fnu",
    25: "uint2",
    26: "int2",
    27: "float6_e2m3fn",
    28: "float6_e3m2fn",
}


class NotOnnxError(ValueError):
    """The file is not a well-formed ONNX model; the message names the file and the problem."""


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output.

    ``dtype`` is the numpy-style name of the element type ("float32", "int64", ...), or
    "unknown" when the type is missing or not a (sparse) tensor. ``shape`` holds, per axis,
    the fixed size, the symbolic name, or ``None``; it is ``()`` for a scalar and when the
    rank is unknown.
    """

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class OnnxMetadata:
    """What the control plane records about an uploaded model. ``size`` is the file size in bytes.

    ``opset`` maps each imported domain to its version, the default domain "" as "ai.onnx".
    ``inputs`` are the graph inputs that are not initializers (the ones a caller must feed).
    """

    ir_version: int
    opset: dict[str, int]
    producer_name: str
    producer_version: str
    graph_name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "ir_version": self.ir_version,
            "opset": dict(self.opset),
            "producer_name": self.producer_name,
            "producer_version": self.producer_version,
            "graph_name": self.graph_name,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "size": self.size,
        }


class _Malformed(Exception):
    """Raised inside the scanner; turned into NotOnnxError with the file name."""


class _Wire:
    """Protobuf wire-format fields of one message, read from a seekable binary stream."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def _varint(self, position: int, end: int, what: str) -> tuple[int, int]:
        """Decode the varint at ``position``; return it and the offset after it."""
        self._stream.seek(position)
        data = self._stream.read(min(10, end - position))
        result = 0
        for index, byte in enumerate(data):
            result |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                return result & 0xFFFF_FFFF_FFFF_FFFF, position + index + 1
        if len(data) == 10:
            raise _Malformed(f"invalid varint ({what}): more than 10 bytes at offset {position}")
        raise _Malformed(f"truncated varint ({what}) at offset {position}")

    def fields(self, start: int, end: int, message: str) -> Iterator[tuple[int, int, int, int]]:
        """Yield ``(field number, wire type, value, payload offset)`` for each field in [start, end).

        ``value`` is the integer of a varint field and the payload length of a
        length-delimited one. The caller may read anything meanwhile: each field is located
        from the offsets, not from the stream's position.
        """
        position = start
        while position < end:
            tag, payload = self._varint(position, end, f"tag in {message}")
            number, wire_type = tag >> 3, tag & 7
            if number == 0 or number >= 1 << 29:
                raise _Malformed(f"invalid field number {number} in {message} at offset {position}")
            if wire_type == _VARINT:
                value, payload = self._varint(payload, end, f"{message} field {number}")
                position = payload
            elif wire_type == _LEN:
                value, payload = self._varint(payload, end, f"length of {message} field {number}")
                position = payload + value
            elif wire_type in _FIXED_SIZE:
                value = _FIXED_SIZE[wire_type]
                position = payload + value
            else:
                raise _Malformed(
                    f"invalid wire type {wire_type} for {message} field {number} at offset {position}"
                )
            if position > end:
                raise _Malformed(
                    f"{message} field {number} at offset {payload} needs {value} bytes but "
                    f"only {end - payload} remain in its enclosing message (truncated?)"
                )
            yield number, wire_type, value, payload

    def read(self, offset: int, length: int, what: str) -> bytes:
        if length > MAX_DECODED_BYTES:
            raise _Malformed(f"{what} is {length} bytes, more than the {MAX_DECODED_BYTES} allowed")
        self._stream.seek(offset)
        data = self._stream.read(length)
        if len(data) != length:
            raise _Malformed(f"{what} is truncated: unexpected end of file")
        return data

    def string(self, offset: int, length: int, what: str) -> str:
        try:
            return self.read(offset, length, what).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Malformed(f"{what} is not valid UTF-8: {exc}") from None


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _signed32(value: int) -> int:
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value >= 1 << 31 else value


@dataclass
class _Graph:
    name: str = ""
    initializers: set[str] = field(default_factory=set)
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)


def _tensor_name(wire: _Wire, start: int, end: int) -> str:
    """``TensorProto.name`` (field 8), seeking over the data fields."""
    name = ""
    for number, wire_type, length, payload in wire.fields(start, end, "TensorProto"):
        if number == 8 and wire_type == _LEN:
            name = wire.string(payload, length, "initializer name")
    return name


def _sparse_tensor_name(wire: _Wire, start: int, end: int) -> str:
    """Name of ``SparseTensorProto.values`` (field 1), the sparse initializer's name."""
    name = ""
    for number, wire_type, length, payload in wire.fields(start, end, "SparseTensorProto"):
        if number == 1 and wire_type == _LEN:
            name = _tensor_name(wire, payload, payload + length)
    return name


def _shape(wire: _Wire, start: int, end: int) -> tuple[int | str | None, ...]:
    dims: list[int | str | None] = []
    for number, wire_type, length, payload in wire.fields(start, end, "TensorShapeProto"):
        if number != 1 or wire_type != _LEN:
            continue
        dim: int | str | None = None
        for d_number, d_wire, d_value, d_payload in wire.fields(payload, payload + length, "Dimension"):
            if d_number == 1 and d_wire == _VARINT:
                dim = _signed64(d_value)
            elif d_number == 2 and d_wire == _LEN:
                dim = wire.string(d_payload, d_value, "dim_param")
        dims.append(dim)
    return tuple(dims)


def _tensor_type(wire: _Wire, start: int, end: int) -> tuple[str, tuple[int | str | None, ...]]:
    dtype = "unknown"
    shape: tuple[int | str | None, ...] = ()
    for number, wire_type, value, payload in wire.fields(start, end, "TypeProto.Tensor"):
        if number == 1 and wire_type == _VARINT:
            dtype = _DTYPES.get(_signed32(value), "unknown")
        elif number == 2 and wire_type == _LEN:
            shape = _shape(wire, payload, payload + value)
    return dtype, shape


def _value_info(data: bytes) -> TensorInfo:
    """Decode a ``ValueInfoProto`` that was read into memory."""
    wire = _Wire(io.BytesIO(data))
    name, dtype = "", "unknown"
    shape: tuple[int | str | None, ...] = ()
    for number, wire_type, length, payload in wire.fields(0, len(data), "ValueInfoProto"):
        if number == 1 and wire_type == _LEN:
            name = wire.string(payload, length, "value name")
        elif number == 2 and wire_type == _LEN:
            dtype, shape = "unknown", ()
            for t_number, t_wire, t_length, t_payload in wire.fields(payload, payload + length, "TypeProto"):
                if t_number in (1, 8) and t_wire == _LEN:  # tensor_type, sparse_tensor_type
                    dtype, shape = _tensor_type(wire, t_payload, t_payload + t_length)
                elif t_number in (4, 5, 7, 9):  # sequence, map, opaque, optional: not a tensor
                    dtype, shape = "unknown", ()
    return TensorInfo(name=name, dtype=dtype, shape=shape)


def _opset(data: bytes) -> tuple[str, int]:
    """Decode an ``OperatorSetIdProto`` that was read into memory."""
    wire = _Wire(io.BytesIO(data))
    domain, version = "", 0
    for number, wire_type, value, payload in wire.fields(0, len(data), "OperatorSetIdProto"):
        if number == 1 and wire_type == _LEN:
            domain = wire.string(payload, value, "opset domain")
        elif number == 2 and wire_type == _VARINT:
            version = _signed64(value)
    return domain or "ai.onnx", version


def _scan_graph(wire: _Wire, start: int, end: int, graph: _Graph) -> None:
    for number, wire_type, length, payload in wire.fields(start, end, "GraphProto"):
        if wire_type != _LEN:
            continue
        if number == 2:
            graph.name = wire.string(payload, length, "graph name")
        elif number == 5:
            graph.initializers.add(_tensor_name(wire, payload, payload + length))
        elif number == 15:
            graph.initializers.add(_sparse_tensor_name(wire, payload, payload + length))
        elif number == 11:
            graph.inputs.append(_value_info(wire.read(payload, length, "graph input")))
        elif number == 12:
            graph.outputs.append(_value_info(wire.read(payload, length, "graph output")))


def _scan_model(stream: BinaryIO, size: int) -> OnnxMetadata:
    wire = _Wire(stream)
    ir_version: int | None = None
    producer_name = producer_version = ""
    opset: dict[str, int] = {}
    graph: _Graph | None = None
    for number, wire_type, value, payload in wire.fields(0, size, "ModelProto"):
        if number == 1 and wire_type == _VARINT:
            ir_version = _signed64(value)
        elif number == 2 and wire_type == _LEN:
            producer_name = wire.string(payload, value, "producer_name")
        elif number == 3 and wire_type == _LEN:
            producer_version = wire.string(payload, value, "producer_version")
        elif number == 8 and wire_type == _LEN:
            domain, version = _opset(wire.read(payload, value, "opset_import"))
            opset[domain] = version
        elif number == 7 and wire_type == _LEN:
            if graph is None:  # repeated occurrences merge, as protobuf does
                graph = _Graph()
            _scan_graph(wire, payload, payload + value, graph)
    if ir_version is None:
        raise _Malformed("no ir_version (ModelProto field 1)")
    if graph is None:
        raise _Malformed("no graph (ModelProto field 7)")
    return OnnxMetadata(
        ir_version=ir_version,
        opset=opset,
        producer_name=producer_name,
        producer_version=producer_version,
        graph_name=graph.name,
        inputs=tuple(t for t in graph.inputs if t.name not in graph.initializers),
        outputs=tuple(graph.outputs),
        size=size,
    )


def read_onnx_metadata(path: Path) -> OnnxMetadata:
    """Scan the ONNX model at ``path`` and return its metadata, in memory independent of its size.

    Raises :class:`NotOnnxError` if the file is not a well-formed ONNX model, ``OSError`` if
    it cannot be read. Models with external data are fine: only the ``.onnx`` file is read.
    """
    with open(path, "rb", buffering=_READ_BUFFER) as stream:
        size = os.fstat(stream.fileno()).st_size
        if size == 0:
            raise NotOnnxError(f"{path}: not an ONNX model: the file is empty")
        try:
            return _scan_model(stream, size)
        except _Malformed as exc:
            raise NotOnnxError(f"{path}: not an ONNX model: {exc}") from None
