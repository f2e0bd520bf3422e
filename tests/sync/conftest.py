"""Fixtures of the sync tests: the live control plane of ``tests/controlplane`` (pytest shares
conftest fixtures only within a directory tree, so they are imported here)."""

from tests.controlplane.conftest import sqlite_control_plane  # noqa: F401
