"""The console's tables (SQLAlchemy Core). Alembic migrations under `migrations/` create them.

Times are stored as naive UTC datetimes; JSON columns hold small documents as text.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

_ID = BigInteger().with_variant(Integer, "sqlite")

tasks = Table(
    "tasks",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("tenant_id", String(128), nullable=False),
    Column("task_id", String(200), nullable=False),
    Column("call_id", String(128), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("priority", String(4), nullable=False),
    Column("queue", String(200), nullable=True),
    Column("language", String(16), nullable=True),
    Column("rule_ids", Text, nullable=False),  # JSON list
    Column("policy_version", String(128), nullable=False),
    Column("created_at", DateTime, nullable=False),  # the task event's occurred_at
    Column("received_at", DateTime, nullable=False),
    Column("due_at", DateTime, nullable=False),
    Column("state", String(16), nullable=False),  # open, second_opinion, disputed, decided, expired
    Column("escalation_level", Integer, nullable=False, default=0),
    Column("claimed_by", String(128), nullable=True),
    Column("claimed_at", DateTime, nullable=True),
    Column("lease_until", DateTime, nullable=True),
    Column("decided_at", DateTime, nullable=True),
    Column("verdict", String(16), nullable=True),
    Column("decision_id", String(200), nullable=True),
    Column("breached", Boolean, nullable=False, default=False),
    Column("note", Text, nullable=True),
    Column("source_event_id", String(200), nullable=False),
    Column("traceparent", String(64), nullable=True),
    Column("body", Text, nullable=False),  # the ReviewTaskCreatedV1 as JSON
    UniqueConstraint("tenant_id", "task_id", name="tasks_tenant_task"),
    Index("tasks_queue", "tenant_id", "state", "priority", "due_at"),
    Index("tasks_task_id", "task_id"),
)

processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("tenant_id", String(128), nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("processed_at", DateTime, nullable=False),
)

submissions = Table(
    "submissions",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("tenant_id", String(128), nullable=False),
    Column("task_id", String(200), nullable=False),
    Column("reviewer_id", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("payload", Text, nullable=False),  # JSON: corrections, labels, verdicts, comment
    Column("submitted_at", DateTime, nullable=False),
    Column("seconds_to_decide", Float, nullable=True),
    Column("superseded", Boolean, nullable=False, default=False),
    Index("submissions_task", "tenant_id", "task_id"),
)

blind_labels = Table(
    "blind_labels",
    metadata,
    Column("tenant_id", String(128), primary_key=True),
    Column("task_id", String(200), primary_key=True),
    Column("reviewer_id", String(128), primary_key=True),
    Column("labels", Text, nullable=False),  # JSON {segment_id: label}
    Column("given_at", DateTime, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("event_id", String(200), nullable=False, unique=True),
    Column("topic", String(249), nullable=False),
    Column("key", String(200), nullable=False),
    Column("value", Text, nullable=False),
    Column("headers", Text, nullable=False),  # JSON [[name, value], ...]
    Column("created_at", DateTime, nullable=False),
    Column("published_at", DateTime, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Index("outbox_pending", "published_at", "id"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("token_id", String(16), nullable=False, unique=True),
    Column("subject", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("tenants", Text, nullable=False),  # JSON list
    Column("label", String(200), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("revoked_at", DateTime, nullable=True),
)

routing_reasons = Table(
    "routing_reasons",
    metadata,
    # The routing decision that opened a task: its fired conditions and observed values.
    Column("tenant_id", String(128), primary_key=True),
    Column("task_id", String(200), primary_key=True),
    Column("decision_id", String(200), nullable=False),
    Column("rule_id", String(128), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("policy_version", String(128), nullable=False),
    Column("fired", Text, nullable=False),  # JSON [{rule_id, condition, observed}]
    Column("sampling_draw", Float, nullable=True),
    Column("sample_rate", Float, nullable=True),
)
