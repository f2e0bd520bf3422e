"""The agent process: settings, sources → runs → results, orderly stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agent.config import load_settings
from agent.daemon import Agent
from agent.workflow import SpecError

FRAME_WORKFLOW = {
    "id": "frame_log",
    "nodes": [
        {
            "id": "facts",
            "type": "transform",
            "config": {"output": {"seq": "$.frame.seq", "source": "$.frame.source"}},
        },
        {"id": "gate", "type": "threshold", "config": {"score": "$.frame.seq", "threshold_set": "seq"}},
    ],
    "edges": [{"source": "facts", "target": "gate"}],
}


def write_config(tmp_path: Path, **extra: object) -> Path:
    (tmp_path / "frame_log.json").write_text(json.dumps(FRAME_WORKFLOW))
    config = {
        "device_id": "test-cam",
        "data_dir": "data",
        "profile": "x86-cpu",
        "thresholds": {"seq": {"default": 10}},
        "results_jsonl": "results.jsonl",
        "workflows": [
            {
                "file": "frame_log.json",
                "workers": 2,
                "queue": {"size": 4, "policy": "block"},
                "sources": [{"type": "synthetic", "count": 25, "encode": "raw"}],
            }
        ],
        **extra,
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_settings_resolve_paths_relative_to_the_file_and_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path)
    monkeypatch.setenv("EDGEFLEET_DEVICE_ID", "from-env")
    settings = load_settings(path)
    assert settings.device_id == "from-env"
    assert settings.data_dir == tmp_path / "data"
    assert settings.workflows[0].file == tmp_path / "frame_log.json"
    assert load_settings(path, device_id="from-args").device_id == "from-args"


def test_bad_config_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "agent.yaml"
    bad.write_text("device_id: x\nworkflows: [\n")
    with pytest.raises(SpecError) as caught:
        load_settings(bad)
    assert caught.value.line == 3
    bad.write_text("device_id: x\nworkflow: []\n")
    with pytest.raises(Exception, match="workflow"):
        load_settings(bad)


def test_every_frame_is_run_and_recorded_then_the_agent_stops(tmp_path: Path) -> None:
    agent = Agent(load_settings(write_config(tmp_path)))
    (summary,) = agent.serve()
    assert summary["workflow"] == "frame_log"
    assert summary["runs"] == 25
    assert summary["failed"] == 0
    assert (summary["accepted"], summary["rejected"]) == (10, 15)  # seq 0..9 below the threshold of 10
    assert summary["dropped_frames"] == 0
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 25
    assert {json.loads(line)["outputs"]["facts"]["seq"] for line in lines} == set(range(25))
    assert agent.profile is not None
    assert agent.profile.name == "x86-cpu"


@pytest.mark.slow
def test_sigterm_drains_in_flight_runs_and_exits_cleanly(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    path = write_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["workflows"][0]["sources"] = [{"type": "synthetic", "fps": 40, "encode": "raw"}]  # endless camera
    path.write_text(yaml.safe_dump(config))
    cli = Path(sys.executable).parent / "edgefleet-agent"
    process = subprocess.Popen(
        [str(cli), "serve", "--config", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    results = tmp_path / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not results.exists() or len(results.read_text().splitlines()) < 5):
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    summary = json.loads(stdout)
    (workflow,) = summary["workflows"]
    assert workflow["runs"] >= 5
    assert workflow["runs"] == len(results.read_text().splitlines())  # every accepted frame was run
    assert workflow["failed"] == 0


def test_serve_reports_a_bad_config_and_exits_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli import app

    bad = tmp_path / "agent.yaml"
    bad.write_text("device_id: 'has spaces'\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(bad)])
    assert result.exit_code == 2
    assert "device_id" in result.output
