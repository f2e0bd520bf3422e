"""Built-in node types. ``BUILTIN_NODES`` is the one list the default registry loads."""

from __future__ import annotations

from typing import Any

from agent.nodes.cache import CacheNode
from agent.nodes.condition import ConditionNode
from agent.nodes.data_validation import DataValidation
from agent.nodes.emit import Emit
from agent.nodes.image import Crop, ImageDecode, Normalize, Resize
from agent.nodes.inference import ModelInference
from agent.nodes.postprocess import AnomalyMap, Classify, Detect
from agent.nodes.threshold import Threshold
from agent.nodes.transform import Transform
from agent.workflow.node import Node

BUILTIN_NODES: tuple[type[Node[Any]], ...] = (
    DataValidation,
    Transform,
    ConditionNode,
    CacheNode,
    Emit,
    ImageDecode,
    Crop,
    Resize,
    Normalize,
    ModelInference,
    Classify,
    Detect,
    AnomalyMap,
    Threshold,
)

__all__ = ["BUILTIN_NODES"]
