"""``edgefleet rollout …``: the views drawn from recorded API documents (docs/rollouts.md), and the
commands end to end against a running control plane."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console, RenderableType
from typer.testing import CliRunner, Result

from controlplane.cli import app
from controlplane.commands import rollout_views as views
from controlplane.commands import rollouts as commands
from controlplane.commands.rollout_views import render_decisions, render_rollout
from controlplane.commands.rollouts import watch
from tests.controlplane.live import LiveControlPlane

CRITERIA: list[dict[str, Any]] = [
    {
        "name": "error_rate",
        "value": 0.0,
        "threshold": 0.02,
        "comparison": "<=",
        "samples": 180,
        "status": "pass",
        "detail": "0 errors in 180 candidate runs",
    },
    {
        "name": "p99_latency_ratio",
        "value": 1.1218,
        "threshold": 1.5,
        "comparison": "<=",
        "samples": 180,
        "status": "insufficient",
        "detail": "p99 22.1 ms candidate (180 runs) vs 19.7 ms baseline (420 runs)",
    },
    {
        "name": "defect_rate_shift",
        "value": 11.2,
        "threshold": 5.0,
        "comparison": "|x| <=",
        "samples": 180,
        "status": "fail",
        "detail": "reject rate 15.00% candidate (27/180) vs 3.81% baseline (16/420), p = 0.0003",
    },
]
ROLLOUT: dict[str, Any] = {
    "id": "r-3f9a1c2e7b",
    "workflow": "surface_inspection",
    "state": "running",
    "target": {"group": "line-1"},
    "spec": {
        "steps": [
            {"kind": "shadow", "devices": 2, "duration_s": 60, "min_samples": 200},
            {"kind": "canary", "percent": 33, "duration_s": 120, "min_samples": 300},
            {"kind": "pause"},
            {"kind": "full", "duration_s": 0, "min_samples": 0},
        ],
        "analysis": {},
        "gate": {},
    },
    "bundle": {
        "workflow": {"name": "surface_inspection", "version": 4, "sha256": "ab" * 32},
        "models": [{"name": "surface_inspection", "version": 2, "sha256": "cd" * 32}],
        "threshold_sets": [{"name": "surface", "version": 3, "sha256": "ef" * 32}],
    },
    "step_index": 1,
    "step": {"kind": "canary", "percent": 33, "duration_s": 120, "min_samples": 300},
    "step_started_at": "2025-03-01T10:00:00Z",
    "created_at": "2025-03-01T09:58:00Z",
    "created_by": "operator:alice",
    "finished_at": None,
    "reason": None,
    "cohorts": {"shadow": ["cam-2"], "canary": ["cam-2", "cam-5"], "baseline": ["cam-1", "cam-3", "cam-4"]},
    "progress": {
        "devices_total": 2,
        "devices_on_candidate": 1,
        "candidate_samples": 180,
        "baseline_samples": 420,
    },
    "analysis": {
        "verdict": "wait",
        "reason": "waiting for candidate 180/300 samples, 42 s of 120 s",
        "at": "2025-03-01T10:00:42Z",
        "step_index": 1,
        "step": "canary",
        "candidate_samples": 180,
        "baseline_samples": 420,
        "criteria": CRITERIA,
    },
}
DECISIONS: list[dict[str, Any]] = [
    {
        "seq": 1,
        "at": "2025-03-01T09:57:00Z",
        "step_index": 0,
        "step": "shadow",
        "action": "start",
        "actor": "operator:alice",
        "reason": "created",
        "criteria": [],
    },
    {
        "seq": 2,
        "at": "2025-03-01T09:58:00Z",
        "step_index": 0,
        "step": "shadow",
        "action": "promote",
        "actor": "controller",
        "reason": "all 5 criteria pass (candidate 240 samples, baseline 900, 61 s)",
        "criteria": CRITERIA[:1],
    },
    {
        "seq": 3,
        "at": "2025-03-01T10:03:00Z",
        "step_index": 1,
        "step": "canary",
        "action": "abort",
        "actor": "controller",
        "reason": "defect rate +11.2 points (p = 0.0003)",
        "criteria": CRITERIA,
    },
]
NOW = datetime(2025, 3, 1, 10, 0, 42, tzinfo=UTC)


def draw(renderable: RenderableType) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def line_with(drawn: str, *words: str) -> str:
    [line] = [line for line in drawn.splitlines() if all(word in line for word in words)]
    return line


# ---- views -------------------------------------------------------------------------------------


def test_status_view_marks_the_current_step_and_shows_progress_and_criteria() -> None:
    drawn = draw(render_rollout(ROLLOUT, now=NOW))
    assert "r-3f9a1c2e7b  running" in drawn
    assert "group=line-1" in drawn
    assert "workflow surface_inspection v4; models surface_inspection v2; thresholds surface v3" in drawn
    assert "2025-03-01 09:58:00 by operator:alice" in drawn
    assert line_with(drawn, "shadow", "2 devices").lstrip().startswith("✓")
    assert line_with(drawn, "canary", "33%", "120 s", "300").lstrip().startswith("▶")
    assert not line_with(drawn, "│ pause").lstrip().startswith(("▶", "✓"))
    assert "step 2/4 canary" in drawn
    assert line_with(drawn, "devices on candidate").rstrip().endswith("1/2")
    assert line_with(drawn, "candidate samples").rstrip().endswith("180/300")
    assert line_with(drawn, "baseline samples").rstrip().endswith("420/300")
    assert line_with(drawn, "time in step").rstrip().endswith("42/120 s")
    assert (
        "latest analysis of step 2 canary wait at 2025-03-01 10:00:42: waiting for candidate 180/300 samples"
        in drawn
    )
    row = line_with(drawn, "defect_rate_shift")
    for cell in ("+11.2 pts", "|x| <= 5", "180", "fail", "p = 0.0003"):
        assert cell in row
    assert "insufficient" in line_with(drawn, "p99_latency_ratio", "1.122", "<= 1.5")
    assert "pass" in line_with(drawn, "error_rate", "<= 0.02")


def test_criteria_statuses_are_coloured() -> None:
    console = Console(width=200, force_terminal=True, color_system="truecolor")
    segments = list(console.render(views.render_criteria(CRITERIA)))
    colour = {s.text: s.style.color.name for s in segments if s.style and s.style.color and s.text.strip()}
    assert colour["pass"] == "green"
    assert colour["fail"] == "red"
    assert colour["insufficient"] == "yellow"


def test_status_view_of_a_finished_rollout() -> None:
    aborted = {
        **ROLLOUT,
        "state": "aborted",
        "finished_at": "2025-03-01T10:03:00Z",
        "reason": "defect rate +11.2 points (p = 0.0003)",
    }
    paused = draw(render_rollout({**ROLLOUT, "state": "paused", "paused_reason": "line stop"}, now=NOW))
    assert line_with(paused, "canary", "33%").lstrip().startswith("‖")
    assert "paused    line stop" in paused
    drawn = draw(render_rollout(aborted, now=NOW))
    assert line_with(drawn, "canary", "33%").lstrip().startswith("✗")
    assert "reason    defect rate +11.2 points (p = 0.0003)" in drawn
    assert "devices on candidate" not in drawn  # no progress once it is over
    promoted = draw(render_rollout({**ROLLOUT, "state": "promoted", "step_index": 3}, now=NOW))
    assert all(line_with(promoted, f"│ {n} │").lstrip().startswith("✓") for n in range(1, 5))


def test_explain_view_lists_every_decision_oldest_first_with_its_criteria() -> None:
    drawn = draw(render_decisions(DECISIONS))
    heads = [line for line in drawn.splitlines() if line.startswith("#")]
    assert heads == [
        "#1 2025-03-01 09:57:00  step 1 shadow  start by operator:alice: created",
        "#2 2025-03-01 09:58:00  step 1 shadow  promote by controller: "
        "all 5 criteria pass (candidate 240 samples, baseline 900, 61 s)",
        "#3 2025-03-01 10:03:00  step 2 canary  abort by controller: defect rate +11.2 points (p = 0.0003)",
    ]
    after_abort = drawn.split("#3 ", 1)[1]
    assert "+11.2 pts" in line_with(after_abort, "defect_rate_shift")
    assert drawn.count("error_rate") == 2  # in decisions 2 and 3


def test_list_columns() -> None:
    cells = [get(ROLLOUT) for _, get in views.LIST_COLUMNS]
    assert cells[:4] == ["r-3f9a1c2e7b", "surface_inspection", "running", "2/4 canary"]
    assert views.step_label({**ROLLOUT, "step_index": None}) == "-"
    assert views.step_label({**ROLLOUT, "spec": None}) == "2 canary"  # lists carry no spec
    assert views.ids_text([f"cam-{i}" for i in range(12)]).endswith("cam-9 … and 2 more")


def test_watch_stops_at_a_final_state() -> None:
    states = iter(["running", "paused", "running", "aborted", "never fetched"])
    shown: list[str] = []
    slept: list[float] = []
    final = watch(
        lambda: {"id": "r-1", "state": next(states)},
        lambda rollout: shown.append(rollout["state"]),
        interval=2.5,
        sleep=slept.append,
    )
    assert final == {"id": "r-1", "state": "aborted"}
    assert shown == ["running", "paused", "running", "aborted"]
    assert slept == [2.5, 2.5, 2.5]


# ---- local input -------------------------------------------------------------------------------


def invoke(*args: str, url: str = "http://127.0.0.1:9", token: str = "t") -> Result:
    result = CliRunner().invoke(app, list(args), env={"EDGEFLEET_URL": url, "EDGEFLEET_TOKEN": token})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("spec.yaml", "workflow: [unclosed", "not valid YAML"),
        ("spec.json", "{'workflow': 1}", "not valid JSON"),
        ("spec.yaml", "- just\n- a list\n", "a rollout spec is a mapping"),
    ],
)
def test_create_refuses_a_bad_spec_file_with_exit_2(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    result = invoke("rollout", "create", "-f", str(path))
    assert result.exit_code == 2
    assert message in result.stderr


def test_abort_requires_a_reason() -> None:
    assert invoke("rollout", "abort", "r-1").exit_code == 2
    blank = invoke("rollout", "abort", "r-1", "--reason", " ")
    assert blank.exit_code == 2
    assert "--reason must say why" in blank.stderr
    assert invoke("rollout", "create", "-f", "/no/such/file.yaml").exit_code == 2


def test_an_unreachable_control_plane_exits_8() -> None:
    result = invoke("rollout", "status", "r-1")
    assert result.exit_code == 8
    assert "cannot reach the control plane" in result.stderr


def test_spec_files_parse_as_yaml_or_json(tmp_path: Path) -> None:
    spec = {"workflow": "surface_inspection", "target": {"group": "line-1"}, "steps": [{"kind": "full"}]}
    (tmp_path / "a.json").write_text(json.dumps(spec))
    (tmp_path / "a.yml").write_text(
        "workflow: surface_inspection\ntarget: {group: line-1}\nsteps:\n  - kind: full\n"
    )
    assert commands.load_spec(tmp_path / "a.json") == spec
    assert commands.load_spec(tmp_path / "a.yml") == spec


# ---- end to end --------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
SPEC = """\
workflow: surface_inspection
target: {group: line3}
steps:
  - {kind: canary, devices: 1, duration_s: 3600, min_samples: 100}
  - {kind: full}
"""

Cli = Callable[..., Result]


@pytest.fixture
def cli(sqlite_control_plane: LiveControlPlane, tmp_path: Path) -> Cli:
    """Run ``edgefleet ARGS`` in-process against the live control plane as the admin (``token=``
    another one)."""
    runner = CliRunner()

    def run(*args: str, token: str | None = None) -> Result:
        env = {
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "EDGEFLEET_URL": sqlite_control_plane.url,
            "EDGEFLEET_TOKEN": token or sqlite_control_plane.admin_token,
        }
        result = runner.invoke(app, list(args), env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return run


@pytest.fixture
def fleet(sqlite_control_plane: LiveControlPlane, tmp_path: Path) -> Path:
    """Four devices in group line3 running surface_inspection v1; returns a rollout spec file."""
    live = sqlite_control_plane
    admin = live.admin()
    for i in range(4):
        live.enroll(f"cam-{i}", labels={"line": "3"})
    admin.post("/api/v1/groups", json={"name": "line3", "selector": {"line": "3"}}).raise_for_status()
    model = (REPO / "models" / "surface_inspection_v1.onnx").read_bytes()
    admin.post("/api/v1/models/surface_inspection/versions", content=model).raise_for_status()
    graph = (REPO / "examples" / "workflows" / "surface_inspection.json").read_text()
    admin.post(
        "/api/v1/workflows", content=graph, headers={"content-type": "application/json"}
    ).raise_for_status()
    admin.post("/api/v1/thresholds/surface/versions", json={"values": {"default": 0.5}}).raise_for_status()
    admin.put("/api/v1/thresholds/surface/assignments/group/line3", json={"version": 1}).raise_for_status()
    admin.put(
        "/api/v1/workflows/surface_inspection/assignments/group/line3", json={"version": 1}
    ).raise_for_status()
    spec = tmp_path / "rollout.yaml"
    spec.write_text(SPEC)
    return spec


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_create_list_status_and_steer_a_rollout(cli: Cli, fleet: Path) -> None:
    created = cli("rollout", "create", "-f", str(fleet))
    assert created.exit_code == 0, created.output
    first = created.stdout.splitlines()[0]
    assert first.startswith("created rollout r-")
    assert "of 'surface_inspection' (state running, step 1/2 canary)" in first
    rollout_id = first.split()[2]
    assert "  canary: 1 device(s): cam-" in created.stdout
    assert "  baseline: 3 device(s): " in created.stdout

    listed = as_json(cli("--output", "json", "rollout", "list", "--workflow", "surface_inspection"))
    assert [r["id"] for r in listed] == [rollout_id]
    assert as_json(cli("--output", "json", "rollout", "list", "--state", "aborted")) == []
    table = cli("rollout", "list")
    assert rollout_id in table.stdout
    assert line_with(table.stdout, rollout_id, "running", "group=line3", "operator:root")

    shown = as_json(cli("--output", "json", "rollout", "status", rollout_id))
    assert (shown["state"], shown["step_index"], shown["progress"]["devices_total"]) == ("running", 0, 1)
    drawn = cli("rollout", "status", rollout_id)
    assert drawn.exit_code == 0, drawn.output
    assert "step 1/2 canary" in drawn.stdout
    assert "devices on candidate" in drawn.stdout

    paused = cli("rollout", "pause", rollout_id, "--reason", "line stop")
    assert paused.stdout.strip() == f"paused rollout {rollout_id}: now paused, step 1/2 canary"
    again = cli("rollout", "pause", rollout_id)
    assert again.exit_code == 6  # 409: not running
    assert again.stderr.startswith("edgefleet: ")
    assert cli("rollout", "resume", rollout_id).exit_code == 0
    promoted = as_json(cli("--output", "json", "rollout", "promote", rollout_id, "--reason", "looks good"))
    assert (promoted["state"], promoted["step"]["kind"]) == ("running", "full")

    aborted = cli("rollout", "abort", rollout_id, "--reason", "operator test")
    assert aborted.stdout.strip() == f"aborted rollout {rollout_id}: now aborted"
    watched = cli("--output", "json", "rollout", "status", rollout_id, "--watch", "--interval", "0.5")
    assert watched.exit_code == 1  # the rollout ended aborted
    assert json.loads(watched.stdout)["reason"] == "operator test"

    decisions = as_json(cli("--output", "json", "rollout", "explain", rollout_id))
    assert [d["action"] for d in decisions] == ["start", "pause", "resume", "promote", "abort"]
    assert (decisions[1]["reason"], decisions[4]["reason"]) == ("line stop", "operator test")
    assert decisions[3]["reason"].startswith("looks good")
    assert {d["actor"] for d in decisions[1:]} == {"operator:root"}
    assert [d["seq"] for d in decisions] == sorted(d["seq"] for d in decisions)
    explained = cli("rollout", "explain", rollout_id)
    heads = [line for line in explained.stdout.splitlines() if line.startswith("#")]
    assert len(heads) == 5
    assert "abort by operator:root: operator test" in heads[-1]


def test_watch_exits_0_once_promoted(cli: Cli, fleet: Path) -> None:
    rollout_id = as_json(cli("--output", "json", "rollout", "create", "-f", str(fleet)))["id"]
    assert cli("rollout", "promote", rollout_id).exit_code == 0
    done = cli("rollout", "promote", rollout_id)
    assert done.stdout.strip() == f"promoted rollout {rollout_id}: now promoted"
    watched = cli("rollout", "status", rollout_id, "--watch")
    assert watched.exit_code == 0, watched.output
    assert "promoted" in watched.stdout


def test_http_problems_map_to_exit_codes(
    cli: Cli, fleet: Path, sqlite_control_plane: LiveControlPlane
) -> None:
    assert cli("rollout", "status", "r-0000000000").exit_code == 5
    rollout_id = as_json(cli("--output", "json", "rollout", "create", "-f", str(fleet)))["id"]
    overlapping = cli("rollout", "create", "-f", str(fleet))
    assert overlapping.exit_code == 6  # 409: the target is in an active rollout of the workflow
    viewer = sqlite_control_plane.token("viewer")
    assert cli("rollout", "pause", rollout_id, token=viewer).exit_code == 4
    assert cli("rollout", "status", rollout_id, token=viewer).exit_code == 0
    bad = fleet.with_name("bad.yaml")
    bad.write_text("workflow: nowhere\ntarget: {group: line3}\nsteps: [{kind: full}]\n")
    refused = cli("rollout", "create", "-f", str(bad))
    assert refused.exit_code == 7
    assert "nowhere" in refused.stderr
