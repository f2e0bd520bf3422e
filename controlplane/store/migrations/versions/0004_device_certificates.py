"""device certificates: the client certificate's serial and the decommission time, for the CRL

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 01:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("certificate_serial", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("decommissioned_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("decommissioned_at")
        batch_op.drop_column("certificate_serial")
