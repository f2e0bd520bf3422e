"""One fleet for every end-to-end rollout test: Mosquitto, the control plane and 20 real agents in
this process (:class:`controlplane.demo.fleet.Fleet`), started once for this directory (about
10 s) and stopped when its last test is done (``scope="package"``: its 20 agents must not keep
running through the rest of the suite), running the reference model everywhere
(:func:`tests.rollout_e2e.harness.release_baseline`).

After each test any rollout it left active is aborted and the fleet is waited on until every
device is converged outside any rollout, so one failing test does not fail the next.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controlplane.demo.fleet import Fleet, FleetConfig
from tests.rollout_e2e.harness import AGENTS, DEFECT_RATE, E2E, FPS, TELEMETRY_S, release_baseline


@pytest.fixture(scope="package")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    root = tmp_path_factory.mktemp("rollout-e2e")
    config = FleetConfig(
        root / "fleet",
        agents=AGENTS,
        fps=FPS,
        defect_rate=DEFECT_RATE,
        telemetry_interval_s=TELEMETRY_S,
        controlplane={"rollout_tick_s": 1.0},
    )
    with Fleet(config) as fleet:
        release_baseline(fleet)
        models = root / "models"
        models.mkdir()
        yield E2E(fleet, models)


@pytest.fixture(autouse=True)
def settled(e2e: E2E) -> Iterator[E2E]:
    """The fleet settled before the test; a rollout the test left active aborted after it."""
    e2e.wait_settled()
    yield e2e
    if e2e.abort_active():
        e2e.wait_settled()
