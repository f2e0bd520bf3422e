"""Fixtures of the rollout tests: the live control plane of ``tests/controlplane``, a device
enrolled on it with the surface-inspection release, agents, and a transport that can cut the
network."""

from collections.abc import Iterator

import pytest

from tests.controlplane.conftest import sqlite_control_plane  # noqa: F401
from tests.rollout.helpers import SwitchableTransport
from tests.sync.fleet import agents, fleet  # noqa: F401


@pytest.fixture
def transport() -> Iterator[SwitchableTransport]:
    transport = SwitchableTransport()
    yield transport
    transport.close()
