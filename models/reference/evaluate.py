"""Measure a surface-inspection ONNX model on a held-out synthetic set, with ONNX Runtime.

    python models/reference/evaluate.py models/surface_inspection_v1.onnx --count 600 --seed 1234

prints one JSON object: image AUROC, the operating point that rejects at most 2 % of good
parts (threshold, good and defective parts rejected, recall per defect type and per material)
and, with ``--threshold``, the same rates at a fixed threshold.

This module is also the reference for the model's preprocessing contract (``preprocess``):
crop the frame to the part, resize to 224×224 (bilinear), BGR→RGB, /255, normalise with the
ImageNet mean and std, NCHW. Training (``train.py``) uses the same functions, so the two cannot
drift apart. It needs NumPy, OpenCV and ONNX Runtime only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.inference.quantize import auroc as _auroc
from agent.sources.synthetic import FRAME_SIZE, PART_ROI, SurfaceGenerator

INPUT_SIZE = 224
"""Side of the model input, in pixels."""
MAP_SIZE = 28
"""Side of the anomaly map: one cell per 8×8 input pixels (25.7×25.7 frame pixels)."""
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
DECODES = ("raw", "jpeg", "jpeg-half")
"""How a frame reaches the model: as rendered, through a JPEG at full resolution, or through a
JPEG decoded at half resolution (``cv2.IMREAD_REDUCED_COLOR_2``, as a busy device may do)."""
MAX_GOOD_REJECTED = 0.02

Image = npt.NDArray[np.uint8]


def part_box(frame_shape: Sequence[int]) -> tuple[int, int, int, int]:
    """``PART_ROI`` scaled to a frame of ``frame_shape`` (a reduced decode of a 1280×720 frame)."""
    scale = frame_shape[1] / FRAME_SIZE[0]
    x, y, w, h = PART_ROI
    return round(x * scale), round(y * scale), round(w * scale), round(h * scale)


def crop_resize(frame: Image) -> Image:
    """The part, resized to the model's input: INPUT_SIZE×INPUT_SIZE×3 uint8, still BGR."""
    x, y, w, h = part_box(frame.shape)
    part = frame[y : y + h, x : x + w]
    return np.asarray(cv2.resize(part, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR), np.uint8)


def normalise(crops: Image) -> npt.NDArray[np.float32]:
    """N×224×224×3 uint8 BGR crops → N×3×224×224 float32 model input."""
    rgb = crops[..., ::-1].astype(np.float32) / np.float32(255)
    return np.ascontiguousarray(((rgb - MEAN) / STD).transpose(0, 3, 1, 2))


def preprocess(frame: Image) -> npt.NDArray[np.float32]:
    """One BGR frame (full or half resolution) → 1×3×224×224 model input."""
    return normalise(crop_resize(frame)[None])


def decode(frame: Image, mode: str, quality: int = 90) -> Image:
    """``frame`` as the device sees it after ``mode`` (one of ``DECODES``)."""
    if mode == "raw":
        return frame
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok or mode not in DECODES:
        raise ValueError(f"cannot decode as {mode!r}")
    flags = cv2.IMREAD_REDUCED_COLOR_2 if mode == "jpeg-half" else cv2.IMREAD_COLOR
    return np.asarray(cv2.imdecode(buf, flags), np.uint8)


def map_target(mask: Image) -> npt.NDArray[np.float32]:
    """A frame's defect mask → MAP_SIZE×MAP_SIZE per-cell target: 1 where a cell holds a defect."""
    x, y, w, h = part_box(mask.shape)
    small = cv2.resize(mask[y : y + h, x : x + w], (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)
    cells = np.asarray(small, np.uint8).reshape(MAP_SIZE, INPUT_SIZE // MAP_SIZE, MAP_SIZE, -1)
    return np.asarray(cells.max(axis=(1, 3)) > 32, np.float32)


@dataclass(frozen=True)
class LabelledCrops:
    """Model-ready crops of generated frames, with what is on them."""

    crops: Image
    """N×224×224×3 uint8 BGR."""
    defective: npt.NDArray[np.bool_]
    defects: list[str | None]
    materials: list[str]


def held_out(count: int, seed: int, *, decode_mode: str = "jpeg", defect_rate: float = 0.5) -> LabelledCrops:
    """Frames ``0 .. count-1`` of ``SurfaceGenerator(seed)`` through ``decode_mode``, cropped."""
    generator = SurfaceGenerator(seed, defect_rate=defect_rate)
    crops = np.empty((count, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    defects: list[str | None] = []
    materials: list[str] = []
    for index in range(count):
        sample = generator.sample(index)
        crops[index] = crop_resize(decode(sample.image, decode_mode))
        defects.append(sample.defect)
        materials.append(sample.material)
    defective = np.array([d is not None for d in defects], dtype=bool)
    return LabelledCrops(crops, defective, defects, materials)


def run_model(model: Path | Any, crops: Image, *, batch: int = 32) -> npt.NDArray[np.float32]:
    """Image scores (N,) of ``model`` (a path or an ``onnxruntime.InferenceSession``)."""
    import onnxruntime as ort

    session: Any = model
    if isinstance(model, Path | str):
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    scores = [
        session.run(["score"], {"image": normalise(crops[i : i + batch])})[0][:, 0]
        for i in range(0, len(crops), batch)
    ]
    return np.concatenate(scores).astype(np.float32)


def auroc(scores: npt.ArrayLike, positive: npt.ArrayLike) -> float:
    """Area under the ROC curve (``agent.inference.quantize.auroc``); raises ``ValueError``
    when one class is absent."""
    value = _auroc(np.asarray(scores, np.float64), np.asarray(positive, bool))  # type: ignore[arg-type]
    if np.isnan(value):
        raise ValueError("AUROC needs both positive and negative samples")
    return value


def threshold_for(scores: npt.ArrayLike, positive: npt.ArrayLike, max_good_rejected: float) -> float:
    """The lowest threshold at which at most ``max_good_rejected`` of the negatives score
    above it (a part is rejected when ``score > threshold``)."""
    s = np.asarray(scores, np.float64)
    good = np.sort(s[~np.asarray(positive, bool)])[::-1]
    allowed = int(np.floor(max_good_rejected * len(good) + 1e-9))
    return float(good[allowed]) if allowed < len(good) else float(good[-1]) - 1e-12


def rates(
    scores: npt.ArrayLike, data: LabelledCrops, threshold: float
) -> dict[str, float | dict[str, float]]:
    """Good and defective parts rejected at ``threshold``, and recall per defect and material."""
    rejected = np.asarray(scores, np.float64) > threshold
    good = ~data.defective
    by_defect = {}
    for name in sorted({d for d in data.defects if d is not None}):
        rows = np.array([d == name for d in data.defects])
        by_defect[name] = round(float(rejected[rows].mean()), 4)
    by_material = {}
    for name in sorted(set(data.materials)):
        rows = np.array([m == name for m in data.materials]) & data.defective
        if rows.any():
            by_material[name] = round(float(rejected[rows].mean()), 4)
    return {
        "threshold": threshold,
        "good_rejected": round(float(rejected[good].mean()), 4),
        "defective_rejected": round(float(rejected[data.defective].mean()), 4),
        "recall_by_defect": by_defect,
        "recall_by_material": by_material,
    }


def metrics(scores: npt.ArrayLike, data: LabelledCrops, *, threshold: float | None = None) -> dict[str, Any]:
    """AUROC, the ≤2 %-good-rejected operating point and, given ``threshold``, the rates there."""
    result: dict[str, Any] = {
        "count": len(data.defective),
        "good": int((~data.defective).sum()),
        "defective": int(data.defective.sum()),
        "auroc": round(auroc(scores, data.defective), 5),
        "operating_point": rates(scores, data, threshold_for(scores, data.defective, MAX_GOOD_REJECTED)),
    }
    if threshold is not None:
        result["at_threshold"] = rates(scores, data, threshold)
    return result


def evaluate(
    model: Path,
    *,
    count: int = 600,
    seed: int = 1234,
    decode_mode: str = "jpeg",
    threshold: float | None = None,
) -> dict[str, Any]:
    """Generate the held-out set, score it with ``model`` and return ``metrics`` plus the model's
    file name, size and sha256."""
    data = held_out(count, seed, decode_mode=decode_mode)
    scores = run_model(model, data.crops)
    blob = model.read_bytes()
    return {
        "model": model.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "seed": seed,
        "decode": decode_mode,
        **metrics(scores, data, threshold=threshold),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--decode", choices=DECODES, default="jpeg")
    parser.add_argument("--threshold", type=float, help="also report the rates at this threshold")
    args = parser.parse_args(argv)
    result = evaluate(
        args.model, count=args.count, seed=args.seed, decode_mode=args.decode, threshold=args.threshold
    )
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
