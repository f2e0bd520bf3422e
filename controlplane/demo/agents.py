"""How the demo's agents are configured: what an ``agent.yaml`` of a managed camera station says.

Every agent of the demo shares the process (and the machine's cores) with the others, so it runs
the device profile ``edge-sim``: the bundled ``x86-cpu`` profile with ONNX Runtime held to one
intra-op thread (its default, a thread per core in every session, makes N agents fight over the
cores). The profile is written into the work directory and named explicitly, so detection never
runs.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from agent.config import AgentSettings, load_settings
from agent.profiles import bundled_profiles_dir

__all__ = ["PROFILE", "agent_settings", "write_demo_profile"]

PROFILE = "edge-sim"


def write_demo_profile(directory: Path) -> Path:
    """Write the ``edge-sim`` profile into ``directory`` (the only profile there); returns it."""
    base = yaml.safe_load((bundled_profiles_dir() / "x86-cpu.yaml").read_text(encoding="utf-8"))
    base["name"] = PROFILE
    base["description"] = "x86-cpu for an agent sharing its machine with others: one inference thread"
    base["inference"]["cpu_threads"] = 1
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{PROFILE}.yaml").write_text(yaml.safe_dump(base, sort_keys=False), encoding="utf-8")
    return directory


def agent_settings(
    device_id: str,
    data_dir: Path,
    *,
    profiles_dir: Path,
    workflow_id: str,
    fps: float,
    seed: int,
    defect_rate: float,
    telemetry_interval_s: float,
) -> AgentSettings:
    """A managed station: enrolled credentials in ``data_dir``, broker and control plane from
    them, a synthetic camera (``fps``, ``seed``, ``defect_rate``) feeding ``workflow_id`` once the
    control plane delivers it, one run in flight, a queue of 4 that drops the oldest frame.

    The device API and the metrics endpoint are off: many stations share this process (and a
    machine's port 9464), and the fleet is watched through the control plane."""
    return load_settings(
        None,
        device_id=device_id,
        data_dir=data_dir,
        profile=PROFILE,
        profiles_dir=profiles_dir,
        workflows=[
            {
                "workflow": workflow_id,
                "workers": 1,
                "queue": {"size": 4, "policy": "drop_oldest"},
                "sources": [{"type": "synthetic", "fps": fps, "seed": seed, "defect_rate": defect_rate}],
            }
        ],
        device_api={"enabled": False},
        metrics={"enabled": False},
        sync={
            "telemetry_interval_s": telemetry_interval_s,
            "keepalive_s": 10,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 2.0,
        },
    )
