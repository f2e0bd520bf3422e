"""Where compiled TensorRT engines live, and the key that says when one may be reused.

An engine is only valid for the exact model bytes, TensorRT version, GPU (name and compute
capability), JetPack/L4T release, precision, DLA core and optimisation-profile shapes it was
built for. All of them go into the key; a change of any one is a different file, so nothing
stale is ever loaded. Files are written atomically (temp + fsync + rename).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.fsutil import atomic_write

Shape = tuple[int, ...]


@dataclass(frozen=True)
class EngineKey:
    model_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    l4t_release: str | None
    precision: str
    dla_core: int | None
    profile: tuple[tuple[str, Shape, Shape, Shape], ...]
    """(input, min, opt, max) for every input."""

    @property
    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def describe(self) -> str:
        dla = f", DLA {self.dla_core}" if self.dla_core is not None else ""
        l4t = f", L4T {self.l4t_release}" if self.l4t_release else ""
        return (
            f"model {self.model_sha256[:12]} on {self.gpu_name} (sm {self.compute_capability}{l4t}), "
            f"TensorRT {self.tensorrt_version}, {self.precision}{dla}"
        )


def l4t_release(root: Path = Path("/")) -> str | None:
    """The JetPack/L4T release of a Jetson (``/etc/nv_tegra_release``), else ``None``.

    The file reads like ``# R36 (release), REVISION: 3.0, GCID: …``; the result is ``36.3.0``.
    """
    try:
        first = (root / "etc" / "nv_tegra_release").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    major = first.split("(")[0].strip("# ").lstrip("R").strip()
    revision = first.split("REVISION:")[1].split(",")[0].strip() if "REVISION:" in first else ""
    return f"{major}.{revision}" if revision else major


def batch_profile(
    input_shapes: dict[str, tuple[int | str | None, ...]], max_batch: int
) -> tuple[tuple[str, Shape, Shape, Shape], ...]:
    """Optimisation profile for a dynamic batch axis: min 1, opt and max ``max_batch``.

    Raises ``ValueError`` for a dynamic axis other than the first (give the model fixed sizes).
    """
    profile = []
    for name, shape in sorted(input_shapes.items()):
        rest = shape[1:]
        if any(not isinstance(dim, int) for dim in rest):
            raise ValueError(f"input '{name}' has dynamic dimensions besides the batch: {shape}")
        fixed = tuple(int(d) for d in rest)  # type: ignore[arg-type]
        if isinstance(shape[0], int):
            one = (int(shape[0]), *fixed)
            profile.append((name, one, one, one))
        else:
            profile.append((name, (1, *fixed), (max_batch, *fixed), (max_batch, *fixed)))
    return tuple(profile)


class EngineCache:
    """``<dir>/<key>.engine`` with ``<key>.json`` beside it describing what it was built for;
    ``timing-<gpu>-<trt>.cache`` shared by builds on the same GPU and TensorRT version."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def engine_path(self, key: EngineKey) -> Path:
        return self.directory / f"{key.digest}.engine"

    def load(self, key: EngineKey) -> bytes | None:
        try:
            return self.engine_path(key).read_bytes()
        except FileNotFoundError:
            return None

    def store(self, key: EngineKey, engine: bytes) -> Path:
        path = self.engine_path(key)
        atomic_write(path.with_suffix(".json"), json.dumps(asdict(key), indent=2).encode())
        atomic_write(path, engine)
        return path

    def timing_cache_path(self, key: EngineKey) -> Path:
        gpu = "".join(c if c.isalnum() else "-" for c in key.gpu_name)
        return self.directory / f"timing-{gpu}-sm{key.compute_capability}-trt{key.tensorrt_version}.cache"

    def calibration_cache_path(self, key: EngineKey) -> Path:
        return self.directory / f"calibration-{key.model_sha256[:32]}.cache"

    def read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def write(self, path: Path, data: bytes) -> None:
        atomic_write(path, data)
