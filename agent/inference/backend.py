"""What every inference backend provides: sessions that run a batch of named arrays.

Backends (``onnxruntime-cpu``, ``onnxruntime-cuda``, ``onnxruntime-tensorrt``, ``tensorrt``)
are adapters around their libraries; nothing outside them imports those libraries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from agent.inference.store import ModelRecord, TensorSpec

if TYPE_CHECKING:
    import numpy as np

Precision = Literal["fp32", "fp16", "int8"]
BACKEND_NAMES = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")


@dataclass(frozen=True)
class BackendOptions:
    """How to load a model; filled from the device profile's inference defaults."""

    precision: Precision = "fp32"
    max_batch: int = 8
    workspace_mb: int = 1024
    use_dla: bool = False
    dla_core: int = 0
    cpu_threads: int | None = None
    cpu_spin_wait: bool = False
    """Let CPU inference threads spin between operators instead of sleeping (ONNX Runtime's
    ``session.intra_op.allow_spinning``)."""
    cache_dir: Path | None = None
    """Engine and timing caches (TensorRT, ONNX Runtime's TensorRT EP)."""
    calibration: Callable[[], Iterator[Mapping[str, np.ndarray]]] | None = field(default=None, compare=False)
    """INT8 calibration batches (for backends that calibrate themselves)."""


class Session(Protocol):
    """A loaded model. ``run`` takes and returns batched arrays keyed by tensor name; it may
    be called from several threads."""

    backend: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def unavailable_reason(self) -> str | None:
        """``None`` when the backend can run here, else why not (one line)."""

    def needs_build(self, record: ModelRecord, options: BackendOptions) -> bool:
        """True when loading would first compile an engine (minutes): the runtime then builds
        it in the background while another backend serves."""

    def load(self, record: ModelRecord, options: BackendOptions) -> Session: ...
