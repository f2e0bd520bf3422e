"""The systemd unit rendered from every bundled profile, checked by systemd's own tools."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.profiles import Profile, bundled_profiles_dir, load_profiles
from agent.service import UnitOptions, render_unit
from agent.service.unit import default_exec_path
from tests.conftest import REPO

PROFILES = load_profiles(bundled_profiles_dir())
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)"
)
MAX_EXPOSURE = 3.0
COMMITTED_UNIT = REPO / "deploy" / "systemd" / "edgefleet-agent.service"
COMMITTED_PROFILE = "jetson-orin-nano-8gb"
COMMITTED_EXEC = Path("/opt/edgefleet/bin/edgefleet-agent")


def settings(unit: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit, every value of a key in order."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def write_unit(directory: Path, profile: Profile) -> Path:
    """The profile's unit, with this installation's edgefleet-agent (verify checks it exists)."""
    path = directory / "edgefleet-agent.service"
    path.write_text(render_unit(profile, UnitOptions(exec_path=default_exec_path())))
    return path


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert match, output
    return float(match.group(1))


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_limits_come_from_the_profile(name: str) -> None:
    profile = PROFILES[name]
    unit = settings(render_unit(profile))
    limits = profile.service
    assert unit["MemoryMax"] == [f"{limits.memory_max_mb}M"]
    assert unit["MemoryHigh"] == [f"{limits.memory_high_mb}M"]
    assert unit["CPUQuota"] == [f"{limits.cpu_quota_percent}%"]
    assert unit["TasksMax"] == [str(limits.tasks_max)]
    assert unit["Description"] == [f"edgefleet agent ({name})"]


def test_the_unit_runs_a_watched_notify_service_as_an_unprivileged_user() -> None:
    unit = settings(render_unit(PROFILES["x86-cpu"], UnitOptions(exec_path=COMMITTED_EXEC)))
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] == ["30"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["StartLimitIntervalSec"] == ["600"]
    assert unit["StartLimitBurst"] == ["5"]
    assert unit["User"] == ["edgefleet"]
    assert unit["SupplementaryGroups"] == ["video render"]
    assert unit["StateDirectory"] == ["edgefleet"]
    assert unit["ExecStart"] == [f"{COMMITTED_EXEC} serve --config /etc/edgefleet/agent.yaml"]
    assert unit["CapabilityBoundingSet"] == [""]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }.items():
        assert unit[key] == [value], key


def test_options_reach_the_unit_and_percent_signs_are_escaped() -> None:
    options = UnitOptions(
        exec_path=Path("/opt/edge%fleet/bin/edgefleet-agent"),
        config=Path("/srv/agent.yaml"),
        user="inspect",
        group="inspect",
        supplementary_groups=("video",),
        watchdog_sec=12,
    )
    unit = settings(render_unit(PROFILES["x86-cpu"], options))
    assert unit["ExecStart"] == ["/opt/edge%%fleet/bin/edgefleet-agent serve --config /srv/agent.yaml"]
    assert unit["User"] == ["inspect"]
    assert unit["SupplementaryGroups"] == ["video"]
    assert unit["WatchdogSec"] == ["12"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            UnitOptions(exec_path=Path("bin/edgefleet-agent")),
            "exec_path: bin/edgefleet-agent is not an absolute",
        ),
        (
            UnitOptions(config=Path("/etc/edge fleet.yaml")),
            "config: /etc/edge fleet.yaml contains whitespace",
        ),
        (UnitOptions(user="Root Admin"), "user: 'Root Admin' is not a valid"),
        (UnitOptions(supplementary_groups=("video;rm",)), "supplementary_groups: 'video;rm'"),
        (UnitOptions(watchdog_sec=0), "watchdog_sec: must be at least 1"),
    ],
)
def test_options_systemd_would_misread_are_refused(options: UnitOptions, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        render_unit(PROFILES["x86-cpu"], options)


def test_the_committed_unit_is_the_rendering_of_its_profile() -> None:
    expected = render_unit(PROFILES[COMMITTED_PROFILE], UnitOptions(exec_path=COMMITTED_EXEC))
    assert COMMITTED_UNIT.read_text() == expected, (
        "deploy/systemd/edgefleet-agent.service is stale: run `edgefleet-agent install-service "
        f"--profile {COMMITTED_PROFILE} --exec {COMMITTED_EXEC} --output {COMMITTED_UNIT.relative_to(REPO)}`"
    )


@needs_systemd_analyze
@pytest.mark.parametrize("name", sorted(PROFILES))
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path, name: str) -> None:
    unit = write_unit(tmp_path, PROFILES[name])
    done = analyze("verify", unit.name, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""  # verify warns (and still exits 0) about ignored lines


@needs_systemd_analyze
def test_systemd_analyze_verify_would_notice_a_bad_line(tmp_path: Path) -> None:
    unit = write_unit(tmp_path, PROFILES["x86-cpu"])
    unit.write_text(unit.read_text().replace("CPUQuota=400%", "CPUQuota=400%%"))
    done = analyze("verify", unit.name, cwd=tmp_path)
    assert "Invalid CPU quota" in done.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_security_exposure_is_at_most_3(tmp_path: Path, name: str) -> None:
    unit = write_unit(tmp_path, PROFILES[name])
    done = analyze("security", "--offline=true", "--no-pager", unit.name, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert exposure(done.stdout) <= MAX_EXPOSURE, done.stdout


@needs_systemd_analyze
def test_the_exposure_documented_in_docs_service_md_is_the_measured_one(tmp_path: Path) -> None:
    unit = write_unit(tmp_path, PROFILES[COMMITTED_PROFILE])
    done = analyze("security", "--offline=true", "--no-pager", unit.name, cwd=tmp_path)
    measured = exposure(done.stdout)
    assert f"exposure level **{measured:.1f}**" in (REPO / "docs" / "service.md").read_text()


@needs_systemd_analyze
def test_the_exposure_check_would_notice_a_weaker_unit(tmp_path: Path) -> None:
    unit = write_unit(tmp_path, PROFILES["x86-cpu"])
    text = unit.read_text()
    weak = text.split("# hardening")[0] + "\n[Install]\nWantedBy=multi-user.target\n"
    unit.write_text(weak)
    done = analyze("security", "--offline=true", "--no-pager", unit.name, cwd=tmp_path)
    assert exposure(done.stdout) > MAX_EXPOSURE
