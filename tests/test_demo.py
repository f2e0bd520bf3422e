"""The fleet demo's harness (``controlplane.demo``): a live broker, control plane and agents in
one process, as the demo and end-to-end tests run them; and the demo itself."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from controlplane.demo import Fleet, FleetConfig, FleetStartError
from controlplane.demo.fleet import REPO, WORKFLOW_ID, prepare_workdir
from controlplane.demo.render import decisions_table, rollout_panel
from controlplane.demo.server import ServedControlPlane
from controlplane.demo.story import MODELS, cohort_size, rollout_spec, v2_steps, v3_steps
from controlplane.settings import ControlPlaneSettings
from tests.mosquitto import MosquittoUnavailable, find_mosquitto

MODEL_V1 = REPO / "models" / "surface_inspection_v1.onnx"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    find_mosquitto()
    with Fleet(FleetConfig(tmp_path / "fleet", agents=2, fps=4, telemetry_interval_s=0.5)) as running:
        yield running


def test_two_agents_converge_on_v1_and_report_telemetry(fleet: Fleet) -> None:
    model = fleet.upload_model(MODEL_V1)
    workflow = fleet.upload_workflow()
    thresholds = fleet.create_thresholds("surface", {"default": 0.535})
    fleet.assign_thresholds("surface", thresholds["version"])
    fleet.assign_workflow(WORKFLOW_ID, workflow["version"])

    views = fleet.wait_running(
        workflow_version=workflow["version"], model_sha256=model["sha256"], timeout_s=60
    )
    assert [v.device_id for v in views] == ["cam-1", "cam-2"]
    assert {(v.phase, v.workflow_version, v.model_sha256) for v in views} == {
        ("CONVERGED", 1, model["sha256"])
    }
    assert fleet.wait_runs(8, timeout_s=60) >= 8  # inspections stored by the control plane
    for device_id in fleet.device_ids:  # enrolled with the line's labels, in the line's group
        device, _etag = fleet.api.get_device(device_id)
        assert device["labels"] == {"line": "1", "station": device_id.removeprefix("cam-")}
        assert device["groups"] == ["line-1"]
    credentials = json.loads((fleet.workdir / "agents" / "cam-1" / "credentials.json").read_text())
    assert fleet.broker is not None
    assert (credentials["mqtt"]["host"], credentials["mqtt"]["port"]) == ("127.0.0.1", fleet.broker.port)


def test_stop_leaves_no_process_or_thread_behind(tmp_path: Path) -> None:
    find_mosquitto()
    before = {t.ident for t in threading.enumerate()}
    fleet = Fleet(FleetConfig(tmp_path / "fleet", agents=2, fps=4))
    fleet.start()
    assert fleet.broker is not None
    broker_pid = fleet.broker.pid
    assert (fleet.workdir / "broker" / "mosquitto.pid").read_text().strip() == str(broker_pid)
    url = fleet.url
    fleet.stop()
    fleet.stop()  # idempotent

    assert not _alive(broker_pid) or _zombie(broker_pid)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1).close()
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert not [t.name for t in left if not t.daemon]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return False


def test_a_missing_mosquitto_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(MosquittoUnavailable, match=r"mosquitto is not installed: run ./scripts/setup"):
        find_mosquitto(search_path=str(tmp_path))


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ServedControlPlane(ControlPlaneSettings(data_dir=tmp_path / "cp"), port=port)
        with pytest.raises(FleetStartError, match=f"port {port} on 127.0.0.1 is busy"):
            server.start()


def test_a_foreign_work_directory_is_never_wiped(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FleetStartError, match="not empty"):
        prepare_workdir(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"

    demo_dir = tmp_path / "demo"
    prepare_workdir(demo_dir)
    (demo_dir / "controlplane.db").write_text("an earlier run")
    prepare_workdir(demo_dir)
    assert [p.name for p in demo_dir.iterdir()] == [".edgefleet-demo"]


def test_rollout_steps_follow_the_fleet_size_and_frame_rate() -> None:
    assert [cohort_size(33, n) for n in (1, 3, 6, 20)] == [1, 1, 2, 7]
    shadow, canary, full = v2_steps(6, 4.0)
    assert (shadow["kind"], shadow["devices"], shadow["min_samples"]) == ("shadow", 2, 160)
    assert (canary["kind"], canary["percent"], canary["min_samples"]) == ("canary", 33, 160)
    assert full["kind"] == "full"
    assert [s["kind"] for s in v3_steps()] == ["canary", "full"]
    spec = rollout_spec(3, v3_steps())
    assert spec["target"] == {"group": "line-1"}
    assert spec["bundle"] == {"models": {WORKFLOW_ID: 3}}
    assert all(path.is_file() for path in MODELS.values())


def test_progress_and_summary_render_the_documented_shapes() -> None:
    criteria = [
        {"name": "error_rate", "value": 0.0, "threshold": 0.02, "comparison": "<=", "samples": 180,
         "status": "pass", "detail": ""},
        {"name": "defect_rate_shift", "value": -13.2, "threshold": 5.0, "comparison": "|x| <=",
         "samples": 180, "status": "fail", "detail": ""},
    ]  # fmt: skip
    rollout = {
        "id": "r-3f9a1c2e7b", "state": "running", "step_index": 0,
        "spec": {"steps": [{"kind": "canary"}, {"kind": "full"}]},
        "step": {"kind": "canary", "percent": 33, "duration_s": 20, "min_samples": 300},
        "cohorts": {"canary": ["cam-2", "cam-5"], "baseline": ["cam-1"]},
        "progress": {"devices_total": 6, "devices_on_candidate": 2, "candidate_samples": 180,
                     "baseline_samples": 420},
        "analysis": {"verdict": "wait", "reason": "waiting for candidate 180/300 parts",
                     "criteria": criteria},
    }  # fmt: skip
    decision = {"seq": 2, "step": "canary", "action": "abort", "actor": "controller",
                "reason": "defect rate -13.2 points", "criteria": criteria}  # fmt: skip
    console = Console(record=True, width=200)
    console.print(rollout_panel("v3", rollout))
    console.print(decisions_table([("v3", rollout, [decision])]))
    text = console.export_text()
    expected = [
        "step 1/2 canary",
        "cam-2, cam-5",
        "on candidate 2/6",
        "candidate 180, baseline 420",
        "(min 300)",
        "defect_rate_shift -13.2 pts |x| ≤ 5 (n=180) ✗",
        "abort",
        "controller",
    ]
    assert [e for e in expected if e not in text] == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_demo_promotes_v2_and_aborts_v3_at_canary(tmp_path: Path) -> None:
    """``edgefleet demo`` as shipped: six stations, v2 promoted, v3 aborted at canary and rolled
    back, every decision in the summary, everything stopped afterwards."""
    find_mosquitto()
    from controlplane.demo.story import StoryOptions, run_story

    before = {t.ident for t in threading.enumerate()}
    for attempt in (1, 2):
        console = Console(record=True, width=160)
        code = run_story(StoryOptions(tmp_path / f"fleet-{attempt}"), console)
        text = console.export_text()
        if code == 0 or "✗ v2 promoted (aborted)" not in text:
            break
        # The one documented way for a correct demo to fail (docs/demo.md): v2's cohorts differed
        # by chance, p < 0.01, in 1-2 % of runs. Once more: both runs failing that way is ~1e-4.
    assert code == 0, text
    assert "✓ v2 promoted (promoted)" in text
    assert "✓ v3 aborted at canary (aborted at canary)" in text
    assert "every station back on v2 (INT8): done" in text
    assert "defect_rate_shift" in text  # the criterion that stopped v3, in the summary
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive() and not t.daemon]
    assert left == []
