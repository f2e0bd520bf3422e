"""read_onnx_metadata: agrees with onnx.load, stays flat in memory, rejects anything malformed."""

from __future__ import annotations

import contextlib
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from controlplane.artifacts import NotOnnxError, OnnxMetadata, TensorInfo, read_onnx_metadata

REPO = Path(__file__).resolve().parents[2]
REAL_MODELS = [
    REPO / "models" / "surface_inspection_v1.onnx",
    REPO / "examples" / "models" / "pricing_model_v3.onnx",
]


def _dtype(elem_type: int) -> str:
    if elem_type == TensorProto.UNDEFINED:
        return "unknown"
    if elem_type == TensorProto.STRING:
        return "str"
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    kind = value.type.WhichOneof("value")
    if kind not in ("tensor_type", "sparse_tensor_type"):
        return TensorInfo(value.name, "unknown", ())
    tensor = getattr(value.type, kind)
    shape = tuple(
        d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
        for d in tensor.shape.dim
    )
    return TensorInfo(value.name, _dtype(tensor.elem_type), shape)


def expected_metadata(path: Path) -> OnnxMetadata:
    """The same metadata, computed from the model loaded with onnx.load."""
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    initializers = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
    return OnnxMetadata(
        ir_version=model.ir_version,
        opset={(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        graph_name=graph.name,
        inputs=tuple(_tensor_info(v) for v in graph.input if v.name not in initializers),
        outputs=tuple(_tensor_info(v) for v in graph.output),
        size=path.stat().st_size,
    )


def conv_model(path: Path, *, weight_shape: tuple[int, ...] = (8, 3, 3, 3)) -> Path:
    """A Conv with its weight as an initializer, a dynamic batch "N", and two outputs."""
    weight = np.arange(np.prod(weight_shape), dtype=np.float32).reshape(weight_shape)
    bias = np.zeros(weight_shape[0], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "weight", "bias"], ["features"], pads=[1, 1, 1, 1]),
            helper.make_node("ReduceMean", ["features"], ["score"], keepdims=0, axes=[1, 2, 3]),
        ],
        "conv_graph",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32]),
            # an initializer listed among the inputs (an optional input with a default)
            helper.make_tensor_value_info("bias", TensorProto.FLOAT, [weight_shape[0]]),
        ],
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", weight_shape[0], 32, 32]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT16, ["N"]),
        ],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 2)],
        producer_name="edgefleet-tests",
        producer_version="1.2.3",
    )
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return conv_model(tmp_path_factory.mktemp("onnx") / "conv.onnx").read_bytes()


def test_conv_model_matches_onnx_load(tmp_path: Path) -> None:
    path = conv_model(tmp_path / "conv.onnx")
    meta = read_onnx_metadata(path)
    assert meta == expected_metadata(path)
    assert meta.ir_version == 8
    assert meta.opset == {"ai.onnx": 13, "com.example": 2}
    assert (meta.producer_name, meta.producer_version, meta.graph_name) == (
        "edgefleet-tests",
        "1.2.3",
        "conv_graph",
    )
    assert meta.inputs == (TensorInfo("image", "float32", ("N", 3, 32, 32)),)
    assert meta.outputs == (
        TensorInfo("features", "float32", ("N", 8, 32, 32)),
        TensorInfo("score", "float16", ("N",)),
    )
    assert meta.size == path.stat().st_size
    as_json = json.loads(json.dumps(meta.to_dict()))
    assert as_json["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["N", 3, 32, 32]}]
    assert as_json["opset"] == {"ai.onnx": 13, "com.example": 2}


@pytest.mark.parametrize("path", REAL_MODELS, ids=lambda p: p.name)
def test_repository_models_match_onnx_load(path: Path) -> None:
    assert read_onnx_metadata(path) == expected_metadata(path)


def test_types_shapes_and_sparse_initializers(tmp_path: Path) -> None:
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.0], np.float32), "table"),
        numpy_helper.from_array(np.array([0], np.int64), "table_indices"),
        [4],
    )
    unknown_dim = helper.make_tensor_value_info("ragged", TensorProto.INT64, ["B", 2])
    unknown_dim.type.tensor_type.shape.dim[1].Clear()  # neither dim_value nor dim_param
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "",
        [
            helper.make_tensor_value_info("x", TensorProto.UINT8, []),  # scalar
            helper.make_tensor_value_info("no_shape", TensorProto.BOOL, None),  # unknown rank
            helper.make_tensor_value_info("table", TensorProto.FLOAT, [4]),  # a sparse initializer
            unknown_dim,
            helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("b16", TensorProto.BFLOAT16, [1]),
            helper.make_tensor_value_info("f8", TensorProto.FLOAT8E4M3FN, [1]),
            helper.make_tensor_value_info("big", TensorProto.UINT64, [2**40]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [])],
        sparse_initializer=[sparse],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "types.onnx"
    onnx.save(model, str(path))
    meta = read_onnx_metadata(path)
    assert meta == expected_metadata(path)
    assert {t.name: (t.dtype, t.shape) for t in meta.inputs} == {
        "x": ("uint8", ()),
        "no_shape": ("bool", ()),
        "ragged": ("int64", ("B", None)),
        "seq": ("unknown", ()),
        "b16": ("bfloat16", (1,)),
        "f8": ("float8_e4m3fn", (1,)),
        "big": ("uint64", (2**40,)),
    }
    assert meta.graph_name == ""
    assert meta.producer_name == ""


def test_large_initializer_is_scanned_in_flat_memory(tmp_path: Path) -> None:
    elements = 50 * 1024 * 1024 // 4
    weight = np.ones((elements,), dtype=np.float32)  # 50 MB
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", weight.size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", weight.size])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "big.onnx"
    onnx.save(model, str(path))
    del model, graph, weight
    assert path.stat().st_size > 50 * 1024 * 1024

    tracemalloc.start()
    try:
        started = time.perf_counter()
        meta = read_onnx_metadata(path)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"scanned {path.stat().st_size} bytes in {elapsed * 1000:.2f} ms, peak {peak / 1024:.1f} KiB")
    assert peak < 5 * 1024 * 1024
    assert meta.inputs == (TensorInfo("x", "float32", ("N", elements)),)
    assert meta.outputs == (TensorInfo("y", "float32", ("N", elements)),)
    assert meta.graph_name == "big"

    truncated = tmp_path / "big_truncated.onnx"
    with path.open("rb") as src, truncated.open("wb") as dst:
        dst.write(src.read(30 * 1024 * 1024))  # cut in the middle of the initializer
    with pytest.raises(NotOnnxError, match="truncated"):
        read_onnx_metadata(truncated)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b"\x00" * 64, "invalid field number 0"),
        (b"hello, this is a text file\n" * 10, "not an ONNX model"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00", "not an ONNX model"),
        (b"\x08\x08", "no graph"),  # ir_version only
        (b"\x3a\x00", "no ir_version"),  # an empty graph only
        (b"\x08" + b"\xff" * 11, "invalid varint"),
        (b"\x08\xff\xff", "truncated varint"),
        (b"\x0b", "invalid wire type 3"),
        (b"\x08\x08\x3a\x10\x12\x02ab", "truncated"),  # graph declares 16 bytes, 4 remain
        (b"\x08\x08\x3a\x04\x12\x05abcd", "enclosing message"),  # graph name runs past the graph
        (b"\x08\x08\x12\x02\xff\xfe\x3a\x00", "UTF-8"),  # producer_name
    ],
)
def test_rejects_non_models(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(content)
    with pytest.raises(NotOnnxError, match=problem) as info:
        read_onnx_metadata(path)
    assert str(path) in str(info.value)


def test_minimal_model_parses(tmp_path: Path) -> None:
    path = tmp_path / "minimal.onnx"
    path.write_bytes(b"\x08\x08\x3a\x00")  # ir_version 8 and an empty graph
    meta = read_onnx_metadata(path)
    assert (meta.ir_version, meta.opset, meta.inputs, meta.outputs, meta.size) == (8, {}, (), (), 4)


def test_truncated_model_is_rejected(tmp_path: Path, small_model: bytes) -> None:
    graph = onnx.load_from_string(small_model).graph.SerializeToString()
    graph_start = small_model.find(graph)
    assert graph_start > 0
    path = tmp_path / "cut.onnx"
    for cut in range(1, len(small_model)):
        path.write_bytes(small_model[:cut])
        if graph_start <= cut < graph_start + len(graph):  # inside the graph: always an error
            with pytest.raises(NotOnnxError):
                read_onnx_metadata(path)
        else:  # elsewhere a cut may fall on a field boundary, leaving a valid (smaller) model
            with contextlib.suppress(NotOnnxError):
                read_onnx_metadata(path)
    for cut in (1, graph_start // 2, graph_start + 10, len(small_model) // 2):
        path.write_bytes(small_model[:cut])
        with pytest.raises(NotOnnxError):
            read_onnx_metadata(path)


def _parses_or_is_rejected(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        meta = read_onnx_metadata(path)
    except NotOnnxError:
        return
    assert meta.size == len(content)
    json.dumps(meta.to_dict())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.binary(max_size=4096))
def test_random_bytes_parse_or_raise_not_onnx(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    _parses_or_is_rejected(tmp_path_factory.getbasetemp() / "random.bin", content)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_models_parse_or_raise_not_onnx(
    tmp_path_factory: pytest.TempPathFactory, small_model: bytes, data: st.DataObject
) -> None:
    content = bytearray(small_model)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(content) - 1))
        content[position] = data.draw(st.integers(0, 255))
    _parses_or_is_rejected(tmp_path_factory.getbasetemp() / "mutated.onnx", bytes(content))
