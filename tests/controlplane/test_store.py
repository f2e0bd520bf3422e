"""The store on real SQLite and real PostgreSQL: migrations, readiness, and the audit chain."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from controlplane import audit
from controlplane.settings import ControlPlaneSettings
from controlplane.store import Database, migrate, utcnow
from controlplane.store.schema import audit_head, audit_log, metadata
from tests.controlplane.live import LiveControlPlane, live_control_plane


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate.upgrade(database)
    yield database
    database.dispose()


def test_migrations_create_exactly_the_schema(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    state = migrate.status(db)
    assert state.up_to_date
    assert state.current == migrate.head_revision()


def test_upgrade_is_idempotent(db: Database) -> None:
    migrate.upgrade(db)
    assert migrate.status(db).up_to_date


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/cp.db")
    try:
        with database.read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        database.dispose()


def _append(db: Database, n: int, actor: str = "operator:ana") -> None:
    for i in range(n):
        with db.write() as conn:
            audit.append(conn, actor=actor, action="test.change", resource=f"things/{i}", after={"i": i})


def test_audit_chain_verifies(db: Database) -> None:
    _append(db, 5)
    with db.read() as conn:
        report = audit.verify(conn)
    assert report.ok
    assert report.entries == 5


def test_audit_detects_an_edited_row(db: Database) -> None:
    _append(db, 5)
    with db.write() as conn:
        conn.execute(audit_log.update().where(audit_log.c.seq == 3).values(actor="operator:mallory"))
    with db.read() as conn:
        report = audit.verify(conn)
    assert not report.ok
    assert any("entry 3" in p and "edited" in p for p in report.problems)


def test_audit_detects_a_deleted_row(db: Database) -> None:
    _append(db, 5)
    with db.write() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq == 2))
    with db.read() as conn:
        report = audit.verify(conn)
    assert any("2..2 are missing" in p for p in report.problems)


def test_audit_detects_a_deleted_tail(db: Database) -> None:
    _append(db, 5)
    with db.write() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq >= 4))
    with db.read() as conn:
        report = audit.verify(conn)
    assert any("tail deleted" in p for p in report.problems)


def test_audit_detects_a_rewritten_chain_without_the_head(db: Database) -> None:
    """Re-hashing a row (someone who knows the scheme) still breaks the next row's link."""
    _append(db, 4)
    with db.write() as conn:
        row = dict(conn.execute(sa.select(audit_log).where(audit_log.c.seq == 2)).mappings().one())
        row["actor"] = "operator:mallory"
        row["at"] = utcnow()
        row["hash"] = audit._entry_hash(row)
        conn.execute(audit_log.update().where(audit_log.c.seq == 2).values(**row))
    with db.read() as conn:
        report = audit.verify(conn)
    assert any("entry 3: prev_hash" in p for p in report.problems)


def test_concurrent_appends_keep_one_chain(db: Database) -> None:
    threads = [threading.Thread(target=_append, args=(db, 10, f"operator:t{i}")) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with db.read() as conn:
        report = audit.verify(conn)
        head = conn.execute(sa.select(audit_head.c.seq)).scalar()
    assert report.ok, report.problems
    assert report.entries == head == 40


def test_a_failed_change_leaves_no_audit_entry(db: Database) -> None:
    def failing_change() -> None:
        with db.write() as conn:
            audit.append(conn, actor="operator:ana", action="test.change", resource="things/x")
            raise RuntimeError("the change failed after its audit entry was written")

    with pytest.raises(RuntimeError):
        failing_change()
    with db.read() as conn:
        assert audit.verify(conn).entries == 0


def test_readyz_reports_an_unmigrated_database(tmp_path: Path, database_url: str) -> None:
    settings = ControlPlaneSettings(
        data_dir=tmp_path / "cp", database_url=database_url, migrate_on_start=False
    )
    with live_control_plane(settings, admin=False) as live:
        response = live.client().get("/readyz")
        assert response.status_code == 503
        assert "edgefleet db upgrade" in response.json()["detail"]
        assert live.client().get("/healthz").status_code == 200


def test_readyz_on_a_migrated_database(control_plane: LiveControlPlane) -> None:
    ready = control_plane.client().get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["database"] == control_plane.services.db.dialect


def test_state_survives_a_restart(cp_settings: ControlPlaneSettings) -> None:
    with live_control_plane(cp_settings) as first:
        first.enroll("cam-restart", labels={"line": "1"})
        key_id = first.services.signer.key_id
    with live_control_plane(cp_settings) as second:
        device = second.admin().get("/api/v1/devices/cam-restart").json()
        assert device["labels"] == {"line": "1"}
        assert second.services.signer.key_id == key_id
        assert second.admin().get("/api/v1/audit/verify").json()["ok"]
