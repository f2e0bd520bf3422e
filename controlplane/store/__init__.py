"""The control plane's storage: SQLAlchemy Core tables, connections and migrations."""

from controlplane.store.db import Database, as_utc, utcnow
from controlplane.store.migrate import MigrationStatus, status, upgrade

__all__ = ["Database", "MigrationStatus", "as_utc", "status", "upgrade", "utcnow"]
