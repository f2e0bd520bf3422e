"""How ``edgefleet-agent profile`` shows a ``Detection``: text for people, JSON for scripts."""

from __future__ import annotations

from typing import Any

from agent.profiles.detect import Detection


def render_text(detection: Detection) -> str:
    """The chosen profile, why, the device, and the profile's inference defaults and limits."""
    profile = detection.profile
    hw, inf, svc = profile.hardware, profile.inference, profile.service
    gpu = "none"
    if hw.gpu is not None:
        memory = "shared" if hw.gpu.shared_memory else "VRAM"
        gpu = f"{hw.gpu.name}, {hw.gpu.vram_gb:g} GiB {memory}, compute {hw.gpu.compute_capability}"
    dla = f"on, core {inf.dla_core}" if inf.use_dla else "off"
    lines = [
        f"profile: {profile.name} — {profile.description}",
        f"file: {profile.source or '-'}",
        "why:",
        *(f"  {reason}" for reason in detection.reasons),
    ]
    if detection.facts is not None:
        lines.append(f"this device: {detection.facts.describe()}")
    lines += [
        f"written for: {hw.arch}, {hw.cpu_cores} CPU cores, {hw.memory_gb:g} GiB, GPU: {gpu}, "
        f"DLA cores: {hw.dla_cores}",
        "inference defaults:",
        f"  backends:       {', '.join(inf.backends)}",
        f"  precision:      {inf.precision}",
        f"  max_batch_size: {inf.max_batch_size}",
        f"  max_wait_ms:    {inf.max_wait_ms:g}",
        f"  workspace_mb:   {inf.workspace_mb if inf.workspace_mb is not None else '-'}",
        f"  dla:            {dla} ({hw.dla_cores} available)",
        f"  cpu_threads:    {inf.cpu_threads if inf.cpu_threads is not None else 'library default'}",
        f"  cpu_spin_wait:  {'on' if inf.cpu_spin_wait else 'off'}",
        f"service limits: MemoryMax={svc.memory_max_mb}M MemoryHigh={svc.memory_high_mb}M "
        f"CPUQuota={svc.cpu_quota_percent}% TasksMax={svc.tasks_max}",
    ]
    return "\n".join(lines)


def render_json(detection: Detection) -> dict[str, Any]:
    """The detection (``profile`` is the name) plus the whole profile under ``settings``."""
    return {**detection.to_dict(), "settings": detection.profile.model_dump(mode="json")}
