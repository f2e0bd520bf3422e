"""Tiny ONNX models with the reference models' I/O contract (models/README.md): input ``image``
float32 ``[batch, 3, 224, 224]``, outputs ``anomaly_map`` ``[batch, 1, 28, 28]`` and ``score``
``[batch, 1]``. Each misbehaves in one way a rollout must catch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _contract(
    nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto], name: str
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", 1, 28, 28]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1]),
        ],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgefleet-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _base(scale: float) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """anomaly_map = mean over channels of 8×8 average pools × scale; score = mean of the map."""
    nodes = [
        helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("ReduceMean", ["pooled"], ["gray"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["gray", "scale"], ["anomaly_map"]),
        helper.make_node("ReduceMean", ["anomaly_map"], ["mean"], axes=[2, 3], keepdims=0),
        helper.make_node("Sigmoid", ["mean"], ["raw_score"]),
    ]
    return nodes, [numpy_helper.from_array(np.array(scale, dtype=np.float32), "scale")]


def nan_model(path: Path) -> Path:
    """Every output is NaN (a scale of NaN)."""
    nodes, inits = _base(float("nan"))
    nodes.append(helper.make_node("Identity", ["raw_score"], ["score"]))
    onnx.save(_contract(nodes, inits, "nan_outputs"), path)
    return path


def failing_model(path: Path) -> Path:
    """Fails every run: the score depends on a reshape of the image to 11 rows, which a
    3×224×224 image cannot fill (ONNX Runtime raises at run time)."""
    nodes, inits = _base(0.1)
    inits.append(numpy_helper.from_array(np.array([11, -1], dtype=np.int64), "bad_shape"))
    nodes += [
        helper.make_node("Reshape", ["image", "bad_shape"], ["impossible"]),
        helper.make_node("ReduceSum", ["impossible"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["raw_score", "nothing"], ["score"]),
    ]
    inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"))
    onnx.save(_contract(nodes, inits, "always_fails"), path)
    return path


def plain_model(path: Path, scale: float = 0.1) -> Path:
    """A model that works: finite outputs, a low score (every part accepted)."""
    nodes, inits = _base(scale)
    nodes.append(helper.make_node("Identity", ["raw_score"], ["score"]))
    onnx.save(_contract(nodes, inits, f"plain_{scale:g}"), path)
    return path
