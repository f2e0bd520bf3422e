"""Native TensorRT engines for Jetson and NVIDIA GPUs (extra ``jetson``: tensorrt, pycuda).

Build: parse the ONNX file, set FP16 or INT8 (an entropy calibrator fed from sample batches,
with a calibration cache), an optimisation profile for the dynamic batch axis, DLA when the
profile asks, and a timing cache; the serialised engine goes into the ``EngineCache`` under a
key of everything it depends on. Run: pycuda with page-locked host buffers, device buffers and
one CUDA stream per session, on the device's primary context (pushed around each call, so any
thread may build or run).

``tensorrt`` and ``pycuda`` are imported only here; their errors become
``agent.inference.errors``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.inference.backend import BackendOptions
from agent.inference.engine_cache import EngineCache, EngineKey, batch_profile, l4t_release
from agent.inference.errors import BackendUnavailable, InferenceFailed, InputMismatch, ModelFormatError
from agent.inference.store import ModelRecord, TensorSpec

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
DEFAULT_CACHE = Path("/var/lib/edgefleet/engines")


class _Gpu:
    """The CUDA device and its primary context, shared by every session of the process."""

    _lock = threading.Lock()
    _instance: _Gpu | None = None

    def __init__(self) -> None:
        import pycuda.driver as cuda

        cuda.init()
        self.device = cuda.Device(0)
        self.context = self.device.retain_primary_context()
        self.name = str(self.device.name())
        major, minor = self.device.compute_capability()
        self.compute_capability = f"{major}.{minor}"

    @classmethod
    def get(cls) -> _Gpu:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __enter__(self) -> _Gpu:
        self.context.push()
        return self

    def __exit__(self, *exc: object) -> None:
        import pycuda.driver as cuda

        cuda.Context.pop()


def _trt_logger() -> Any:
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def _make_calibrator(
    batches: Callable[[], Iterator[Mapping[str, np.ndarray]]], cache_path: Path, max_batch: int
) -> Any:
    """An ``IInt8EntropyCalibrator2`` reading batches from ``batches()`` and keeping its cache
    at ``cache_path`` (so a rebuild does not calibrate again)."""
    import pycuda.driver as cuda
    import tensorrt as trt

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._batches = iter(batches())
            self._device: dict[str, Any] = {}
            self._keep: list[Any] = []

        def get_batch_size(self) -> int:
            return max_batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            import numpy as np

            try:
                batch = next(self._batches)
            except StopIteration:
                return None
            pointers = []
            for name in names:
                host = np.ascontiguousarray(batch[name])
                if name not in self._device:
                    self._device[name] = cuda.mem_alloc(host.nbytes)
                cuda.memcpy_htod(self._device[name], host)
                pointers.append(int(self._device[name]))
            return pointers

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.exists() else None

        def write_calibration_cache(self, cache: Any) -> None:
            from agent.fsutil import atomic_write

            atomic_write(cache_path, bytes(cache))

    return EntropyCalibrator()


class TensorRTSession:
    """One engine, one execution context, one stream; calls are serialised (a context runs one
    batch at a time)."""

    def __init__(self, record: ModelRecord, engine_bytes: bytes, gpu: _Gpu, max_batch: int) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        self.backend = "tensorrt"
        self.record = record
        self.inputs: tuple[TensorSpec, ...] = record.inputs
        self.outputs: tuple[TensorSpec, ...] = record.outputs
        self._gpu = gpu
        self._lock = threading.Lock()
        with gpu:
            self._runtime = trt.Runtime(_trt_logger())
            self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
            if self._engine is None:
                raise BackendUnavailable(
                    "tensorrt", f"engine for '{record.model_id}' could not be deserialised"
                )
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            self._is_input = {
                n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in self._names
            }
            self._dtype = {n: trt.nptype(self._engine.get_tensor_dtype(n)) for n in self._names}
            self._host: dict[str, Any] = {}
            self._device: dict[str, Any] = {}
            self._capacity: dict[str, int] = {}
        self._max_batch = max_batch

    def _buffers(self, name: str, shape: tuple[int, ...]) -> tuple[Any, Any]:
        """Page-locked host and device buffers for ``name`` at least ``shape`` large (grown,
        never shrunk)."""
        import numpy as np
        import pycuda.driver as cuda

        size = int(np.prod(shape))
        if self._capacity.get(name, 0) < size:
            self._host[name] = cuda.pagelocked_empty(size, self._dtype[name])
            self._device[name] = cuda.mem_alloc(self._host[name].nbytes)
            self._capacity[name] = size
        return self._host[name], self._device[name]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np
        import pycuda.driver as cuda

        with self._lock, self._gpu:
            try:
                for name in (n for n in self._names if self._is_input[n]):
                    array = np.ascontiguousarray(feeds[name], dtype=self._dtype[name])
                    if array.shape[0] > self._max_batch:
                        raise InputMismatch(
                            f"batch of {array.shape[0]} exceeds the engine's {self._max_batch}"
                        )
                    if not self._context.set_input_shape(name, array.shape):
                        raise InputMismatch(
                            f"input '{name}' shape {array.shape} is outside the engine's profile"
                        )
                    host, device = self._buffers(name, array.shape)
                    host[: array.size] = array.reshape(-1)
                    cuda.memcpy_htod_async(device, host, self._stream)
                    self._context.set_tensor_address(name, int(device))
                shapes = {}
                for name in (n for n in self._names if not self._is_input[n]):
                    shape = tuple(self._context.get_tensor_shape(name))
                    shapes[name] = shape
                    _, device = self._buffers(name, shape)
                    self._context.set_tensor_address(name, int(device))
                if not self._context.execute_async_v3(self._stream.handle):
                    raise InferenceFailed(f"TensorRT execution of '{self.record.model_id}' failed")
                results = {}
                for name, shape in shapes.items():
                    host, device = self._buffers(name, shape)
                    cuda.memcpy_dtoh_async(host, device, self._stream)
                    results[name] = host
                self._stream.synchronize()
                return {
                    name: np.array(results[name][: int(np.prod(shape))]).reshape(shape)
                    for name, shape in shapes.items()
                }
            except cuda.Error as exc:
                raise InferenceFailed(f"CUDA error running '{self.record.model_id}': {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._host.clear()
            self._device.clear()


class TensorRTBackend:
    """Builds (once, into the cache) and serves native TensorRT engines."""

    name = "tensorrt"

    def unavailable_reason(self) -> str | None:
        try:
            import pycuda.driver  # noqa: F401
            import tensorrt  # noqa: F401
        except ImportError as exc:
            return f"{exc.name or 'tensorrt/pycuda'} is not installed (install the 'jetson' extra)"
        try:
            _Gpu.get()
        except Exception as exc:  # noqa: BLE001 - any CUDA start-up failure means: not here
            return f"no usable CUDA device: {exc}"
        return None

    def key(self, record: ModelRecord, options: BackendOptions) -> EngineKey:
        import tensorrt as trt

        gpu = _Gpu.get()
        try:
            profile = batch_profile({spec.name: spec.shape for spec in record.inputs}, options.max_batch)
        except ValueError as exc:
            raise ModelFormatError(f"model '{record.model_id}': {exc}") from exc
        return EngineKey(
            model_sha256=record.sha256,
            tensorrt_version=str(trt.__version__),
            gpu_name=gpu.name,
            compute_capability=gpu.compute_capability,
            l4t_release=l4t_release(),
            precision=options.precision,
            dla_core=options.dla_core if options.use_dla else None,
            profile=profile,
        )

    def _cache(self, options: BackendOptions) -> EngineCache:
        return EngineCache(options.cache_dir or DEFAULT_CACHE)

    def needs_build(self, record: ModelRecord, options: BackendOptions) -> bool:
        return not self._cache(options).engine_path(self.key(record, options)).exists()

    def load(self, record: ModelRecord, options: BackendOptions) -> TensorRTSession:
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(self.name, reason)
        cache = self._cache(options)
        key = self.key(record, options)
        engine = cache.load(key)
        if engine is None:
            log.info("building TensorRT engine: %s", key.describe())
            engine = self.build(record, options, key, cache)
            cache.store(key, engine)
            log.info("TensorRT engine ready: %s", cache.engine_path(key))
        return TensorRTSession(record, engine, _Gpu.get(), options.max_batch)

    def build(
        self, record: ModelRecord, options: BackendOptions, key: EngineKey, cache: EngineCache
    ) -> bytes:
        """Compile the engine (minutes on a Jetson). Raises ``ModelFormatError`` when the ONNX
        file does not parse, ``BackendUnavailable`` when the build fails."""
        import tensorrt as trt

        logger = _trt_logger()
        with _Gpu.get():
            builder = trt.Builder(logger)
            major = int(str(trt.__version__).split(".")[0])
            flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
            network = builder.create_network(flags)
            parser = trt.OnnxParser(network, logger)
            if not parser.parse(record.path.read_bytes()):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise ModelFormatError(f"TensorRT cannot parse model '{record.model_id}': {errors}")
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
            profile = builder.create_optimization_profile()
            for name, low, opt, high in key.profile:
                profile.set_shape(name, low, opt, high)
            config.add_optimization_profile(profile)
            if options.precision in ("fp16", "int8"):
                config.set_flag(trt.BuilderFlag.FP16)
            if options.precision == "int8":
                if options.calibration is None:
                    raise BackendUnavailable(
                        self.name, "INT8 needs calibration batches (options.calibration)"
                    )
                config.set_flag(trt.BuilderFlag.INT8)
                config.int8_calibrator = _make_calibrator(
                    options.calibration, cache.calibration_cache_path(key), options.max_batch
                )
                config.set_calibration_profile(profile)
            if options.use_dla:
                config.default_device_type = trt.DeviceType.DLA
                config.DLA_core = options.dla_core
                config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
            timing_path = cache.timing_cache_path(key)
            timing = config.create_timing_cache(cache.read(timing_path) or b"")
            config.set_timing_cache(timing, ignore_mismatch=False)
            serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                raise BackendUnavailable(self.name, f"engine build for '{record.model_id}' failed (see log)")
            cache.write(timing_path, bytes(config.get_timing_cache().serialize()))
            return bytes(serialized)
