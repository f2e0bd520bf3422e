"""The agent on a real NVIDIA GPU host (marked ``gpu``: skipped where NVML finds no GPU).

These need the driver alone, not TensorRT: the profile detected from the real ``nvidia-smi``,
GPU telemetry and ``/metrics`` through NVML, and the reference model served by the first
backend of the profile's order that this host can run, with the others skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.inference.backend import BackendOptions
from agent.inference.backends import make_backends
from agent.inference.runtime import ModelRuntime
from agent.inference.store import ModelStore
from agent.metrics import AgentMetrics
from agent.profiles import DeviceFacts, bundled_profiles_dir, load_profiles, select_profile
from agent.sync.telemetry import SystemProbe
from tests.test_metrics import samples, scrape

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parent.parent


def test_the_gpu_gets_a_gpu_profile_with_the_reason() -> None:
    facts = DeviceFacts.probe()
    assert facts.gpu_names, facts.notes
    detection = select_profile(load_profiles(bundled_profiles_dir()), facts, None)
    assert detection.profile.hardware.gpu is not None, detection.reasons
    assert detection.profile.inference.backends[0] == "tensorrt"
    assert any(f"GPU '{facts.gpu_names[0]}' matches" in reason for reason in detection.reasons)


def test_nvml_samples_every_gpu_that_nvidia_smi_lists(tmp_path: Path) -> None:
    probe = SystemProbe(tmp_path)
    try:
        gpus = probe.sample().gpus
    finally:
        probe.close()
    assert [gpu.name for gpu in gpus] == list(DeviceFacts.probe().gpu_names)
    for gpu in gpus:
        assert 0 < gpu.memory_used_bytes < gpu.memory_total_bytes
        assert 0 <= gpu.utilization_percent <= 100
        assert 0 < gpu.temperature_c < 120


def test_metrics_expose_each_gpu(tmp_path: Path) -> None:
    probe = SystemProbe(tmp_path)
    metrics = AgentMetrics(probe=probe)
    try:
        values = samples(scrape(metrics))
    finally:
        metrics.close()
        probe.close()
    for name in DeviceFacts.probe().gpu_names:
        labels = (("gpu", name),)
        assert values[("edgefleet_gpu_memory_bytes", labels)] > 0
        assert 0 <= values[("edgefleet_gpu_utilization_ratio", labels)] <= 1
        assert ("edgefleet_gpu_temperature_celsius", labels) in values


def test_the_reference_model_is_served_by_the_first_backend_this_host_runs(tmp_path: Path) -> None:
    profile = select_profile(load_profiles(bundled_profiles_dir()), DeviceFacts.probe(), None).profile
    backends = make_backends(profile.inference.backends)
    missing = {b.name for b in backends if b.unavailable_reason() is not None}
    store = ModelStore(tmp_path / "models")
    record = store.install(REPO / "models" / "surface_inspection_v1.onnx", "surface_inspection", "1")
    options = BackendOptions(precision="fp32", max_batch=1, workspace_mb=256, cache_dir=tmp_path / "engines")
    runtime = ModelRuntime(store, backends, options)
    try:
        served = runtime.get("surface_inspection")
        runtime.wait_for_builds(timeout=600)
        first_runnable = next(b.name for b in backends if b.name not in missing)
        assert served.status()["backend"] == first_runnable
        assert runtime.fallbacks == dict.fromkeys(missing, 1)
        (spec,) = record.inputs  # one image, without the batch axis the batcher adds
        image = np.random.default_rng(7).random([int(d) for d in spec.shape[1:]], dtype=np.float32)
        outputs = served.infer({spec.name: image}, timeout=60)
        assert all(np.isfinite(value).all() for value in outputs.values())
    finally:
        runtime.close()
