"""rollouts: rollouts, decisions, assignment pins, shadow telemetry

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 09:12:41.118204
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("workflow", sa.String(length=128), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("bundle", sa.JSON(), nullable=False),
        sa.Column("bundle_bytes", sa.LargeBinary(), nullable=False),
        sa.Column("bundle_sha256", sa.String(length=64), nullable=False),
        sa.Column("bundle_manifest", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paused_reason", sa.String(length=1024), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=160), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=2048), nullable=True),
        sa.Column("analysis", sa.JSON(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.create_index("ix_rollouts_created", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_rollouts_state", ["state", "workflow"], unique=False)

    op.create_table(
        "rollout_decisions",
        sa.Column("rollout_id", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=160), nullable=False),
        sa.Column("reason", sa.String(length=2048), nullable=False),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("rollout_id", "seq", name=op.f("pk_rollout_decisions")),
    )
    with op.batch_alter_table("workflow_assignments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pins", sa.JSON(), nullable=True))

    with op.batch_alter_table("telemetry_minutes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shadow_compared", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("shadow_agreed", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("shadow_scored", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("shadow_score_drift_sum", sa.Float(), server_default="0", nullable=False)
        )
        batch_op.create_index(
            "ix_telemetry_minutes_rollout", ["rollout_id", "cohort", "minute"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("telemetry_minutes", schema=None) as batch_op:
        batch_op.drop_index("ix_telemetry_minutes_rollout")
        batch_op.drop_column("shadow_score_drift_sum")
        batch_op.drop_column("shadow_scored")
        batch_op.drop_column("shadow_agreed")
        batch_op.drop_column("shadow_compared")

    with op.batch_alter_table("workflow_assignments", schema=None) as batch_op:
        batch_op.drop_column("pins")

    op.drop_table("rollout_decisions")
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_index("ix_rollouts_state")
        batch_op.drop_index("ix_rollouts_created")

    op.drop_table("rollouts")
