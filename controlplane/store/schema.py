"""The control plane's tables (SQLAlchemy Core). Alembic migrations in ``migrations/`` create
them; a test checks that the migrations and this module agree.

Conventions: times are UTC (``DateTime(timezone=True)``); mutable rows carry a ``revision``
that every update increments (it is the row's ETag); versioned artifacts are immutable rows
keyed by ``(name, version)``.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Time = sa.DateTime(timezone=True)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("profile", sa.String(128)),
    sa.Column("hostname", sa.String(255)),
    sa.Column("status", sa.String(16), nullable=False),  # active | decommissioned
    sa.Column("enrolled_at", Time, nullable=False),
    sa.Column("last_seen_at", Time),
    sa.Column("reported_state", sa.JSON),
    sa.Column("reported_at", Time),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("online", sa.Boolean),  # from the device's retained MQTT status; None until it reports
    sa.Column("status_at", Time),
    sa.Column("mqtt_password_hash", sa.String(256)),  # Mosquitto password-file format, never plaintext
    sa.Column("certificate_serial", sa.String(64)),  # hex serial of the MQTT client certificate, if any
    sa.Column("decommissioned_at", Time),
)

groups = sa.Table(
    "groups",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.String(1024), nullable=False),
    sa.Column("selector", sa.JSON),  # {label: value}: every label must match
    sa.Column("members", sa.JSON),  # [device id]: a static list
    sa.Column("created_at", Time, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # operator | device | enrollment
    sa.Column("subject", sa.String(128), nullable=False),  # operator name or device id
    sa.Column("role", sa.String(16)),  # operators: viewer | operator | admin
    sa.Column("attributes", sa.JSON, nullable=False),  # operators: caller attributes for policies
    sa.Column("policies", sa.JSON, nullable=False),  # operators: names of attached policies
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("expires_at", Time),
    sa.Column("revoked_at", Time),
    sa.Column("used_at", Time),  # enrollment tokens are single-use
    sa.Column("details", sa.JSON, nullable=False),  # enrollment: labels/profile to apply
    sa.Index("ix_tokens_subject", "kind", "subject"),
)

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.String(1024), nullable=False),
    sa.Column("permissions", sa.JSON, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("onnx", sa.JSON, nullable=False),  # inputs, outputs, opset, producer
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("description", sa.String(1024), nullable=False),
    sa.Column("manifest", sa.JSON, nullable=False),  # the signed release manifest
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
)

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("models", sa.JSON, nullable=False),  # [{name, version}] the graph uses
    sa.Column("manifest", sa.JSON, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
)

threshold_sets = sa.Table(
    "threshold_sets",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("thresholds", sa.JSON, nullable=False),  # {node id: {class: value}}
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("manifest", sa.JSON, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
)

threshold_assignments = sa.Table(
    "threshold_assignments",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("target_kind", sa.String(16), primary_key=True),  # group | device
    sa.Column("target", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("assigned_at", Time, nullable=False),
    sa.Column("assigned_by", sa.String(128), nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("actor", sa.String(160), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("resource", sa.String(255), nullable=False),
    sa.Column("before_digest", sa.String(64)),
    sa.Column("after_digest", sa.String(64)),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

# One row (id = 1): the chain's head. Appending locks it, so entries are written one at a time
# across processes and replicas.
audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

workflow_assignments = sa.Table(
    "workflow_assignments",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("target_kind", sa.String(16), primary_key=True),  # group | device
    sa.Column("target", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("assigned_at", Time, nullable=False),
    sa.Column("assigned_by", sa.String(128), nullable=False),
    # Written by a rollout's promotion: {"rollout_id", "models": {name: version},
    # "threshold_sets": {name: version}}. Honoured only while assigned_by is "rollout:<rollout_id>",
    # so any later assignment of the row drops them.
    sa.Column("pins", sa.JSON),
)

# The desired state last computed for each device (a serialized edgefleet.v1.DesiredState).
# ``digest`` covers the content without generation and time, so recomputing an unchanged state
# does not bump the generation.
desired_states = sa.Table(
    "desired_states",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)

# Every outbox record stored, by (device, seq): ingest is idempotent on it.
ingested_records = sa.Table(
    "ingested_records",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(16), nullable=False),  # telemetry | event
    sa.Column("created_at", Time, nullable=False),
    sa.Column("stored_at", Time, nullable=False),
)

# Per device, workflow, lineage and minute: run counts and merged latency histograms.
telemetry_minutes = sa.Table(
    "telemetry_minutes",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("workflow_id", sa.String(128), primary_key=True),
    sa.Column("lineage", sa.String(64), primary_key=True),  # digest of the lineage fields below
    sa.Column("minute", Time, primary_key=True),
    sa.Column("workflow_version", sa.BigInteger, nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("threshold_set", sa.String(128), nullable=False),
    sa.Column("threshold_version", sa.BigInteger, nullable=False),
    sa.Column("rollout_id", sa.String(64), nullable=False),
    sa.Column("cohort", sa.String(16), nullable=False),
    sa.Column("runs", sa.BigInteger, nullable=False),
    sa.Column("passed", sa.BigInteger, nullable=False),
    sa.Column("failed", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("skipped", sa.BigInteger, nullable=False),
    sa.Column("dropped_frames", sa.BigInteger, nullable=False),
    sa.Column("latency_ms", sa.JSON, nullable=False),  # {bounds, counts, sum, count}
    sa.Column("node_latency_ms", sa.JSON, nullable=False),  # {node: histogram}
    sa.Column("model_latency_ms", sa.JSON, nullable=False),  # {model: histogram}
    # Shadow runs (cohort "shadow"): frames compared with the active plan, same decision, frames
    # with a score on both sides, and the sum of |candidate score - active score| over those.
    sa.Column("shadow_compared", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("shadow_agreed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("shadow_scored", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("shadow_score_drift_sum", sa.Float, nullable=False, server_default="0"),
    sa.Index("ix_telemetry_minutes_minute", "minute"),
    sa.Index("ix_telemetry_minutes_rollout", "rollout_id", "cohort", "minute"),
)

# The latest system metrics each device sent, per minute.
system_minutes = sa.Table(
    "system_minutes",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("minute", Time, primary_key=True),
    sa.Column("metrics", sa.JSON, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("workflow_id", sa.String(128), nullable=False),
    sa.Column("run_id", sa.String(128), nullable=False),
    sa.Column("message", sa.String(2048), nullable=False),
    sa.Column("lineage", sa.JSON, nullable=False),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("thumbnail", sa.LargeBinary),
    sa.Index("ix_events_at", "at"),
)

# Canary rollouts (docs/rollouts.md). ``spec`` is the validated spec with defaults filled in;
# ``bundle`` the resolved artifact set, ``bundle_bytes`` its canonical JSON (what is signed) and
# ``bundle_manifest`` the signed release manifest (JSON bytes) of kind "bundle".
rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),  # "r-" + 10 hex digits
    sa.Column("workflow", sa.String(128), nullable=False),
    sa.Column("target", sa.JSON, nullable=False),  # {"group"|"selector"|"devices": …}
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("bundle", sa.JSON, nullable=False),
    sa.Column("bundle_bytes", sa.LargeBinary, nullable=False),
    sa.Column("bundle_sha256", sa.String(64), nullable=False),
    sa.Column("bundle_manifest", sa.LargeBinary, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # running | paused | promoted | aborted
    sa.Column("step_index", sa.Integer, nullable=False),
    sa.Column("step_started_at", Time, nullable=False),
    sa.Column("paused_reason", sa.String(1024)),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(160), nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("finished_at", Time),
    sa.Column("reason", sa.String(2048)),  # why it ended
    sa.Column("analysis", sa.JSON),  # the latest analysis of the current step (also "wait")
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Index("ix_rollouts_state", "state", "workflow"),
    sa.Index("ix_rollouts_created", "created_at", "id"),
)

# Every transition of a rollout, with the values, thresholds and samples behind it.
rollout_decisions = sa.Table(
    "rollout_decisions",
    metadata,
    sa.Column("rollout_id", sa.String(16), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("step_index", sa.Integer, nullable=False),
    sa.Column("step", sa.String(16), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # start | promote | abort | pause | resume
    sa.Column("actor", sa.String(160), nullable=False),
    sa.Column("reason", sa.String(2048), nullable=False),
    sa.Column("criteria", sa.JSON, nullable=False),
)
