"""The TensorRT engine cache key: every input it depends on changes the file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.inference.engine_cache import EngineCache, EngineKey, batch_profile, l4t_release

KEY = EngineKey(
    model_sha256="a" * 64,
    tensorrt_version="10.3.0",
    gpu_name="Orin",
    compute_capability="8.7",
    l4t_release="36.3.0",
    precision="fp16",
    dla_core=None,
    profile=batch_profile({"image": ("batch", 3, 224, 224)}, 8),
)


@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": "b" * 64},
        {"tensorrt_version": "10.4.0"},
        {"gpu_name": "Tesla T4"},
        {"compute_capability": "7.5"},
        {"l4t_release": "36.4.0"},
        {"precision": "int8"},
        {"dla_core": 0},
        {"profile": batch_profile({"image": ("batch", 3, 224, 224)}, 16)},
    ],
)
def test_any_change_is_a_different_engine(change: dict[str, object]) -> None:
    assert dataclasses.replace(KEY, **change).digest != KEY.digest  # type: ignore[arg-type]


def test_same_inputs_same_key() -> None:
    assert dataclasses.replace(KEY).digest == KEY.digest


def test_batch_profile() -> None:
    assert batch_profile({"image": ("batch", 3, 224, 224)}, 8) == (
        ("image", (1, 3, 224, 224), (8, 3, 224, 224), (8, 3, 224, 224)),
    )
    assert batch_profile({"x": (1, 4)}, 8) == (("x", (1, 4), (1, 4), (1, 4)),)
    with pytest.raises(ValueError, match="dynamic dimensions besides the batch"):
        batch_profile({"image": ("batch", 3, "height", "width")}, 8)


def test_l4t_release_is_read_from_nv_tegra_release(tmp_path: Path) -> None:
    assert l4t_release(tmp_path) is None
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text(
        "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64\n"
    )
    assert l4t_release(tmp_path) == "36.3.0"


def test_cache_round_trip_is_atomic(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    assert cache.load(KEY) is None
    path = cache.store(KEY, b"engine-bytes")
    assert cache.load(KEY) == b"engine-bytes"
    assert path.with_suffix(".json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.with_suffix(".json").name])
    assert "sm8.7" in cache.timing_cache_path(KEY).name
