"""Turn model outputs into answers: ``classify``, ``detect`` and ``anomaly_map``.

Each reads an array from a JSONPath (usually ``$.nodes.<inference node>.<output>``) and returns
plain JSON values, so decisions, events and results need no numpy downstream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.workflow.config_types import JsonPath
from agent.workflow.context import RunContext
from agent.workflow.errors import NodeError
from agent.workflow.node import Node

if TYPE_CHECKING:
    import numpy as np


def _array(value: Any, where: str, node: str) -> np.ndarray:
    import numpy as np

    array = np.asarray(value, dtype=np.float32)
    if array.size == 0:
        raise NodeError(f"{node}: {where} is empty")
    if not np.isfinite(array).all():
        raise NodeError(f"{node}: {where} holds NaN or Inf")
    return array


class ClassifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: JsonPath = Field(description="Logits or probabilities, one per class.")
    labels: list[str] = Field(min_length=1, description="Class names, in output order.")
    activation: Literal["softmax", "sigmoid", "none"] = Field("softmax", description="Applied to `source`.")
    top_k: int = Field(1, ge=1, description="How many classes to report in `top`.")


class Classify(Node[ClassifyConfig]):
    type_name = "classify"
    config_model = ClassifyConfig
    summary = "Softmax / sigmoid over class logits; the best label, its score and the top k."

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import numpy as np

        logits = _array(self.config.source.resolve(ctx), self.config.source.text, self.node_id).reshape(-1)
        labels = self.config.labels
        if logits.size != len(labels):
            raise NodeError(f"{self.config.source.text} has {logits.size} values for {len(labels)} labels")
        if self.config.activation == "softmax":
            exp = np.exp(logits - logits.max())
            scores = exp / exp.sum()
        elif self.config.activation == "sigmoid":
            scores = 1.0 / (1.0 + np.exp(-logits))
        else:
            scores = logits
        order = np.argsort(-scores)[: self.config.top_k]
        top = [{"label": labels[i], "score": float(scores[i])} for i in order]
        return {"label": top[0]["label"], "score": top[0]["score"], "top": top}


class DetectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: JsonPath = Field(description="Raw detector output for one image.")
    format: Literal["yolov5", "yolov8"] = Field(
        "yolov8",
        description="yolov5: rows of (cx, cy, w, h, objectness, class scores…); "
        "yolov8: (4 + classes) × boxes, no objectness.",
    )
    labels: list[str] = Field(min_length=1)
    score_threshold: float = Field(0.25, ge=0, le=1)
    iou_threshold: float = Field(0.45, ge=0, le=1)
    max_detections: int = Field(100, ge=1)
    scale: tuple[float, float] = Field((1.0, 1.0), description="Multiply boxes by (x, y) into frame pixels.")
    offset: tuple[float, float] = Field((0.0, 0.0), description="Then add (x, y), e.g. the ROI's origin.")


class Detect(Node[DetectConfig]):
    type_name = "detect"
    config_model = DetectConfig
    summary = "Decodes YOLO-style detector output and applies non-maximum suppression."
    concurrent = True

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import cv2
        import numpy as np

        raw = _array(self.config.source.resolve(ctx), self.config.source.text, self.node_id)
        classes = len(self.config.labels)
        if raw.ndim == 3 and raw.shape[0] == 1:
            raw = raw[0]
        if self.config.format == "yolov8":
            if raw.ndim != 2 or raw.shape[0] != 4 + classes:
                raise NodeError(f"yolov8 output must be (4 + {classes}) × boxes, got {raw.shape}")
            rows = raw.T
            class_scores = rows[:, 4:]
        else:
            if raw.ndim != 2 or raw.shape[1] != 5 + classes:
                raise NodeError(f"yolov5 output must be boxes × (5 + {classes}), got {raw.shape}")
            rows = raw
            class_scores = rows[:, 5:] * rows[:, 4:5]
        best = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(len(rows)), best]
        keep = scores >= self.config.score_threshold
        boxes_cxcywh, scores, best = rows[keep, :4], scores[keep], best[keep]
        sx, sy = self.config.scale
        ox, oy = self.config.offset
        boxes = (
            np.stack(
                [
                    (boxes_cxcywh[:, 0] - boxes_cxcywh[:, 2] / 2) * sx + ox,
                    (boxes_cxcywh[:, 1] - boxes_cxcywh[:, 3] / 2) * sy + oy,
                    boxes_cxcywh[:, 2] * sx,
                    boxes_cxcywh[:, 3] * sy,
                ],
                axis=1,
            )
            if len(scores)
            else np.zeros((0, 4), np.float32)
        )
        detections = []
        if len(scores):
            indices = cv2.dnn.NMSBoxesBatched(
                boxes.tolist(),
                scores.tolist(),
                best.tolist(),
                self.config.score_threshold,
                self.config.iou_threshold,
            )
            for i in np.asarray(indices).reshape(-1)[: self.config.max_detections]:
                x, y, w, h = (float(v) for v in boxes[i])
                detections.append(
                    {
                        "label": self.config.labels[int(best[i])],
                        "score": float(scores[i]),
                        "box": {"x": x, "y": y, "width": w, "height": h},
                    }
                )
            detections.sort(key=lambda d: -d["score"])  # type: ignore[operator]
        return {"detections": detections, "count": len(detections)}


class AnomalyMapConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: JsonPath = Field(description="Per-pixel or per-patch anomaly scores, (h, w) or (1, h, w).")
    score: JsonPath | None = Field(
        None, description="The model's own image score; derived from the map when unset."
    )
    reduce: Literal["max", "mean_top"] = Field("max", description="How the map becomes an image score.")
    top_fraction: float = Field(
        0.01, gt=0, le=1, description="For mean_top: the share of highest cells averaged."
    )
    region_threshold: float = Field(0.5, description="Cells at or above it form defect regions.")
    min_region_cells: int = Field(1, ge=1)
    roi: tuple[int, int, int, int] | None = Field(
        None,
        description="(x, y, width, height) of the frame area the map covers (regions then in frame pixels).",
    )

    @model_validator(mode="after")
    def _positive_roi(self) -> AnomalyMapConfig:
        if self.roi is not None and (self.roi[2] <= 0 or self.roi[3] <= 0):
            raise ValueError("roi width and height must be positive")
        return self


class AnomalyMap(Node[AnomalyMapConfig]):
    type_name = "anomaly_map"
    config_model = AnomalyMapConfig
    summary = "Anomaly map → image score and defect regions (connected components), in frame pixels."
    concurrent = True

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import cv2
        import numpy as np

        config = self.config
        amap = _array(config.source.resolve(ctx), config.source.text, self.node_id)
        amap = amap.reshape(amap.shape[-2:]) if amap.ndim == 3 and amap.shape[0] == 1 else amap
        if amap.ndim != 2:
            raise NodeError(f"{config.source.text} must be (h, w) or (1, h, w), got {amap.shape}")
        if config.score is not None:
            score = float(_array(config.score.resolve(ctx), config.score.text, self.node_id).reshape(-1)[0])
        elif config.reduce == "max":
            score = float(amap.max())
        else:
            flat = np.sort(amap.reshape(-1))
            score = float(flat[-max(1, int(len(flat) * config.top_fraction)) :].mean())
        height, width = amap.shape
        sx, sy, ox, oy = 1.0, 1.0, 0.0, 0.0
        if config.roi is not None:
            ox, oy = config.roi[0], config.roi[1]
            sx, sy = config.roi[2] / width, config.roi[3] / height
        mask = (amap >= config.region_threshold).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        regions = []
        for label in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[label])
            if area < config.min_region_cells:
                continue
            peak = float(amap[y : y + h, x : x + w].max())
            regions.append(
                {
                    "x": round(ox + x * sx),
                    "y": round(oy + y * sy),
                    "width": round(w * sx),
                    "height": round(h * sy),
                    "cells": area,
                    "peak": peak,
                }
            )
        regions.sort(key=lambda r: -float(r["peak"]))
        return {"score": score, "regions": regions, "defect_fraction": float(mask.mean())}
