"""TensorRT engines on a real NVIDIA GPU (marked ``gpu``: skipped where there is none)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.inference.backend import BackendOptions
from agent.inference.store import ModelStore
from agent.inference.tensorrt_backend import TensorRTBackend
from tests.inference.onnx_models import affine

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _tensorrt_stack() -> None:
    """Skip, with the reason, on a GPU host without TensorRT or pycuda (the ``jetson`` extra)."""
    try:
        import pycuda.driver as cuda
        import tensorrt  # noqa: F401

        cuda.init()
    except Exception as exc:  # ImportError, or a CUDA driver error
        pytest.skip(f"TensorRT stack missing: {exc}")


@pytest.fixture
def record(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = ModelStore(tmp_path / "store")
    return store.install(affine(tmp_path / "affine.onnx", features=16), "affine", "1")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_cache_and_run(record, tmp_path: Path, precision: str) -> None:  # type: ignore[no-untyped-def]
    backend = TensorRTBackend()
    options = BackendOptions(
        precision=precision, max_batch=8, workspace_mb=256, cache_dir=tmp_path / "engines"
    )
    assert backend.needs_build(record, options)
    session = backend.load(record, options)
    assert not backend.needs_build(record, options)  # cached for the next start
    x = np.arange(3 * 16, dtype=np.float32).reshape(3, 16)
    out = session.run({"x": x})
    np.testing.assert_allclose(out["y"], x * 2 + 1, rtol=1e-2)
    assert out["total"].shape == (3, 1)
    other = BackendOptions(
        precision="int8" if precision == "fp32" else "fp32",
        max_batch=8,
        workspace_mb=256,
        cache_dir=tmp_path / "engines",
    )
    assert backend.key(record, other).digest != backend.key(record, options).digest


def test_int8_calibrates_and_keeps_its_cache(record, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)

    def batches():  # type: ignore[no-untyped-def]
        for _ in range(4):
            yield {"x": rng.normal(size=(8, 16)).astype(np.float32)}

    backend = TensorRTBackend()
    options = BackendOptions(
        precision="int8", max_batch=8, workspace_mb=256, cache_dir=tmp_path / "engines", calibration=batches
    )
    session = backend.load(record, options)
    assert list((tmp_path / "engines").glob("calibration-*.cache"))
    out = session.run({"x": np.ones((2, 16), np.float32)})
    np.testing.assert_allclose(out["y"], 3.0, atol=0.2)
