"""Backend names (as device profiles list them) → backend objects."""

from __future__ import annotations

from collections.abc import Sequence

from agent.inference.backend import Backend
from agent.inference.onnxruntime_backend import OnnxRuntimeBackend


def make_backend(name: str) -> Backend:
    if name == "tensorrt":
        from agent.inference.tensorrt_backend import TensorRTBackend

        return TensorRTBackend()
    return OnnxRuntimeBackend(name)


def make_backends(names: Sequence[str]) -> list[Backend]:
    return [make_backend(name) for name in names]
