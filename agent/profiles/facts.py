"""What detection knows about a device: ``DeviceFacts``, built by hand in tests or probed.

``DeviceFacts.probe`` never raises: a file it cannot read or an ``nvidia-smi`` that is
missing, fails or hangs means "not present", and the reason is kept in ``notes``.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NVIDIA_SMI_TIMEOUT_S = 5.0
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}


@dataclass(frozen=True)
class DeviceFacts:
    """The device as detection sees it. ``memory_gb`` is GiB as the kernel reports it
    (``MemTotal``: a little under the module's nominal size); ``device_tree_model`` is None
    off Jetson and other device-tree boards; ``gpu_names`` is empty without an NVIDIA GPU."""

    arch: str
    cpu_cores: int
    memory_gb: float
    device_tree_model: str | None = None
    gpu_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def probe(
        cls,
        root: Path = Path("/"),
        *,
        arch: str | None = None,
        nvidia_smi: str | None = "nvidia-smi",
        timeout_s: float = NVIDIA_SMI_TIMEOUT_S,
    ) -> DeviceFacts:
        """Read the facts of the device whose filesystem is at ``root``.

        Reads ``proc/device-tree/model``, ``proc/cpuinfo`` and ``proc/meminfo`` under
        ``root`` (falling back to ``os.cpu_count()`` and psutil); ``arch`` defaults to this
        machine's. GPU names come from running ``nvidia_smi`` (a name on ``PATH`` or a path;
        None skips it) with a ``timeout_s`` limit."""
        notes: list[str] = []
        gpu_names: tuple[str, ...] = ()
        if nvidia_smi is not None:
            gpu_names = _gpu_names(nvidia_smi, timeout_s, notes)
        return cls(
            arch=normalise_arch(arch or platform.machine()),
            cpu_cores=_cpu_cores(root),
            memory_gb=_memory_gb(root, notes),
            device_tree_model=_device_tree_model(root),
            gpu_names=gpu_names,
            notes=tuple(notes),
        )

    def describe(self) -> str:
        """One line for people: ``x86_64, 8 CPU cores, 15.5 GiB memory, GPU: Tesla T4``."""
        parts = [self.arch, f"{self.cpu_cores} CPU cores", f"{self.memory_gb:.1f} GiB memory"]
        if self.device_tree_model:
            parts.append(f"model '{self.device_tree_model}'")
        parts.append(f"GPU: {', '.join(self.gpu_names)}" if self.gpu_names else "no NVIDIA GPU")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: lists for tuples, memory rounded to 0.01 GiB."""
        data = asdict(self)
        data["memory_gb"] = round(self.memory_gb, 2)
        data["gpu_names"] = list(self.gpu_names)
        data["notes"] = list(self.notes)
        return data


def normalise_arch(machine: str) -> str:
    """``uname -m`` spelling: ``AMD64`` → ``x86_64``, ``arm64`` → ``aarch64``."""
    lowered = machine.strip().lower()
    return _ARCH_ALIASES.get(lowered, lowered)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def _device_tree_model(root: Path) -> str | None:
    text = _read_text(root / "proc" / "device-tree" / "model")
    if text is None:
        return None
    model = text.replace("\x00", " ").strip()
    return model or None


def _cpu_cores(root: Path) -> int:
    text = _read_text(root / "proc" / "cpuinfo")
    if text:
        count = sum(1 for line in text.splitlines() if line.split(":")[0].strip() == "processor")
        if count:
            return count
    return os.cpu_count() or 1


def _memory_gb(root: Path, notes: list[str]) -> float:
    text = _read_text(root / "proc" / "meminfo")
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        if key == "MemTotal":
            fields = value.split()
            if fields and fields[0].isdigit():
                return int(fields[0]) / 2**20  # kB → GiB
    try:
        import psutil
    except ImportError:
        notes.append("memory unknown: no proc/meminfo and psutil is not installed")
        return 0.0
    return float(psutil.virtual_memory().total) / 2**30


def _gpu_names(nvidia_smi: str, timeout_s: float, notes: list[str]) -> tuple[str, ...]:
    executable = shutil.which(nvidia_smi)
    if executable is None:
        notes.append(f"{nvidia_smi} not found: no NVIDIA GPU driver")
        return ()
    try:
        done = subprocess.run(
            [executable, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        notes.append(f"{nvidia_smi} did not answer within {timeout_s:g} s: GPUs ignored")
        return ()
    except (OSError, subprocess.SubprocessError) as exc:
        notes.append(f"{nvidia_smi} could not run: {exc}")
        return ()
    output = done.stdout.decode("utf-8", errors="replace")
    if done.returncode != 0:
        detail = (done.stderr.decode("utf-8", errors="replace").strip() or output.strip())[:200]
        notes.append(f"{nvidia_smi} failed (exit {done.returncode}): {detail or 'no output'}")
        return ()
    return tuple(line.strip() for line in output.splitlines() if line.strip())
