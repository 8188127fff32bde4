"""The database schema, as SQLAlchemy Core tables. Migrations must produce exactly this."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

# Deterministic constraint names so migrations and models compare equal on every dialect.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Integer primary keys autoincrement on SQLite only when declared INTEGER PRIMARY KEY.
PK = BigInteger().with_variant(Integer(), "sqlite")

projects = Table(
    "projects",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    # sha256 of the key: keys are long random tokens, so a fast hash is the right tool.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("project_id", String(40), ForeignKey("projects.id"), nullable=False),
    Column("scope", String(20), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
    # When a request last authenticated with it (to within a minute).
    Column("last_used_at", BigInteger),
)

files = Table(
    "files",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("project_id", String(40), ForeignKey("projects.id"), nullable=False),
    Column("filename", String(512), nullable=False),
    Column("purpose", String(40), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("format", String(20)),
    Column("examples", Integer),
    Index(None, "project_id", "pk"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("project_id", String(40), ForeignKey("projects.id"), nullable=False),
    Column("model", String(256), nullable=False),
    Column("training_file", String(40), nullable=False),
    Column("validation_file", String(40)),
    Column("status", String(20), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger),
    Column("method", JSON, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("suffix", String(64)),
    # none_as_null: a job without metadata stores SQL NULL (not JSON null), so that the
    # `metadata=null` filter is a plain IS NULL on every dialect.
    Column("metadata", JSON(none_as_null=True)),
    Column("fine_tuned_model", String(512)),
    Column("trained_tokens", BigInteger),
    Column("estimated_finish", BigInteger),
    Column("error", JSON(none_as_null=True)),
    Column("result_files", JSON, nullable=False),
    Column("control", String(20)),
    Column("event_key", String(16), nullable=False, unique=True),
    # The sequence number of the job's newest event; appends advance it under a row lock.
    Column("last_event_seq", BigInteger, nullable=False, default=0),
    # The worker that holds the job while it runs, and when it last said so.
    Column("worker_id", String(128)),
    Column("heartbeat_at", BigInteger),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    # The last event batch applied from the current attempt's worker: a retried batch
    # (its answer lost) is recognised and not appended twice.
    Column("worker_batch", BigInteger, nullable=False, default=0, server_default="0"),
    # The highest training step reported in a metrics event, across attempts.
    Column("reported_step", BigInteger, nullable=False, default=0, server_default="0"),
    # When the fine-tuned model was deleted (DELETE /v1/models/…): the job keeps its
    # name, the model stops answering.
    Column("model_deleted_at", BigInteger),
    Index(None, "project_id", "pk"),
    Index(None, "status", "pk"),
    Index(None, "fine_tuned_model"),
)

job_checkpoints = Table(
    "job_checkpoints",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("job_pk", PK, ForeignKey("jobs.pk", ondelete="CASCADE"), nullable=False),
    Column("step_number", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("fine_tuned_model_checkpoint", String(600), nullable=False),
    Index(None, "job_pk", "step_number", unique=True),
)

# A project's right to another project's fine-tuned model or checkpoint, by its model
# name; it goes with the job that made the model.
checkpoint_permissions = Table(
    "checkpoint_permissions",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("job_pk", PK, ForeignKey("jobs.pk", ondelete="CASCADE"), nullable=False),
    Column("model", String(600), nullable=False),
    Column("project_id", String(40), ForeignKey("projects.id"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "model", "project_id", unique=True),
    Index(None, "project_id"),
)

# One row per event, clustered on (job, seq): a page is one range scan of the primary
# key at any depth, and the public event id is derived from (job event key, seq).
job_events = Table(
    "job_events",
    metadata,
    Column("job_pk", PK, ForeignKey("jobs.pk", ondelete="CASCADE"), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("created_at", BigInteger, nullable=False),
    Column("level", String(5), nullable=False),
    Column("type", String(7), nullable=False),
    Column("message", Text, nullable=False),
    # Compact JSON text, NULL for an empty object: most message events carry no data.
    Column("data", Text),
    sqlite_with_rowid=False,
)

# Per project: where terminal transitions of its jobs are posted, signed with `secret`.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("project_id", String(40), ForeignKey("projects.id"), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("secret", String(100), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "project_id", "pk"),
)

# The outbox: one row per event and endpoint, written in the transaction of the job's
# terminal transition, sent (and retried) by the delivery loop.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column(
        "endpoint_pk", PK, ForeignKey("webhook_endpoints.pk", ondelete="CASCADE"), nullable=False
    ),
    Column("event_id", String(40), nullable=False),
    Column("type", String(64), nullable=False),
    Column("job_id", String(40), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("payload", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    # When it may be sent (again); NULL once delivered, or given up.
    Column("next_attempt_at", BigInteger),
    Column("delivered_at", BigInteger),
    Column("last_status", Integer),
    Column("last_error", String(500)),
    Index(None, "next_attempt_at"),
    Index(None, "endpoint_pk", "pk"),
)
