"""Fixtures of the rollout tests: the live control plane of ``tests/controlplane``."""

from tests.controlplane.conftest import sqlite_control_plane  # noqa: F401
