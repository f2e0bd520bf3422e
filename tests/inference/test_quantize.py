"""``edgefleet-agent model quantize`` on the reference model: INT8 file, its size, speed and
accuracy against FP32, and the FP16 conversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.inference.quantize import auroc
from agent.sources.synthetic import write_dataset

MODEL = Path(__file__).resolve().parents[2] / "models" / "surface_inspection_v1.onnx"


def test_auroc_counts_ties_as_half() -> None:
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.1, 0.9], [True, False]) == 0.0


@pytest.mark.slow
def test_quantize_writes_a_smaller_int8_model_that_keeps_its_accuracy(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(MODEL.read_bytes())
    frames = write_dataset(tmp_path / "frames", 48, seed=31)
    result = CliRunner().invoke(
        app,
        [
            "model",
            "quantize",
            str(model),
            "--calibration",
            str(frames),
            "--eval",
            str(frames),
            "--roi",
            "280,0,720,720",
            "--limit",
            "32",
            "--fp16",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    int8 = Path(report["int8"]["file"])
    assert int8.exists()
    assert report["int8"]["size_ratio"] < 0.35
    assert report["fp32"]["auroc"] > 0.95
    assert report["int8"]["auroc"] > report["fp32"]["auroc"] - 0.02
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    fp16 = Path(report["fp16"]["file"])
    session = onnxruntime.InferenceSession(str(fp16), providers=["CPUExecutionProvider"])
    (score,) = session.run(["score"], {"image": np.zeros((1, 3, 224, 224), np.float32)})
    assert score.dtype == np.float32  # inputs and outputs stay FP32


def test_quantize_needs_images(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["model", "quantize", str(MODEL), "--calibration", str(tmp_path)])
    assert result.exit_code == 2
    assert "no images under" in result.output
