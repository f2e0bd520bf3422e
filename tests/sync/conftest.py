"""Fixtures of the sync tests: the live control plane of ``tests/controlplane`` (pytest shares
conftest fixtures only within a directory tree, so they are imported here), a device enrolled on
it with the surface-inspection release, and agents to reconcile into."""

from tests.controlplane.conftest import sqlite_control_plane  # noqa: F401
from tests.sync.fleet import agents, fleet  # noqa: F401
