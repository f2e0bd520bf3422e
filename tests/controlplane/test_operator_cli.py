"""``edgefleet`` operator commands, end to end against a running control plane."""

from __future__ import annotations

import hashlib
import json
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from controlplane.cli import app
from tests.controlplane.live import LiveControlPlane

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "surface_inspection_v1.onnx"
SURFACE_WORKFLOW = REPO / "examples" / "workflows" / "surface_inspection.json"

Cli = Callable[..., Result]


@pytest.fixture
def cli(sqlite_control_plane: LiveControlPlane, tmp_path: Path) -> Cli:
    """Run ``edgefleet ARGS`` in-process as the admin (``token=`` another; ``None`` for no env)."""
    runner = CliRunner()
    config = tmp_path / "config"

    def invoke(*args: str, token: str | None = "admin", url: str | None = "live", **options: Any) -> Result:
        env = {
            "XDG_CONFIG_HOME": str(config),
            "EDGEFLEET_URL": sqlite_control_plane.url if url == "live" else url,
            "EDGEFLEET_TOKEN": sqlite_control_plane.admin_token if token == "admin" else token,
        }
        result = runner.invoke(app, list(args), env=env, **options)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return invoke


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def enroll(live: LiveControlPlane, cli: Cli, *extra: str) -> str:
    """Create an enrollment token with the CLI and enroll a device with it, as a device would."""
    created = cli("enroll-token", "create", "--ttl", "1h", *extra)
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("efe_")
    with httpx.Client(base_url=live.url, timeout=30) as device:
        answer = device.post("/api/v1/enroll", json={"token": token, "hostname": "cam-host"})
    assert answer.status_code == 201, answer.text
    device_id: str = answer.json()["device_id"]
    return device_id


def push_model(cli: Cli, *extra: str, **options: Any) -> dict[str, Any]:
    args = ("--output", "json", "models", "push", str(MODEL), "--name", "surface_inspection", *extra)
    result = cli(*args, **options)
    model: dict[str, Any] = as_json(result)
    return model


def metric(live: LiveControlPlane, route: str, status: int) -> float:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        text = client.get("/metrics").text
    wanted = f'edgefleet_http_requests_total{{method="GET",route="{route}",status="{status}"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(wanted))


# ---- login -----------------------------------------------------------------------------------


def test_login_stores_a_0600_file_that_later_commands_use(
    cli: Cli, sqlite_control_plane: LiveControlPlane, tmp_path: Path
) -> None:
    live = sqlite_control_plane
    result = cli("login", "--url", live.url + "/", "--token", live.admin_token, token=None, url=None)
    assert result.exit_code == 0, result.output
    path = tmp_path / "config" / "edgefleet" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": live.url, "token": live.admin_token}
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left behind

    me = as_json(cli("--output", "json", "whoami", token=None, url=None))
    assert me["name"] == "root"
    assert me["role"] == "admin"
    # a URL given on the command line or in the environment overrides the file, and the stored
    # token is never sent to another URL
    elsewhere = cli("whoami", token=None, url="http://127.0.0.1:9")
    assert elsewhere.exit_code == 3
    assert "not logged in" in elsewhere.stderr

    out = cli("logout", token=None, url=None)
    assert out.exit_code == 0
    assert not path.exists()
    after = cli("whoami", token=None, url=None)
    assert after.exit_code == 3
    assert after.stderr.startswith("edgefleet: not logged in")


def test_login_reads_the_token_from_stdin(
    cli: Cli, sqlite_control_plane: LiveControlPlane, tmp_path: Path
) -> None:
    live = sqlite_control_plane
    result = cli(
        "login", "--url", live.url, "--token", "-", token=None, url=None, input=live.admin_token + "\n"
    )
    assert result.exit_code == 0, result.output
    assert "logged in" in result.stdout
    assert (tmp_path / "config" / "edgefleet" / "credentials.json").exists()


def test_login_with_a_bad_token_exits_3_and_stores_nothing(
    cli: Cli, sqlite_control_plane: LiveControlPlane, tmp_path: Path
) -> None:
    bad = "efo_0123456789abcdef_not-the-secret"
    result = cli("login", "--url", sqlite_control_plane.url, "--token", bad, token=None, url=None)
    assert result.exit_code == 3
    assert result.stderr.startswith("edgefleet: unknown token")
    assert not (tmp_path / "config" / "edgefleet").exists()


def test_unreachable_control_plane_exits_8(cli: Cli) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli("devices", "list", url=f"http://127.0.0.1:{port}")
    assert result.exit_code == 8
    assert result.stderr.startswith(f"edgefleet: cannot reach the control plane at http://127.0.0.1:{port}")


def test_bad_local_input_exits_2(cli: Cli, tmp_path: Path) -> None:
    assert cli("devices", "list", "--label", "no-equals-sign").exit_code == 2
    assert cli("enroll-token", "create", "--ttl", "soon").exit_code == 2
    missing = cli("models", "push", str(tmp_path / "nope.onnx"), "--name", "m")
    assert missing.exit_code == 2
    assert "no such file" in missing.stderr
    assert cli("thresholds", "set", "s", "default=high").exit_code == 2
    assert cli("workflows", "validate", str(MODEL)).exit_code == 2  # not .json/.yaml


# ---- devices ---------------------------------------------------------------------------------


def test_enroll_list_show_label_decommission(cli: Cli, sqlite_control_plane: LiveControlPlane) -> None:
    live = sqlite_control_plane
    device_id = enroll(live, cli, "--label", "line=3", "--label", "site=north", "--note", "cam on line 3")
    other = enroll(live, cli, "--label", "line=4")

    devices = as_json(cli("--output", "json", "devices", "list"))
    assert {d["id"] for d in devices} == {device_id, other}
    on_line_3 = as_json(cli("--output", "json", "devices", "list", "--label", "line=3", "--all"))
    assert [d["id"] for d in on_line_3] == [device_id]
    table = cli("devices", "list", "--status", "active")
    assert table.exit_code == 0
    assert device_id in table.stdout

    shown = as_json(cli("--output", "json", "devices", "show", device_id))
    assert shown["labels"] == {"line": "3", "site": "north"}
    assert shown["hostname"] == "cam-host"
    assert cli("devices", "show", device_id).exit_code == 0

    labelled = as_json(cli("--output", "json", "devices", "label", device_id, "zone=a", "--remove", "site"))
    assert labelled["labels"] == {"line": "3", "zone": "a"}
    assert labelled["revision"] == shown["revision"] + 1
    # the server refuses a PATCH without If-Match: the CLI sent the ETag it read
    with live.admin() as admin:
        assert admin.patch(f"/api/v1/devices/{device_id}", json={"labels": {}}).status_code == 428
    assert cli("devices", "label", device_id).exit_code == 2

    missing = cli("devices", "show", "no-such-device")
    assert missing.exit_code == 5
    assert missing.stderr == "edgefleet: device 'no-such-device' is not registered\n"

    declined = cli("devices", "decommission", device_id, input="n\n")
    assert declined.exit_code == 1
    assert as_json(cli("--output", "json", "devices", "show", device_id))["status"] == "active"
    done = cli("devices", "decommission", device_id, "--yes")
    assert done.exit_code == 0, done.output
    assert as_json(cli("--output", "json", "devices", "show", device_id))["status"] == "decommissioned"
    again = cli("devices", "decommission", device_id, "--yes")
    assert again.exit_code == 6
    assert "already decommissioned" in again.stderr


def test_label_after_a_concurrent_change_exits_6(
    cli: Cli, sqlite_control_plane: LiveControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlplane.client import ControlPlaneClient

    device_id = enroll(sqlite_control_plane, cli)
    real = ControlPlaneClient.get_device

    def stale(self: ControlPlaneClient, device: str) -> tuple[dict[str, Any], str | None]:
        found, _etag = real(self, device)
        return found, '"0"'  # as if someone else changed it after this read

    monkeypatch.setattr(ControlPlaneClient, "get_device", stale)
    result = cli("devices", "label", device_id, "zone=b")
    assert result.exit_code == 6
    assert "changed by someone else" in result.stderr
    assert "again" in result.stderr


# ---- models ----------------------------------------------------------------------------------


def test_models_push_list_show_pull(cli: Cli, sqlite_control_plane: LiveControlPlane, tmp_path: Path) -> None:
    model = push_model(cli, "--label", "stage=test", "--description", "reference model")
    assert model["version"] == 1
    assert model["size"] == MODEL.stat().st_size
    assert model["labels"] == {"stage": "test"}

    listed = as_json(cli("--output", "json", "models", "list", "--name", "surface_inspection"))
    assert [(m["name"], m["version"]) for m in listed] == [("surface_inspection", 1)]
    shown = as_json(cli("--output", "json", "models", "show", "surface_inspection", "1"))
    assert shown["sha256"] == model["sha256"]
    table = cli("models", "show", "surface_inspection", "1")
    assert table.exit_code == 0
    assert "inputs" in table.stdout
    assert cli("models", "show", "surface_inspection", "9").exit_code == 5

    dest = tmp_path / "pulled.onnx"
    pulled = cli("models", "pull", "surface_inspection", "1", "-o", str(dest))
    assert pulled.exit_code == 0, pulled.output
    assert dest.read_bytes() == MODEL.read_bytes()
    assert not dest.with_name("pulled.onnx.part").exists()


def test_models_pull_resumes_a_partial_download(
    cli: Cli, sqlite_control_plane: LiveControlPlane, tmp_path: Path
) -> None:
    live = sqlite_control_plane
    push_model(cli)
    content = MODEL.read_bytes()
    dest = tmp_path / "model.onnx"
    part = tmp_path / "model.onnx.part"
    part.write_bytes(content[:100_000])
    route = "/api/v1/models/{name}/versions/{version}/content"
    before = metric(live, route, 206)

    manifest = as_json(cli("--output", "json", "models", "pull", "surface_inspection", "1", "-o", str(dest)))
    assert manifest["sha256"] == hashlib.sha256(content).hexdigest()
    assert manifest["size"] == len(content)
    assert dest.read_bytes() == content
    assert not part.exists()
    assert metric(live, route, 206) == before + 1  # a Range request, not the whole file again


def test_models_pull_refuses_bytes_that_do_not_match_the_manifest(cli: Cli, tmp_path: Path) -> None:
    push_model(cli)
    dest = tmp_path / "model.onnx"
    part = tmp_path / "model.onnx.part"
    part.write_bytes(b"\0" * 1000)  # a corrupt prefix: the result cannot match the signed sha256
    result = cli("models", "pull", "surface_inspection", "1", "-o", str(dest))
    assert result.exit_code == 1
    assert "the signed manifest says" in result.stderr
    assert not dest.exists()
    assert not part.exists()
    assert cli("models", "pull", "surface_inspection", "1", "-o", str(dest)).exit_code == 0
    assert dest.read_bytes() == MODEL.read_bytes()


def test_models_push_of_a_file_that_is_not_onnx_exits_7(cli: Cli, tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_text("this is not a model\n" * 100)
    result = cli("models", "push", str(fake), "--name", "fake")
    assert result.exit_code == 7
    assert "edgefleet: the uploaded file is" in result.stderr
    assert "ONNX" in result.stderr
    assert as_json(cli("--output", "json", "models", "list")) == []


def test_a_viewer_may_not_push_a_model(cli: Cli, sqlite_control_plane: LiveControlPlane) -> None:
    viewer = sqlite_control_plane.token("viewer", name="vera")
    result = cli("models", "push", str(MODEL), "--name", "surface_inspection", token=viewer)
    assert result.exit_code == 4
    assert result.stderr == "edgefleet: operator 'vera' (role viewer) may not create models\n"
    assert cli("--output", "json", "models", "list", token=viewer).exit_code == 0


# ---- workflows and thresholds ----------------------------------------------------------------


def test_workflows_validate_lists_every_problem_by_node(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "id: broken\n"
        "nodes:\n"
        "  - {id: a, type: mystery}\n"
        "  - {id: infer, type: model_inference, config: {model_id: nowhere, input_mapping: {x: $.x}}}\n"
        "edges:\n"
        "  - {source: a, target: c}\n"
    )
    result = cli("workflows", "validate", str(broken))
    assert result.exit_code == 1, result.output
    assert "problem(s)" in result.stdout
    assert "node 'a', type: unknown node type 'mystery'" in result.stdout
    assert "node 'infer'" in result.stdout
    assert "edges[0].target" in result.stdout

    report = cli("--output", "json", "workflows", "validate", str(broken))
    assert report.exit_code == 1
    problem = json.loads(report.stdout)
    assert {e["node"] for e in problem["errors"]} >= {"a", "infer"}

    unparsable = tmp_path / "bad.json"
    unparsable.write_text('{"id": "x", "nodes": [')
    bad = cli("workflows", "validate", str(unparsable))
    assert bad.exit_code == 1
    assert "not valid JSON" in bad.stdout

    pushed = cli("workflows", "push", str(broken))
    assert pushed.exit_code == 7
    assert pushed.stderr.splitlines()[0] == "edgefleet: workflow 'broken' has 3 problem(s)"
    assert "  node 'a', type: unknown node type 'mystery'" in pushed.stderr


def test_workflows_push_list_show(cli: Cli) -> None:
    ok = cli("workflows", "validate", str(SURFACE_WORKFLOW))
    assert ok.exit_code == 1  # the model is not on the control plane yet
    assert "surface_inspection" in ok.stdout
    push_model(cli)
    checked = as_json(cli("--output", "json", "workflows", "validate", str(SURFACE_WORKFLOW)))
    assert checked["models"] == [{"name": "surface_inspection", "version": 1}]

    pushed = as_json(cli("--output", "json", "workflows", "push", str(SURFACE_WORKFLOW)))
    assert (pushed["name"], pushed["version"]) == ("surface_inspection", 1)
    assert pushed["models"] == [{"name": "surface_inspection", "version": 1}]
    again = cli("workflows", "push", str(SURFACE_WORKFLOW))
    assert again.exit_code == 6  # versions are immutable
    assert "already has version 1" in again.stderr

    listed = as_json(cli("--output", "json", "workflows", "list"))
    assert [(w["name"], w["version"]) for w in listed] == [("surface_inspection", 1)]
    shown = as_json(cli("--output", "json", "workflows", "show", "surface_inspection", "1"))
    assert shown["document"]["id"] == "surface_inspection"
    table = cli("workflows", "show", "surface_inspection", "1")
    assert table.exit_code == 0
    assert '"model_inference"' in table.stdout


def test_thresholds_set_assign_list(cli: Cli, sqlite_control_plane: LiveControlPlane) -> None:
    device_id = enroll(sqlite_control_plane, cli)
    created = as_json(cli("--output", "json", "thresholds", "set", "surface", "default=0.5", "scratch=0.3"))
    assert (created["version"], created["values"]) == (1, {"default": 0.5, "scratch": 0.3})
    v5 = as_json(cli("--output", "json", "thresholds", "set", "surface", "default=0.6", "--version", "5"))
    assert v5["version"] == 5

    assigned = as_json(cli("--output", "json", "thresholds", "assign", "surface", "5", "--device", device_id))
    assert (assigned["target_kind"], assigned["target"], assigned["version"]) == ("device", device_id, 5)
    assert cli("thresholds", "assign", "surface", "1", "--group", "g", "--device", device_id).exit_code == 2
    assert cli("thresholds", "assign", "surface", "1", "--group", "no-such-group").exit_code == 5
    assert cli("thresholds", "assign", "surface", "7", "--device", device_id).exit_code == 5

    listed = as_json(cli("--output", "json", "thresholds", "list"))
    assert [(t["name"], t["version"]) for t in listed] == [("surface", 1), ("surface", 5)]
    assert cli("thresholds", "list").exit_code == 0
    where = as_json(cli("--output", "json", "thresholds", "assignments", "surface"))
    assert [(a["target"], a["version"]) for a in where] == [(device_id, 5)]


# ---- audit, tokens, policies -----------------------------------------------------------------


def test_audit_list_and_verify(cli: Cli, sqlite_control_plane: LiveControlPlane) -> None:
    device_id = enroll(sqlite_control_plane, cli)
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.startswith("ok")
    report = as_json(cli("--output", "json", "audit", "verify"))
    assert report["ok"] is True
    entries = as_json(cli("--output", "json", "audit", "list", "--resource", f"devices/{device_id}"))
    assert [e["action"] for e in entries] == ["device.enroll"]
    by_root = as_json(cli("--output", "json", "audit", "list", "--actor", "operator:root", "--all"))
    assert {e["action"] for e in by_root} == {"enrollment_token.create"}


def test_tokens_and_policies(cli: Cli, sqlite_control_plane: LiveControlPlane, tmp_path: Path) -> None:
    policy = tmp_path / "ml-ops.yaml"
    policy.write_text(
        "description: ML ops may change models\n"
        "permissions:\n"
        "  - resource: models\n"
        "    actions: [read, create]\n"
        "    conditions:\n"
        "      - {attribute: department, operator: equals, value: ml_ops}\n"
    )
    first = as_json(cli("--output", "json", "policies", "put", "ml-ops", str(policy)))
    assert first["revision"] == 1
    second = cli("policies", "put", "ml-ops", str(policy))  # replaces it: GET for the ETag, If-Match
    assert second.exit_code == 0, second.output
    assert "revision 2" in second.stdout
    assert [p["name"] for p in as_json(cli("--output", "json", "policies", "list"))] == ["ml-ops"]
    not_yaml = tmp_path / "bad.yaml"
    not_yaml.write_text("permissions: [\n")
    assert cli("policies", "put", "x", str(not_yaml)).exit_code == 2
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("permissions: []\n")
    rejected = cli("policies", "put", "x", str(invalid))
    assert rejected.exit_code == 7
    assert "  body.permissions:" in rejected.stderr

    created = cli(
        "tokens", "create", "--name", "mia", "--role", "viewer", "--attr", "department=ml_ops",
        "--policy", "ml-ops", "--ttl", "30d",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    mia = created.stdout.strip()
    assert mia.startswith("efo_")
    # the policy lets this viewer push models
    assert push_model(cli, token=mia)["created_by"] == "operator:mia"
    assert cli("tokens", "create", "--name", "x", "--role", "root").exit_code == 2

    tokens = as_json(cli("--output", "json", "tokens", "list", "--all"))
    mine = next(t for t in tokens if t["name"] == "mia")
    assert mine["policies"] == ["ml-ops"]
    assert mine["attributes"] == {"department": "ml_ops"}
    assert cli("tokens", "list").exit_code == 0

    assert cli("tokens", "revoke", mine["id"]).exit_code == 0
    revoked = cli("whoami", token=mia)
    assert revoked.exit_code == 3
    assert "was revoked" in revoked.stderr
    # a viewer may not manage tokens
    viewer = sqlite_control_plane.token("viewer")
    assert cli("tokens", "list", token=viewer).exit_code == 4
