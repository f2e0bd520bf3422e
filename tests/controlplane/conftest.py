"""Control plane fixtures: the store's database, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from controlplane.settings import ControlPlaneSettings
from tests.controlplane.live import LiveControlPlane, live_control_plane
from tests.pgserver import PostgresServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, started on first use and stopped at the end.

    Its directory lives under the system temp dir rather than pytest's: as root the server runs as
    the ``postgres`` user, who cannot enter pytest's 0700 temp dirs, and unix socket paths must stay
    short.
    """
    base_dir = Path(tempfile.mkdtemp(prefix="edgefleet-pg-"))
    try:
        base_dir.chmod(0o755)
        server = PostgresServer.start(base_dir)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLAlchemy URL of an empty database: a SQLite file, or a fresh database on the test server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/controlplane.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    try:
        yield url
    finally:
        name = make_url(url).database
        assert name is not None
        server.drop_database(name)


@pytest.fixture
def cp_settings(tmp_path: Path, database_url: str) -> ControlPlaneSettings:
    """Settings for a control plane on ``database_url`` (SQLite and PostgreSQL) in ``tmp_path``."""
    return ControlPlaneSettings(
        data_dir=tmp_path / "cp",
        database_url=database_url,
        schema_dirs=[EXAMPLES / "schemas"],
    )


@pytest.fixture
def control_plane(cp_settings: ControlPlaneSettings) -> Iterator[LiveControlPlane]:
    """A running control plane (uvicorn on a free port) with an admin token ready."""
    with live_control_plane(cp_settings) as live:
        yield live


@pytest.fixture
def sqlite_control_plane(tmp_path: Path) -> Iterator[LiveControlPlane]:
    """A running control plane on SQLite only, for tests where the database does not matter."""
    settings = ControlPlaneSettings(data_dir=tmp_path / "cp", schema_dirs=[EXAMPLES / "schemas"])
    with live_control_plane(settings) as live:
        yield live
