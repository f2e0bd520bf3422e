"""The device profile document: hardware, inference defaults, service limits, detection rule.

Every section forbids unknown fields. Checks that span fields or sections (``use_dla`` needs
DLA cores, GPU backends need a GPU, limits must fit the hardware, ...) raise
``FieldProblems``, a ``ValueError`` that keeps the path of each offending field so that the
loader can report ``inference.use_dla`` rather than the whole document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

Arch = Literal["aarch64", "x86_64"]
Backend = Literal["tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu"]
Precision = Literal["fp32", "fp16", "int8"]

PROFILE_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
GPU_BACKENDS: frozenset[str] = frozenset({"tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda"})
TENSORRT_BACKENDS: frozenset[str] = frozenset({"tensorrt", "onnxruntime-tensorrt"})

Loc = tuple[str | int, ...]


class FieldProblems(ValueError):
    """One or more cross-field problems, each located by a path relative to the model."""

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))


def _raise_if(problems: list[tuple[Loc, str]]) -> None:
    if problems:
        raise FieldProblems(problems)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuSpec(_Section):
    """The GPU the profile is written for."""

    name: str = Field(min_length=1, description="Marketing name, e.g. 'Tesla T4' or 'Orin (Ampere)'.")
    vram_gb: float = Field(
        gt=0, description="GPU memory in GiB; on Jetson the memory the GPU shares with the CPU."
    )
    compute_capability: str = Field(
        pattern=r"^[0-9]+\.[0-9]+$", description="CUDA compute capability, e.g. '8.7'."
    )
    shared_memory: bool = Field(
        False, description="True when the GPU uses system memory (Jetson), false for discrete VRAM."
    )


class HardwareSpec(_Section):
    """What the device is. For the fallback profile, the reference box the limits are sized for."""

    arch: Arch = Field(description="CPU architecture as `uname -m` prints it.")
    cpu_cores: int = Field(ge=1, description="CPU cores (logical CPUs).")
    memory_gb: float = Field(gt=0, description="System memory in GiB.")
    gpu: GpuSpec | None = Field(description="The NVIDIA GPU, or null for none.")
    dla_cores: int = Field(0, ge=0, description="NVIDIA Deep Learning Accelerator cores.")

    @model_validator(mode="after")
    def _consistent(self) -> HardwareSpec:
        problems: list[tuple[Loc, str]] = []
        if self.gpu is not None and self.gpu.shared_memory and self.gpu.vram_gb > self.memory_gb:
            problems.append(
                (("gpu", "vram_gb"), f"shared GPU memory ({self.gpu.vram_gb} GiB) exceeds memory_gb")
            )
        if self.dla_cores > 0 and self.gpu is None:
            problems.append((("dla_cores",), "DLA cores need an NVIDIA GPU (gpu is null)"))
        _raise_if(problems)
        return self


class InferenceSpec(_Section):
    """Defaults for inference nodes on the device; a workflow node may override them."""

    backends: list[Backend] = Field(
        min_length=1, description="Backends to try, most preferred first; the first available wins."
    )
    precision: Precision = Field(description="Precision to build or pick engines at.")
    max_batch_size: int = Field(ge=1, le=1024, description="Largest batch dynamic batching forms.")
    max_wait_ms: float = Field(
        ge=0, le=1000, description="How long dynamic batching waits to fill a batch (0: never waits)."
    )
    workspace_mb: int | None = Field(
        None, ge=1, description="TensorRT builder workspace in MiB; needed by TensorRT backends."
    )
    use_dla: bool = Field(False, description="Build TensorRT engines for a DLA core (GPU fallback on).")
    dla_core: int | None = Field(None, ge=0, description="The DLA core to use; set exactly when use_dla.")
    cpu_threads: int | None = Field(
        None, ge=1, description="Threads for CPU inference; null leaves the library's default."
    )
    cpu_spin_wait: bool = Field(
        False,
        description=(
            "Let CPU inference threads spin between operators instead of sleeping: lower latency "
            "for a single stream on otherwise idle cores, CPU taken from decoding and the other "
            "workers when several runs share the cores (docs/benchmarks.md)."
        ),
    )

    @field_validator("backends")
    @classmethod
    def _unique(cls, value: list[Backend]) -> list[Backend]:
        repeated = sorted({b for b in value if value.count(b) > 1})
        if repeated:
            raise ValueError(f"backends must be unique; repeated: {', '.join(repeated)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> InferenceSpec:
        problems: list[tuple[Loc, str]] = []
        if self.use_dla and self.dla_core is None:
            problems.append((("dla_core",), "use_dla is true: choose a dla_core (0 or 1)"))
        if not self.use_dla and self.dla_core is not None:
            problems.append((("dla_core",), "dla_core only applies when use_dla is true"))
        if self.use_dla and not TENSORRT_BACKENDS & set(self.backends):
            problems.append(
                (("use_dla",), "DLA runs only through TensorRT: list tensorrt or onnxruntime-tensorrt")
            )
        if TENSORRT_BACKENDS & set(self.backends) and self.workspace_mb is None:
            problems.append((("workspace_mb",), "a TensorRT backend is listed: set workspace_mb"))
        _raise_if(problems)
        return self


class ServiceLimits(_Section):
    """Resource limits written into the agent's systemd unit."""

    memory_max_mb: int = Field(ge=64, description="MemoryMax= in MiB: the kernel kills the service above it.")
    memory_high_mb: int = Field(ge=64, description="MemoryHigh= in MiB: reclaim pressure starts above it.")
    cpu_quota_percent: int = Field(ge=1, description="CPUQuota= in percent of one core (400 = 4 cores).")
    tasks_max: int = Field(ge=16, description="TasksMax=: threads and processes the service may have.")

    @model_validator(mode="after")
    def _consistent(self) -> ServiceLimits:
        if self.memory_high_mb > self.memory_max_mb:
            raise FieldProblems([(("memory_high_mb",), "must not exceed memory_max_mb")])
        return self


class DetectRule(_Section):
    """When this profile fits a device. Every rule that is set must hold; among the profiles
    that fit, the highest ``priority`` wins. Text rules match case-insensitively on word
    boundaries ('L4' matches 'NVIDIA L4', not 'NVIDIA L40S')."""

    priority: int = Field(ge=0, description="Higher wins among matching profiles; unique per directory.")
    fallback: bool = Field(
        False, description="Use this profile when no profile matches; exactly one per directory."
    )
    device_tree_model: str | None = Field(
        None, min_length=1, description="Words in /proc/device-tree/model, e.g. 'Orin Nano'."
    )
    gpu_name: str | None = Field(
        None, min_length=1, description="Words in a GPU name from nvidia-smi, e.g. 'T4'."
    )
    arch: Arch | None = Field(None, description="Required CPU architecture.")
    min_memory_gb: float | None = Field(
        None, gt=0, description="Least system memory in GiB, as the kernel reports it (MemTotal)."
    )

    @model_validator(mode="after")
    def _has_a_rule(self) -> DetectRule:
        rules = (self.device_tree_model, self.gpu_name, self.arch, self.min_memory_gb)
        if not self.fallback and all(rule is None for rule in rules):
            raise ValueError(
                "set at least one of device_tree_model, gpu_name, arch, min_memory_gb "
                "(or fallback: true), or the profile would match every device"
            )
        return self


class Profile(BaseModel):
    """One device profile (one file of ``device_profiles/``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="edgefleet device profile")

    name: str = Field(pattern=PROFILE_NAME_PATTERN, description="Unique name, e.g. 'jetson-orin-nano-8gb'.")
    description: str = Field(min_length=1, description="One line for people.")
    hardware: HardwareSpec
    inference: InferenceSpec
    service: ServiceLimits
    detect: DetectRule

    _source: Path | None = PrivateAttr(None)

    @property
    def source(self) -> Path | None:
        """The file the profile was loaded from, if any."""
        return self._source

    @model_validator(mode="after")
    def _fits_hardware(self) -> Profile:
        hw, inf, svc, det = self.hardware, self.inference, self.service, self.detect
        problems: list[tuple[Loc, str]] = []
        if det.arch is not None and det.arch != hw.arch:
            problems.append((("detect", "arch"), f"'{det.arch}' differs from hardware.arch '{hw.arch}'"))
        if det.gpu_name is not None and hw.gpu is None:
            problems.append((("detect", "gpu_name"), "a GPU rule on a profile whose hardware.gpu is null"))
        gpu_backends = [b for b in inf.backends if b in GPU_BACKENDS]
        if gpu_backends and hw.gpu is None:
            problems.append(
                (("inference", "backends"), f"{', '.join(gpu_backends)} need a GPU; hardware.gpu is null")
            )
        if inf.use_dla and hw.dla_cores == 0:
            problems.append((("inference", "use_dla"), "use_dla needs DLA cores; hardware.dla_cores is 0"))
        elif inf.dla_core is not None and inf.dla_core >= hw.dla_cores:
            problems.append(
                (
                    ("inference", "dla_core"),
                    f"DLA core {inf.dla_core} does not exist (dla_cores: {hw.dla_cores})",
                )
            )
        if inf.workspace_mb is not None and hw.gpu is not None and inf.workspace_mb > hw.gpu.vram_gb * 1024:
            problems.append((("inference", "workspace_mb"), f"exceeds the GPU's {hw.gpu.vram_gb} GiB"))
        if inf.cpu_threads is not None and inf.cpu_threads > hw.cpu_cores:
            problems.append((("inference", "cpu_threads"), f"exceeds hardware.cpu_cores ({hw.cpu_cores})"))
        if svc.memory_max_mb > hw.memory_gb * 1024:
            problems.append(
                (("service", "memory_max_mb"), f"exceeds hardware.memory_gb ({hw.memory_gb} GiB)")
            )
        if svc.cpu_quota_percent > hw.cpu_cores * 100:
            problems.append(
                (("service", "cpu_quota_percent"), f"exceeds {hw.cpu_cores} cores ({hw.cpu_cores * 100}%)")
            )
        _raise_if(problems)
        return self
