"""Build ``pricing_model_v3.onnx``, the design brief's pricing model, as a real ONNX graph.

``calculated_price = unit_price[product_id] × quantity`` — a string-keyed lookup
(``ai.onnx.ml.LabelEncoder``) and a multiplication, so the brief's ``order_processing`` workflow
runs end to end through ``model_inference`` and ONNX Runtime. Unknown products price at -1,
which the workflow's schema check keeps from happening.

Run: ``.venv/bin/python examples/models/make_pricing_model.py``
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

PRICES = {"P1001": 19.5, "P1002": 4.25, "P1003": 129.0, "P1004": 0.8}
HERE = Path(__file__).resolve().parent


def build(path: Path = HERE / "pricing_model_v3.onnx") -> Path:
    graph = helper.make_graph(
        [
            helper.make_node(
                "LabelEncoder",
                ["product_id"],
                ["unit_price"],
                domain="ai.onnx.ml",
                keys_strings=list(PRICES),
                values_floats=list(PRICES.values()),
                default_float=-1.0,
            ),
            helper.make_node("Cast", ["quantity"], ["quantity_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["unit_price", "quantity_f"], ["calculated_price"]),
        ],
        "pricing_model_v3",
        [
            helper.make_tensor_value_info("product_id", TensorProto.STRING, ["batch"]),
            helper.make_tensor_value_info("quantity", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("calculated_price", TensorProto.FLOAT, ["batch"])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
        producer_name="edgefleet-examples",
        producer_version="3",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


if __name__ == "__main__":
    print(build())
