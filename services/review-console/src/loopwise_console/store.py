"""The console's SQL store: engine, migrations, and the transactions the console runs.

SQLite (the default, a file under the data directory) starts every write
transaction with `BEGIN IMMEDIATE`, so two writers never interleave; PostgreSQL
takes row locks (`SELECT ... FOR UPDATE`) on the task a claim or decision is
about. Either way a claim is one conditional update that only one caller wins.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    Row,
    and_,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url

from loopwise.events import (
    Envelope,
    ReviewTaskCreatedV1,
    ReviewTaskEscalatedV1,
    ReviewTaskExpiredV1,
    RoutingDecisionV1,
    TenantEvent,
)
from loopwise.logging import get_logger
from loopwise_console.schema import outbox, processed_events, routing_reasons, tasks

log = get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
OPEN_STATES = ("open", "second_opinion", "disputed")


def utcnow() -> datetime:
    """Now, as the naive UTC datetime the store keeps."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(moment: datetime) -> datetime:
    """An aware datetime as naive UTC (the store's form)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def aware(moment: datetime | None) -> datetime | None:
    """A stored naive UTC datetime as an aware one."""
    return None if moment is None else moment.replace(tzinfo=UTC)


def make_engine(url: str) -> Engine:
    """An engine for a SQLite path URL or a PostgreSQL URL."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy's begin event starts them
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
            conn.exec_driver_sql(f"BEGIN {mode}")

    elif engine.dialect.name != "postgresql":
        raise ValueError(f"unsupported database {engine.dialect.name!r}: use sqlite or postgresql")
    return engine


def alembic_config(connection: Connection) -> Config:
    """An Alembic configuration that runs the shipped migrations on this connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@dataclass(frozen=True)
class Materialised:
    """What applying a batch of task events did."""

    applied: int
    duplicates: int
    ignored: int


class ConsoleStore:
    """Engine, schema migrations and the materialiser's writes."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        if migrate:
            self.migrate()

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    # -- schema ----------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        with self.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")

    def schema_revision(self) -> tuple[str | None, str | None]:
        """The database's migration revision and the newest shipped one."""
        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            head = ScriptDirectory.from_config(alembic_config(conn)).get_current_head()
        return current, head

    def describe_url(self) -> str:
        """The URL without its password."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (SQLite: BEGIN IMMEDIATE)."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction that does not block writers."""
        with (
            self.engine.connect().execution_options(sqlite_begin="DEFERRED") as conn,
            conn.begin(),
        ):
            yield conn

    def lock_task(self, conn: Connection, tenants: Sequence[str], task_id: str) -> Row[Any] | None:
        """The task row, locked for this transaction (PostgreSQL row lock; SQLite holds the db)."""
        query = select(tasks).where(tasks.c.task_id == task_id, tasks.c.tenant_id.in_(tenants))
        if self.dialect == "postgresql":
            query = query.with_for_update()
        return conn.execute(query).first()

    # -- materialising -------------------------------------------------------------------------

    def materialise(self, items: Sequence[tuple[Envelope, TenantEvent]]) -> Materialised:
        """Apply task events in one transaction; an event id seen before changes nothing."""
        applied = duplicates = ignored = 0
        now = utcnow()
        with self.write() as conn:
            for envelope, event in items:
                if isinstance(event, RoutingDecisionV1):
                    # Only decisions that opened a task count; keyed by task: replays add nothing.
                    if event.task_id is not None and self._reasons(conn, event):
                        applied += 1
                    else:
                        ignored += 1
                    continue
                seen = conn.execute(
                    select(processed_events.c.event_id).where(
                        processed_events.c.event_id == envelope.id
                    )
                ).first()
                if seen is not None:
                    duplicates += 1
                    continue
                if self._apply(conn, envelope, event, now):
                    applied += 1
                else:
                    ignored += 1
                conn.execute(
                    insert(processed_events).values(
                        event_id=envelope.id,
                        tenant_id=event.tenant_id,
                        event_type=event.event_type,
                        processed_at=now,
                    )
                )
        return Materialised(applied, duplicates, ignored)

    def _reasons(self, conn: Connection, event: RoutingDecisionV1) -> bool:
        known = conn.execute(
            select(routing_reasons.c.task_id).where(
                routing_reasons.c.tenant_id == event.tenant_id,
                routing_reasons.c.task_id == event.task_id,
            )
        ).first()
        if known is not None:
            return False
        conn.execute(
            insert(routing_reasons).values(
                tenant_id=event.tenant_id,
                task_id=event.task_id,
                decision_id=event.decision_id,
                rule_id=event.rule_id,
                outcome=event.outcome,
                policy_version=event.policy_version,
                fired=json.dumps([f.model_dump(mode="json") for f in event.fired]),
                sampling_draw=event.sampling_draw,
                sample_rate=event.sample_rate,
            )
        )
        return True

    def _apply(
        self, conn: Connection, envelope: Envelope, event: TenantEvent, now: datetime
    ) -> bool:
        key = and_(tasks.c.tenant_id == event.tenant_id)
        if isinstance(event, ReviewTaskCreatedV1):
            exists = conn.execute(
                select(tasks.c.id).where(key, tasks.c.task_id == event.task_id)
            ).first()
            if exists is not None:
                # The same task id from another event id (a router replay): keep the first.
                log.info("task_already_known", task_id=event.task_id)
                return False
            conn.execute(
                insert(tasks).values(
                    tenant_id=event.tenant_id,
                    task_id=event.task_id,
                    call_id=event.call_id,
                    scope=event.scope,
                    kind=event.kind,
                    mode=event.mode,
                    priority=event.priority,
                    queue=event.queue,
                    language=event.language,
                    rule_ids=json.dumps(event.rule_ids),
                    policy_version=event.policy_version,
                    created_at=naive_utc(event.occurred_at),
                    received_at=now,
                    due_at=naive_utc(event.due_at),
                    state="open",
                    escalation_level=0,
                    breached=False,
                    source_event_id=envelope.id,
                    traceparent=envelope.traceparent,
                    body=event.model_dump_json(),
                )
            )
            return True
        if isinstance(event, ReviewTaskEscalatedV1):
            done = conn.execute(
                update(tasks)
                .where(key, tasks.c.task_id == event.task_id)
                .values(
                    priority=event.priority,
                    due_at=naive_utc(event.due_at),
                    escalation_level=event.level,
                    note=event.reason,
                )
            )
            return done.rowcount > 0
        if isinstance(event, ReviewTaskExpiredV1):
            done = conn.execute(
                update(tasks)
                .where(key, tasks.c.task_id == event.task_id, tasks.c.state.in_(OPEN_STATES))
                .values(
                    state="expired",
                    note=f"{event.action}: {event.reason}",
                    claimed_by=None,
                    lease_until=None,
                )
            )
            return done.rowcount > 0
        return False

    # -- outbox ------------------------------------------------------------------------------

    def pending_outbox(self, limit: int = 500) -> list[Row[Any]]:
        """Outbox rows not yet published, oldest first."""
        with self.read() as conn:
            return list(
                conn.execute(
                    select(outbox)
                    .where(outbox.c.published_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(limit)
                )
            )

    def outbox_backlog(self) -> int:
        """How many outbox rows wait to be published."""
        with self.read() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
                ).scalar_one()
            )

    def mark_published(self, ids: Sequence[int], failed: dict[int, str]) -> None:
        """Record which outbox rows the brokers acknowledged and which failed (and why)."""
        now = utcnow()
        with self.write() as conn:
            if ids:
                conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(list(ids)))
                    .values(published_at=now, attempts=outbox.c.attempts + 1)
                )
            for row_id, error in failed.items():
                conn.execute(
                    update(outbox)
                    .where(outbox.c.id == row_id)
                    .values(attempts=outbox.c.attempts + 1, last_error=error[:2000])
                )

    # -- gauges ------------------------------------------------------------------------------

    def queue_stats(
        self, conn: Connection, tenants: Sequence[str] | None, now: datetime
    ) -> dict[str, tuple[int, float]]:
        """Per priority: open tasks and the age in seconds of the oldest."""
        query = select(tasks.c.priority, func.count(), func.min(tasks.c.created_at)).where(
            tasks.c.state.in_(OPEN_STATES)
        )
        if tenants is not None:
            query = query.where(tasks.c.tenant_id.in_(tenants))
        stats: dict[str, tuple[int, float]] = {}
        for priority, count, oldest in conn.execute(query.group_by(tasks.c.priority)):
            age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
            stats[priority] = (int(count), age)
        return stats

    def mark_breaches(self, now: datetime) -> dict[str, int]:
        """Flag open tasks past their deadline once; return how many newly breached per priority."""
        with self.write() as conn:
            rows = list(
                conn.execute(
                    select(tasks.c.id, tasks.c.priority).where(
                        tasks.c.state.in_(OPEN_STATES),
                        tasks.c.breached.is_(False),
                        tasks.c.due_at <= now,
                    )
                )
            )
            if rows:
                conn.execute(
                    update(tasks).where(tasks.c.id.in_([r.id for r in rows])).values(breached=True)
                )
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.priority] = counts.get(row.priority, 0) + 1
        return counts


def lease_free(now: datetime) -> Any:
    """SQL condition: nobody holds an unexpired lease on the task."""
    return or_(tasks.c.claimed_by.is_(None), tasks.c.lease_until <= now)
