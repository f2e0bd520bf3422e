"""The committed reference models: their ONNX contract, their accuracy on fresh generated
frames, and that the deliberately worse v0 fails the bar v1 clears."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from agent.sources.synthetic import SurfaceGenerator
from models.reference.evaluate import (
    INPUT_SIZE,
    LabelledCrops,
    auroc,
    crop_resize,
    decode,
    metrics,
    preprocess,
    run_model,
    threshold_for,
)

MODELS = Path(__file__).resolve().parents[2] / "models"
V1 = MODELS / "surface_inspection_v1.onnx"
V0 = MODELS / "surface_inspection_v0.onnx"
HELD_OUT_SEED = 4321  # neither the training (2024) nor the validation (77) seed
HELD_OUT_COUNT = 300


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def held_out() -> dict[str, LabelledCrops]:
    """Fresh frames, through a full-resolution and a half-resolution JPEG decode."""
    generator = SurfaceGenerator(HELD_OUT_SEED, defect_rate=0.5)
    modes = ("jpeg", "jpeg-half")
    crops = {m: np.empty((HELD_OUT_COUNT, INPUT_SIZE, INPUT_SIZE, 3), np.uint8) for m in modes}
    defects, materials = [], []
    for i in range(HELD_OUT_COUNT):
        sample = generator.sample(i)
        for mode in modes:
            crops[mode][i] = crop_resize(decode(sample.image, mode))
        defects.append(sample.defect)
        materials.append(sample.material)
    defective = np.array([d is not None for d in defects])
    return {m: LabelledCrops(crops[m], defective, defects, materials) for m in modes}


@pytest.mark.parametrize("path", [V1, V0], ids=["v1", "v0"])
def test_onnx_contract(path: Path) -> None:
    assert path.stat().st_size <= 5 * 1024 * 1024
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}.get("") == 17
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}  # folded at export

    model = session(path)
    (image,) = model.get_inputs()
    assert (image.name, image.type, image.shape) == ("image", "tensor(float)", ["batch", 3, 224, 224])
    outputs = {o.name: (o.type, o.shape) for o in model.get_outputs()}
    assert outputs == {
        "anomaly_map": ("tensor(float)", ["batch", 1, 28, 28]),
        "score": ("tensor(float)", ["batch", 1]),
    }
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
        anomaly_map, score = model.run(["anomaly_map", "score"], {"image": x})
        assert anomaly_map.shape == (batch, 1, 28, 28)
        assert score.shape == (batch, 1)
        assert anomaly_map.dtype == score.dtype == np.float32
        assert ((anomaly_map >= 0) & (anomaly_map <= 1)).all()
        assert ((score >= 0) & (score <= 1)).all()


def test_preprocess_contract() -> None:
    frame = SurfaceGenerator(1).sample(0).image
    x = preprocess(frame)
    assert x.shape == (1, 3, 224, 224)
    assert x.dtype == np.float32
    # channel 0 is red: the red of the BGR crop, normalised with the red mean and std
    red = crop_resize(frame)[..., 2].astype(np.float32) / 255
    np.testing.assert_allclose(x[0, 0], (red - 0.485) / 0.229, rtol=1e-5, atol=1e-5)
    # a half-resolution decode crops the same part of the scene
    half = preprocess(decode(frame, "jpeg-half"))
    assert np.abs(half - x).mean() < 0.15


def test_defect_is_located_on_the_anomaly_map() -> None:
    """The map is not a by-product: its hottest cell lies on the defect."""
    model = session(V1)
    generator = SurfaceGenerator(HELD_OUT_SEED + 1, defect_rate=1.0, defects=["scratch", "crack", "stain"])
    hits = 0
    for i in range(10):
        sample = generator.sample(i)
        (anomaly_map,) = model.run(["anomaly_map"], {"image": preprocess(sample.image)})
        row, col = np.unravel_index(int(anomaly_map[0, 0].argmax()), (28, 28))
        cell = 720 / 28
        x0, y0 = 280 + int(col * cell), int(row * cell)
        window = sample.mask[max(y0 - 26, 0) : y0 + 52, max(x0 - 26, 0) : x0 + 52]
        hits += bool(window.any())
    assert hits >= 9


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["jpeg", "jpeg-half"])
def test_v1_meets_the_inspection_targets(held_out: dict[str, LabelledCrops], mode: str) -> None:
    data = held_out[mode]
    result = metrics(run_model(V1, data.crops), data)
    assert result["auroc"] >= 0.97, result
    point = result["operating_point"]
    assert point["good_rejected"] <= 0.02, result
    assert point["defective_rejected"] >= 0.95, result


@pytest.mark.slow
def test_v0_is_measurably_worse(held_out: dict[str, LabelledCrops]) -> None:
    data = held_out["jpeg"]
    v1 = metrics(run_model(V1, data.crops), data)
    v0 = metrics(run_model(V0, data.crops), data)
    assert v0["auroc"] <= v1["auroc"] - 0.05, (v0, v1)
    assert v0["auroc"] < 0.95, v0
    # at the same 2 % false-reject budget, v0 lets far more defective parts through
    assert v0["operating_point"]["defective_rejected"] < 0.9, v0


def test_auroc_matches_pairwise_counting() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(200), 2)  # rounding makes ties
    positive = rng.random(200) < 0.4
    pos, neg = scores[positive], scores[~positive]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auroc(scores, positive) == pytest.approx(pairs / (len(pos) * len(neg)))
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    with pytest.raises(ValueError, match="both"):
        auroc([0.1, 0.2], [True, True])


def test_threshold_rejects_at_most_the_allowed_good_parts() -> None:
    rng = np.random.default_rng(1)
    for n_good in (10, 49, 50, 51, 300):
        scores = rng.random(n_good + 20)
        positive = np.arange(n_good + 20) >= n_good
        threshold = threshold_for(scores, positive, 0.02)
        rejected_good = (scores[:n_good] > threshold).sum()
        assert rejected_good == int(0.02 * n_good)
