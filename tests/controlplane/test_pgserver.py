"""The database fixtures hand out real, empty, isolated databases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from tests.pgserver import PostgresServer


@contextmanager
def engine_for(url: str) -> Iterator[Engine]:
    engine = sa.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _devices_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "devices",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("online", sa.Boolean, nullable=False),
    )


def test_round_trip(database_url: str) -> None:
    metadata = sa.MetaData()
    devices = _devices_table(metadata)
    with engine_for(database_url) as engine:
        assert sa.inspect(engine).get_table_names() == []
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                devices.insert(),
                [{"name": "jetson-01", "online": True}, {"name": "pi-02", "online": False}],
            )
        with engine.connect() as conn:
            rows = conn.execute(sa.select(devices.c.name, devices.c.online).order_by(devices.c.name)).all()
        assert [tuple(row) for row in rows] == [("jetson-01", True), ("pi-02", False)]
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(devices.insert(), {"name": "pi-02", "online": True})


@pytest.mark.postgres
def test_server_is_postgresql(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    name = make_url(url).database
    assert url == f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server.port}/{name}"
    try:
        with engine_for(url) as engine, engine.connect() as conn:
            assert "PostgreSQL" in conn.execute(sa.text("SELECT version()")).scalar_one()
            assert conn.execute(sa.text("SHOW fsync")).scalar_one() == "off"
            assert conn.execute(sa.text("SHOW listen_addresses")).scalar_one() == "127.0.0.1"
    finally:
        assert name is not None
        postgres_server.drop_database(name)


@pytest.mark.postgres
def test_databases_are_isolated_and_dropped(postgres_server: PostgresServer) -> None:
    first, second = postgres_server.create_database(), postgres_server.create_database()
    names = [make_url(url).database for url in (first, second)]
    assert None not in names
    assert names[0] != names[1]
    metadata = sa.MetaData()
    _devices_table(metadata)
    with engine_for(first) as engine_one, engine_for(second) as engine_two:
        metadata.create_all(engine_one)
        assert sa.inspect(engine_one).get_table_names() == ["devices"]
        assert sa.inspect(engine_two).get_table_names() == []
    # a connection still open does not stop the drop
    with psycopg.connect(
        host="127.0.0.1", port=postgres_server.port, user="postgres", dbname=names[0], autocommit=True
    ) as held:
        held.execute("SELECT 1")
        for name in names:
            assert name is not None
            postgres_server.drop_database(name)
    with psycopg.connect(
        host="127.0.0.1", port=postgres_server.port, user="postgres", dbname="postgres"
    ) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,)).fetchall()
    assert left == []
