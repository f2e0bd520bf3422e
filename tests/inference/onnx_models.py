"""Small ONNX models built with onnx.helper, for the inference tests (no training needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def affine(
    path: Path, *, scale: float = 2.0, bias: float = 1.0, features: int = 4, batched: bool = True
) -> Path:
    """``y = x * scale + bias`` and ``total = sum(y)`` per sample; input ``x`` [batch, features]."""
    batch: str | int = "batch" if batched else 1
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "scale"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["y"]),
            helper.make_node("ReduceSum", ["y", "axes"], ["total"], keepdims=1),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, features]),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, [batch, 1]),
        ],
        [
            numpy_helper.from_array(np.array(scale, np.float32), "scale"),
            numpy_helper.from_array(np.array(bias, np.float32), "bias"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgefleet-tests"
    )
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def log_model(path: Path) -> Path:
    """``y = log(x)``: NaN for negative inputs, -Inf for zero."""
    graph = helper.make_graph(
        [helper.make_node("Log", ["x"], ["y"])],
        "log",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
