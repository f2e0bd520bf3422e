"""sync: desired state, ingest, telemetry, events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 18:43:18.204893
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "desired_states",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_desired_states")),
    )
    op.create_table(
        "events",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("workflow_id", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("message", sa.String(length=2048), nullable=False),
        sa.Column("lineage", sa.JSON(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("thumbnail", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", "seq", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_at", ["at"], unique=False)

    op.create_table(
        "ingested_records",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "seq", name=op.f("pk_ingested_records")),
    )
    op.create_table(
        "system_minutes",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "minute", name=op.f("pk_system_minutes")),
    )
    op.create_table(
        "telemetry_minutes",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=128), nullable=False),
        sa.Column("lineage", sa.String(length=64), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workflow_version", sa.BigInteger(), nullable=False),
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("threshold_set", sa.String(length=128), nullable=False),
        sa.Column("threshold_version", sa.BigInteger(), nullable=False),
        sa.Column("rollout_id", sa.String(length=64), nullable=False),
        sa.Column("cohort", sa.String(length=16), nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.Column("passed", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("skipped", sa.BigInteger(), nullable=False),
        sa.Column("dropped_frames", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.JSON(), nullable=False),
        sa.Column("node_latency_ms", sa.JSON(), nullable=False),
        sa.Column("model_latency_ms", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint(
            "device_id", "workflow_id", "lineage", "minute", name=op.f("pk_telemetry_minutes")
        ),
    )
    with op.batch_alter_table("telemetry_minutes", schema=None) as batch_op:
        batch_op.create_index("ix_telemetry_minutes_minute", ["minute"], unique=False)

    op.create_table(
        "workflow_assignments",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assigned_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name", "target_kind", "target", name=op.f("pk_workflow_assignments")),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("online", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("status_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("mqtt_password_hash", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("mqtt_password_hash")
        batch_op.drop_column("status_at")
        batch_op.drop_column("online")

    op.drop_table("workflow_assignments")
    with op.batch_alter_table("telemetry_minutes", schema=None) as batch_op:
        batch_op.drop_index("ix_telemetry_minutes_minute")

    op.drop_table("telemetry_minutes")
    op.drop_table("system_minutes")
    op.drop_table("ingested_records")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_at")

    op.drop_table("events")
    op.drop_table("desired_states")
