"""model_inference, classify, detect, anomaly_map and threshold, through compiled workflows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.inference.backend import BackendOptions
from agent.inference.onnxruntime_backend import OnnxRuntimeBackend
from agent.inference.runtime import ModelRuntime
from agent.inference.store import ModelStore
from agent.thresholds import ThresholdStore
from agent.workflow import CompileError, Executor, Plan
from tests.helpers import Compile, graph
from tests.inference.onnx_models import affine, log_model


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[ModelRuntime]:
    store = ModelStore(tmp_path / "store")
    store.install(affine(tmp_path / "affine.onnx"), "affine", "1")
    store.install(log_model(tmp_path / "log.onnx"), "log", "1")
    runtime = ModelRuntime(store, [OnnxRuntimeBackend()], BackendOptions(max_batch=4), max_wait_ms=1)
    yield runtime
    runtime.close()


@pytest.fixture
def thresholds() -> ThresholdStore:
    return ThresholdStore()


@pytest.fixture
def build(compile_graph: Compile, runtime: ModelRuntime, thresholds: ThresholdStore) -> Any:
    def build_(*nodes: dict[str, Any], edges: tuple[tuple[str, str], ...] = ()) -> Plan:
        return compile_graph(
            graph(list(nodes), edges), resources={"models": runtime, "thresholds": thresholds}
        )

    return build_


def infer(node_id: str = "infer", model: str = "affine", **config: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "model_inference",
        "config": {"model_id": model, "input_mapping": {"x": "$.features"}, **config},
    }


def test_model_inference_runs_the_model_on_mapped_inputs(build: Any, executor: Executor) -> None:
    plan = build(infer())
    result = executor.run(plan, {"features": np.array([1, 2, 3, 4], np.float32)})
    assert result.ok, result.error
    assert result.outputs["infer"]["y"].tolist() == [3, 5, 7, 9]
    assert result.outputs["infer"]["total"].tolist() == [24]


def test_json_values_are_converted_but_arrays_must_match(build: Any, executor: Executor) -> None:
    plan = build(infer())
    assert executor.run(plan, {"features": [0.5, 0.5, 0.5, 0.5]}).outputs["infer"]["y"].tolist() == [
        2,
        2,
        2,
        2,
    ]
    wrong = executor.run(plan, {"features": np.ones(4)})
    assert wrong.error is not None
    assert "expects float32, got float64" in wrong.error.message
    garbage = executor.run(plan, {"features": ["a", "b", "c", "d"]})
    assert garbage.error is not None
    assert "input 'x' (float32) cannot take $.features" in garbage.error.message


def test_missing_model_is_a_compile_error_naming_node_and_model(build: Any) -> None:
    with pytest.raises(CompileError) as caught:
        build(infer(model="pricing_model_v3"))
    (issue,) = caught.value.issues
    assert (issue.node, issue.field) == ("infer", "config.model_id")
    assert "model 'pricing_model_v3' is not in the model store" in issue.message


def test_mapping_that_does_not_match_the_model_inputs(build: Any) -> None:
    with pytest.raises(CompileError) as caught:
        build(infer(input_mapping={"image": "$.frame"}))
    (issue,) = caught.value.issues
    assert issue.field == "config.input_mapping"
    assert "unmapped ['x']" in issue.message
    assert "not inputs of the model ['image']" in issue.message


def test_wrong_shape_fails_the_run_naming_the_model_and_the_next_run_works(
    build: Any, executor: Executor
) -> None:
    plan = build(infer())
    bad = executor.run(plan, {"features": np.ones(7, np.float32)})
    assert bad.error is not None
    assert bad.error.node == "infer"
    assert "model 'affine' v1" in bad.error.message
    assert "expects shape 4 per sample, got 7" in bad.error.message
    assert executor.run(plan, {"features": np.ones(4, np.float32)}).ok


def test_nan_or_inf_outputs_fail_the_node(build: Any, executor: Executor) -> None:
    plan = build(infer(model="log"))
    result = executor.run(plan, {"features": np.array([-1.0, 1.0], np.float32)})
    assert result.error is not None
    assert "output 'y' holds NaN or Inf" in result.error.message


def test_concurrent_runs_share_batches(build: Any, runtime: ModelRuntime) -> None:
    from concurrent.futures import ThreadPoolExecutor

    plan = build(infer())
    with Executor() as executor, ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda i: executor.run(plan, {"features": np.full(4, i, np.float32)}), range(64))
        )
    assert [r.outputs["infer"]["y"][0] for r in results] == [2.0 * i + 1 for i in range(64)]
    assert runtime.get("affine").batcher.samples == 64


def test_threshold_changes_apply_to_the_next_run_without_reloading(
    build: Any, executor: Executor, thresholds: ThresholdStore
) -> None:
    thresholds.put("surface", {"default": 0.5})
    plan = build(
        {"id": "gate", "type": "threshold", "config": {"score": "$.score", "threshold_set": "surface"}}
    )
    first = executor.run(plan, {"score": 0.6}).outputs["gate"]
    assert (first["decision"], first["threshold"], first["threshold_set"]) == (
        "reject",
        0.5,
        {"name": "surface", "version": 1},
    )
    thresholds.put("surface", {"default": 0.7})
    second = executor.run(plan, {"score": 0.6}).outputs["gate"]
    assert (second["decision"], second["threshold"], second["threshold_set"]["version"]) == ("accept", 0.7, 2)


def test_threshold_per_class_fallbacks_and_direction(build: Any, executor: Executor) -> None:
    plan = build(
        {
            "id": "gate",
            "type": "threshold",
            "config": {
                "score": "$.score",
                "label": "$.label",
                "thresholds": {"scratch": 0.3, "default": 0.8},
            },
        }
    )
    assert executor.run(plan, {"score": 0.4, "label": "scratch"}).outputs["gate"]["decision"] == "reject"
    assert executor.run(plan, {"score": 0.4, "label": "stain"}).outputs["gate"]["decision"] == "accept"
    quality = build(
        {
            "id": "q",
            "type": "threshold",
            "config": {"score": "$.score", "thresholds": {"default": 0.9}, "reject_when": "below"},
        }
    )
    assert executor.run(quality, {"score": 0.5}).outputs["q"]["decision"] == "reject"
    bad = executor.run(plan, {"score": "high", "label": "scratch"})
    assert bad.error is not None
    assert "is not a number" in bad.error.message


def test_threshold_needs_some_threshold(build: Any) -> None:
    with pytest.raises(CompileError, match="give thresholds or a threshold_set"):
        build({"id": "gate", "type": "threshold", "config": {"score": "$.score"}})


def test_classify_softmax_top_k(build: Any, executor: Executor) -> None:
    plan = build(
        {
            "id": "c",
            "type": "classify",
            "config": {"source": "$.logits", "labels": ["good", "scratch", "stain"], "top_k": 2},
        }
    )
    out = executor.run(plan, {"logits": [0.1, 3.0, 1.0]}).outputs["c"]
    assert out["label"] == "scratch"
    assert [t["label"] for t in out["top"]] == ["scratch", "stain"]
    assert sum(t["score"] for t in out["top"]) < 1.0
    bad = executor.run(plan, {"logits": [1.0, 2.0]})
    assert bad.error is not None
    assert "2 values for 3 labels" in bad.error.message


def test_detect_decodes_yolov8_and_suppresses_overlaps(build: Any, executor: Executor) -> None:
    # three boxes: two overlapping 'pit's and one 'scratch' far away; (4 + 2 classes) × 3 boxes
    raw = np.array(
        [
            [50, 52, 200],  # cx
            [50, 50, 100],  # cy
            [20, 20, 40],  # w
            [20, 20, 10],  # h
            [0.9, 0.8, 0.1],  # pit
            [0.05, 0.1, 0.7],  # scratch
        ],
        np.float32,
    )
    plan = build(
        {
            "id": "d",
            "type": "detect",
            "config": {"source": "$.raw", "labels": ["pit", "scratch"], "offset": [280, 0]},
        }
    )
    out = executor.run(plan, {"raw": raw}).outputs["d"]
    assert out["count"] == 2
    assert [d["label"] for d in out["detections"]] == ["pit", "scratch"]
    assert out["detections"][0]["box"] == {"x": 320.0, "y": 40.0, "width": 20.0, "height": 20.0}


def test_anomaly_map_scores_and_regions_in_frame_pixels(build: Any, executor: Executor) -> None:
    amap = np.zeros((1, 28, 28), np.float32)
    amap[0, 2:4, 5:9] = 0.9  # a scratch-like blob
    amap[0, 20, 20] = 0.6  # a pit
    plan = build(
        {
            "id": "a",
            "type": "anomaly_map",
            "config": {"source": "$.map", "region_threshold": 0.5, "roi": [280, 0, 720, 720]},
        }
    )
    out = executor.run(plan, {"map": amap}).outputs["a"]
    assert out["score"] == pytest.approx(0.9)
    first, second = out["regions"]
    assert (first["x"], first["y"], first["cells"]) == (280 + round(5 * 720 / 28), round(2 * 720 / 28), 8)
    assert second["peak"] == pytest.approx(0.6)
    nan = amap.copy()
    nan[0, 0, 0] = np.nan
    assert executor.run(plan, {"map": nan}).error is not None
