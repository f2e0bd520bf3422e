"""ONNX Runtime backend, dynamic batching, backend fallback and background engine builds."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from agent.inference.backend import BackendOptions
from agent.inference.batcher import DynamicBatcher
from agent.inference.errors import BackendUnavailable, InferenceFailed, InputMismatch
from agent.inference.onnxruntime_backend import OnnxRuntimeBackend
from agent.inference.runtime import ModelRuntime
from agent.inference.store import ModelRecord, ModelStore
from tests.inference.onnx_models import affine


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "store")
    store.install(affine(tmp_path / "affine.onnx"), "affine", "1")
    return store


def test_onnxruntime_cpu_runs_a_batch(store: ModelStore) -> None:
    session = OnnxRuntimeBackend().load(store.resolve("affine"), BackendOptions())
    out = session.run({"x": np.ones((3, 4), np.float32)})
    assert out["y"].shape == (3, 4)
    np.testing.assert_allclose(out["y"], 3.0)
    np.testing.assert_allclose(out["total"], [[12.0]] * 3)


@pytest.mark.parametrize(("spin", "entry"), [(False, "0"), (True, "1")])
def test_cpu_threads_sleep_between_operators_unless_the_profile_says_spin(
    store: ModelStore, spin: bool, entry: str
) -> None:
    session = OnnxRuntimeBackend().load(store.resolve("affine"), BackendOptions(cpu_spin_wait=spin))
    options = session._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == entry


def test_gpu_providers_say_why_they_are_unavailable_on_a_cpu_build() -> None:
    reason = OnnxRuntimeBackend("onnxruntime-cuda").unavailable_reason()
    assert reason is not None
    assert "CUDAExecutionProvider" in reason


def test_batcher_checks_names_dtypes_and_shapes(store: ModelStore) -> None:
    session = OnnxRuntimeBackend().load(store.resolve("affine"), BackendOptions())
    batcher = DynamicBatcher(session, model="affine", max_batch=1)
    assert batcher.infer({"x": np.arange(4, dtype=np.float32)})["y"].tolist() == [1, 3, 5, 7]
    assert batcher.infer({"x": np.ones((1, 4), np.float32)})["y"].shape == (4,)  # a batch of one is fine
    with pytest.raises(InputMismatch, match="missing \\['x'\\], unexpected \\['image'\\]"):
        batcher.infer({"image": np.ones(4, np.float32)})
    with pytest.raises(InputMismatch, match="expects float32, got float64"):
        batcher.infer({"x": np.ones(4)})
    with pytest.raises(InputMismatch, match="expects shape 4 per sample, got 5"):
        batcher.infer({"x": np.ones(5, np.float32)})


def test_concurrent_requests_are_batched_and_each_gets_its_own_result(store: ModelStore) -> None:
    session = OnnxRuntimeBackend().load(store.resolve("affine"), BackendOptions())
    batcher = DynamicBatcher(session, model="affine", max_batch=8, max_wait_ms=200)
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(8)

    def call(i: int) -> None:
        start.wait()
        results[i] = batcher.infer({"x": np.full(4, i, np.float32)})["y"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert {i: r.tolist() for i, r in results.items()} == {i: [2.0 * i + 1] * 4 for i in range(8)}
    assert batcher.samples == 8
    assert batcher.batches < 8  # coalesced
    assert max(batcher.batch_sizes) > 1


def test_a_lone_request_waits_at_most_max_wait(store: ModelStore) -> None:
    session = OnnxRuntimeBackend().load(store.resolve("affine"), BackendOptions())
    batcher = DynamicBatcher(session, model="affine", max_batch=8, max_wait_ms=20)
    assert batcher.infer({"x": np.zeros(4, np.float32)}, timeout=10)["y"].tolist() == [1, 1, 1, 1]
    batcher.close()
    assert batcher.batch_sizes == {1: 1}


class BrokenSession:
    backend = "broken"

    def __init__(self, record: ModelRecord) -> None:
        self.inputs = record.inputs
        self.outputs = record.outputs

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("device lost")

    def close(self) -> None:
        pass


def test_a_backend_failure_reaches_every_caller_of_the_batch_and_the_batcher_survives(
    store: ModelStore,
) -> None:
    batcher = DynamicBatcher(
        BrokenSession(store.resolve("affine")), model="affine", max_batch=4, max_wait_ms=1
    )
    for _ in range(2):
        with pytest.raises(InferenceFailed, match="device lost"):
            batcher.infer({"x": np.zeros(4, np.float32)}, timeout=10)
    batcher.close()


class FakeBackend:
    """Pure-unit stand-in for a GPU backend: unavailable, or slow to build, or failing."""

    def __init__(
        self, name: str, *, reason: str | None = None, build_s: float = 0.0, fail: bool = False
    ) -> None:
        self.name = name
        self.reason = reason
        self.build_s = build_s
        self.fail = fail
        self.built = threading.Event()

    def unavailable_reason(self) -> str | None:
        return self.reason

    def needs_build(self, record: ModelRecord, options: BackendOptions) -> bool:
        return self.build_s > 0

    def load(self, record: ModelRecord, options: BackendOptions) -> object:
        time.sleep(self.build_s)
        if self.fail:
            raise BackendUnavailable(self.name, "engine build ran out of workspace")
        session = OnnxRuntimeBackend().load(record, options)
        session.backend = self.name
        self.built.set()
        return session


def test_missing_backends_fall_back_in_profile_order_with_one_log_line(
    store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = ModelRuntime(
        store, [FakeBackend("tensorrt", reason="tensorrt is not installed"), OnnxRuntimeBackend()]
    )
    with caplog.at_level(logging.WARNING):
        served = runtime.get("affine")
    assert served.backend == "onnxruntime-cpu"
    assert runtime.fallbacks == {"tensorrt": 1}
    assert [r.message for r in caplog.records] == [
        "model affine: backend tensorrt skipped: tensorrt is not installed"
    ]
    runtime.close()


def test_an_engine_build_never_blocks_serving(store: ModelStore) -> None:
    slow = FakeBackend("tensorrt", build_s=0.5)
    runtime = ModelRuntime(store, [slow, OnnxRuntimeBackend()], BackendOptions(max_batch=1))
    started = time.monotonic()
    served = runtime.get("affine")
    assert time.monotonic() - started < 0.5  # served before the build finished
    assert served.backend == "onnxruntime-cpu"
    assert served.status()["builds"][0]["state"] == "building"
    answers = []
    while not slow.built.is_set():  # keeps answering during the build
        answers.append(served.infer({"x": np.ones(4, np.float32)})["y"][0])
    runtime.wait_for_builds(10)
    assert served.backend == "tensorrt"
    assert served.status()["builds"][0]["state"] == "ready"
    assert served.infer({"x": np.ones(4, np.float32)})["y"][0] == 3.0
    assert answers
    assert set(answers) == {3.0}
    runtime.close()


def test_a_failed_build_leaves_the_fallback_serving(store: ModelStore) -> None:
    runtime = ModelRuntime(store, [FakeBackend("tensorrt", build_s=0.05, fail=True), OnnxRuntimeBackend()])
    served = runtime.get("affine")
    runtime.wait_for_builds(10)
    assert served.backend == "onnxruntime-cpu"
    build = served.status()["builds"][0]
    assert build["state"] == "failed"
    assert "workspace" in build["error"]
    runtime.close()


def test_no_backend_at_all_is_a_clear_error(store: ModelStore) -> None:
    runtime = ModelRuntime(store, [FakeBackend("tensorrt", reason="no GPU"), FakeBackend("x", reason="nope")])
    with pytest.raises(BackendUnavailable, match="tensorrt: no GPU; x: nope"):
        runtime.get("affine")
