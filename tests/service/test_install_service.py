"""``edgefleet-agent install-service``, as an operator runs it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from agent.cli import app
from agent.profiles import bundled_profiles_dir, load_profiles
from agent.service import UnitOptions, render_unit

runner = CliRunner()
SYSTEM_UNIT = Path("/etc/systemd/system/edgefleet-agent.service")
EXEC = "/opt/edgefleet/bin/edgefleet-agent"
NO_SUCH_USER = "edgefleet-test-nobody"


def test_dry_run_prints_the_unit_and_writes_nothing() -> None:
    existed = SYSTEM_UNIT.exists()
    result = runner.invoke(app, ["install-service", "--profile", "x86-t4", "--exec", EXEC, "--dry-run"])
    assert result.exit_code == 0, result.output
    profile = load_profiles(bundled_profiles_dir())["x86-t4"]
    assert result.stdout == render_unit(profile, UnitOptions(exec_path=Path(EXEC)))
    assert SYSTEM_UNIT.exists() == existed


def test_output_writes_the_unit_world_readable_and_says_what_is_left(tmp_path: Path) -> None:
    target = tmp_path / "edgefleet-agent.service"
    result = runner.invoke(
        app,
        [
            "install-service",
            "--profile",
            "jetson-orin-nx-16gb",
            "--exec",
            EXEC,
            "--user",
            NO_SUCH_USER,
            "--config",
            str(tmp_path / "agent.yaml"),
            "--output",
            str(target),
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edgefleet-agent.service"]  # nothing else
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    text = target.read_text()
    assert "MemoryMax=12288M" in text
    assert f"User={NO_SUCH_USER}" in text
    assert f"wrote {target} for profile jetson-orin-nx-16gb (MemoryMax=12288M, CPUQuota=700%" in result.stdout
    for step in (
        f"copy {target} to /etc/systemd/system/edgefleet-agent.service",
        f"useradd --system --user-group --home-dir /var/lib/edgefleet --no-create-home "
        f"--shell /usr/sbin/nologin --groups video,render {NO_SUCH_USER}",
        f"write {tmp_path / 'agent.yaml'}",
        "systemctl daemon-reload",
        "systemctl enable --now edgefleet-agent",
    ):
        assert step in result.stdout, step


def test_writing_again_replaces_the_unit(tmp_path: Path) -> None:
    target = tmp_path / "edgefleet-agent.service"
    for profile in ("x86-cpu", "x86-l4"):
        result = runner.invoke(
            app, ["install-service", "--profile", profile, "--exec", EXEC, "--output", str(target)]
        )
        assert result.exit_code == 0, result.output
    assert "Description=edgefleet agent (x86-l4)" in target.read_text()


def test_a_missing_directory_is_not_created(tmp_path: Path) -> None:
    target = tmp_path / "systemd" / "system" / "edgefleet-agent.service"
    result = runner.invoke(app, ["install-service", "--profile", "x86-cpu", "--output", str(target)])
    assert result.exit_code == 2
    assert "is not a directory (install-service creates only the unit file)" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_profile_lists_the_known_ones() -> None:
    result = runner.invoke(app, ["install-service", "--profile", "jetson-nano-2gb", "--dry-run"])
    assert result.exit_code == 2
    assert "unknown profile 'jetson-nano-2gb'" in result.stderr
    assert "jetson-orin-nano-8gb" in result.stderr


def test_invalid_options_exit_2_naming_them() -> None:
    result = runner.invoke(
        app, ["install-service", "--profile", "x86-cpu", "--user", "Admin User", "--dry-run"]
    )
    assert result.exit_code == 2
    assert "user: 'Admin User' is not a valid user or group name" in result.stderr


def test_without_a_profile_this_device_is_detected() -> None:
    result = runner.invoke(app, ["install-service", "--dry-run"])
    assert result.exit_code == 0, result.output
    detected = runner.invoke(app, ["profile", "--json"])
    name = json.loads(detected.stdout)["profile"]
    assert f"Description=edgefleet agent ({name})" in result.stdout


def test_an_agent_under_a_home_directory_and_missing_groups_are_warned_about() -> None:
    result = runner.invoke(
        app,
        [
            "install-service",
            "--profile",
            "x86-cpu",
            "--dry-run",
            "--exec",
            "/home/ana/venv/bin/edgefleet-agent",
            "--groups",
            "video,edgefleet-no-such-group",
        ],
    )
    assert result.exit_code == 0
    assert "ProtectHome=yes hides" in result.stderr
    assert "group 'edgefleet-no-such-group' does not exist on this machine" in result.stderr
