"""Alembic migrations, applied from code (no ``alembic.ini`` to find at run time).

``upgrade(db)`` brings the schema to the newest revision; on PostgreSQL it holds an advisory
lock while doing so, so replicas starting together migrate once. ``status(db)`` says whether the
database is current (``/readyz`` uses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from controlplane.store.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x6564_6765_666C  # "edgefl": the migration advisory lock on PostgreSQL


@dataclass(frozen=True)
class MigrationStatus:
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def upgrade(db: Database, revision: str = "head") -> None:
    config = _config()
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
        try:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            conn.commit()
        finally:
            if db.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
                conn.commit()


def status(db: Database) -> MigrationStatus:
    with db.engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return MigrationStatus(current=current, head=head_revision())
