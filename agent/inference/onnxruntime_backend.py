"""ONNX Runtime backends: CPU everywhere; CUDA and TensorRT execution providers when
``onnxruntime-gpu`` is installed.

``onnxruntime`` is imported only here. Its exceptions are translated into
``agent.inference.errors``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.inference.backend import BackendOptions
from agent.inference.errors import BackendUnavailable, InferenceFailed, InputMismatch, ModelFormatError
from agent.inference.store import ModelRecord, TensorSpec

if TYPE_CHECKING:
    import numpy as np

_PROVIDERS = {
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}


def _provider_options(name: str, options: BackendOptions) -> dict[str, Any]:
    if name == "onnxruntime-tensorrt":
        cache = str(options.cache_dir or Path("trt-cache"))
        return {
            "trt_fp16_enable": options.precision in ("fp16", "int8"),
            "trt_int8_enable": options.precision == "int8",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache,
            "trt_max_workspace_size": options.workspace_mb << 20,
            "trt_dla_enable": options.use_dla,
            "trt_dla_core": options.dla_core,
        }
    if name == "onnxruntime-cuda":
        return {"cudnn_conv_algo_search": "HEURISTIC"}
    return {}


class OnnxRuntimeSession:
    """One ``onnxruntime.InferenceSession``; ``run`` is thread-safe (ONNX Runtime's contract)."""

    def __init__(self, backend: str, record: ModelRecord, session: Any) -> None:
        self.backend = backend
        self.record = record
        self._session = session
        self.inputs: tuple[TensorSpec, ...] = record.inputs
        self.outputs: tuple[TensorSpec, ...] = record.outputs
        self._output_names = [spec.name for spec in record.outputs]
        self._lock = threading.Lock()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

        try:
            values = self._session.run(self._output_names, dict(feeds))
        except InvalidArgument as exc:
            raise InputMismatch(f"model '{self.record.model_id}' ({self.backend}): {exc}") from exc
        except (Fail, RuntimeError) as exc:
            raise InferenceFailed(f"model '{self.record.model_id}' ({self.backend}): {exc}") from exc
        return dict(zip(self._output_names, values, strict=True))

    def close(self) -> None:
        with self._lock:
            self._session = None


class OnnxRuntimeBackend:
    """ONNX Runtime with one execution provider (and CPU as its own fallback for unsupported
    nodes)."""

    def __init__(self, name: str = "onnxruntime-cpu") -> None:
        if name not in _PROVIDERS:
            raise ValueError(f"unknown ONNX Runtime backend {name!r}")
        self.name = name

    def unavailable_reason(self) -> str | None:
        try:
            import onnxruntime
        except ImportError as exc:
            return f"onnxruntime is not installed ({exc})"
        provider = _PROVIDERS[self.name]
        if provider not in onnxruntime.get_available_providers():
            return f"{provider} is not in this onnxruntime build (install onnxruntime-gpu)"
        return None

    def needs_build(self, record: ModelRecord, options: BackendOptions) -> bool:
        if self.name != "onnxruntime-tensorrt":
            return False
        cache = options.cache_dir
        return cache is None or not any(cache.glob("*.engine"))

    def load(self, record: ModelRecord, options: BackendOptions) -> OnnxRuntimeSession:
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(self.name, reason)
        import onnxruntime
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf

        session_options = onnxruntime.SessionOptions()
        session_options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.cpu_threads:
            session_options.intra_op_num_threads = options.cpu_threads
        spin = "1" if options.cpu_spin_wait else "0"
        session_options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        session_options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        session_options.log_severity_level = 3
        provider = _PROVIDERS[self.name]
        providers: list[Any] = [(provider, _provider_options(self.name, options))]
        if provider != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")
        try:
            session = onnxruntime.InferenceSession(str(record.path), session_options, providers=providers)
        except (InvalidGraph, InvalidProtobuf) as exc:
            raise ModelFormatError(
                f"model '{record.model_id}' cannot be loaded by {self.name}: {exc}"
            ) from exc
        except (Fail, RuntimeError) as exc:
            raise BackendUnavailable(self.name, f"loading model '{record.model_id}' failed: {exc}") from exc
        return OnnxRuntimeSession(self.name, record, session)
