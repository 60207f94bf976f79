"""The audit store: one append-only, hash-chained table in SQLite or PostgreSQL (SQLAlchemy Core).

Every tenant has its own chain: record `seq` n (from 1) carries the hash of
record n-1 (64 zeros for the first) and its own hash over that and its
canonical body. Appends of one batch run in one transaction that holds the
tenant's chain lock (`BEGIN IMMEDIATE` in SQLite, an advisory transaction lock
in PostgreSQL), so concurrent writers never fork a chain. Triggers refuse
UPDATE and DELETE (and TRUNCATE in PostgreSQL); unique indexes make an event id
appear once per tenant, so a redelivered event adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from loopwise.logging import get_logger
from loopwise_audit.chain import GENESIS_HASH, canonical_json, record_hash
from loopwise_audit.handler import AuditEntry, utc_text

log = get_logger(__name__)
metadata = MetaData()

audit_records = Table(
    "audit_records",
    metadata,
    # SQLite needs INTEGER PRIMARY KEY for an alias of its rowid; PostgreSQL gets BIGINT.
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant_id", String(128), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("call_id", String(128), nullable=True),
    Column("occurred_at", String(32), nullable=False),
    Column("recorded_at", String(32), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("record_hash", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Index("audit_records_tenant_seq", "tenant_id", "seq", unique=True),
    Index("audit_records_tenant_event", "tenant_id", "event_id", unique=True),
    Index("audit_records_tenant_call", "tenant_id", "call_id"),
    Index("audit_records_tenant_recorded", "tenant_id", "recorded_at"),
)

_SQLITE_GUARDS = [
    """CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
       BEGIN SELECT RAISE(ABORT, 'audit records are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
       BEGIN SELECT RAISE(ABORT, 'audit records are append-only: DELETE refused'); END""",
]

_POSTGRES_GUARDS = [
    """CREATE OR REPLACE FUNCTION audit_records_append_only() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'audit records are append-only: %% refused', TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    "DROP TRIGGER IF EXISTS audit_records_no_change ON audit_records",
    """CREATE TRIGGER audit_records_no_change BEFORE UPDATE OR DELETE ON audit_records
       FOR EACH ROW EXECUTE FUNCTION audit_records_append_only()""",
    "DROP TRIGGER IF EXISTS audit_records_no_truncate ON audit_records",
    """CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
       FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only()""",
    "REVOKE UPDATE, DELETE, TRUNCATE ON audit_records FROM PUBLIC",
]

IN_CHUNK = 500


class UnguardedStore(RuntimeError):
    """The audit table lacks its append-only triggers and they cannot be installed."""


@dataclass(frozen=True)
class StoredRecord:
    """One row of the audit table as stored (possibly tampered with)."""

    id: int
    tenant_id: str
    seq: int
    event_id: str
    event_type: str
    call_id: str | None
    occurred_at: str
    recorded_at: str
    prev_hash: str
    record_hash: str
    body: str

    def facts(self) -> dict[str, Any]:
        """The parsed body."""
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass(frozen=True)
class ChainHead:
    """The newest record of a tenant's chain."""

    tenant_id: str
    seq: int
    record_hash: str
    recorded_at: str


@dataclass
class AppendResult:
    """What one append did: new heads per tenant and how many events were already there."""

    appended: int
    duplicates: int
    heads: dict[str, ChainHead]


def make_engine(url: str) -> Engine:
    """An engine for a SQLite path URL or a PostgreSQL URL, with durable commits."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        _sqlite_setup(engine)
    return engine


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event decide how transactions start (pysqlite would defer).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # a commit is on disk before offsets move
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


class AuditStore:
    """Appends to and reads the per-tenant hash chains."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        if create:
            self.create_schema()

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    def create_schema(self) -> None:
        """Create the table, indexes and append-only guards if missing; refuse to run unguarded.

        Once the table exists nothing is altered, so the writer can run as a role that may
        only SELECT and INSERT; if the guards are gone and cannot be put back, it stops.
        """
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(4242000001)"))
            if not inspect(conn).has_table(audit_records.name):
                metadata.create_all(conn)
                self._install_guards(conn)
                return
            missing = self.missing_guards(conn)
        if missing:
            log.warning("append_only_guards_missing", triggers=missing)
            try:
                with self.engine.begin() as conn:
                    self._install_guards(conn)
            except DBAPIError as exc:
                raise UnguardedStore(
                    f"append-only trigger(s) {', '.join(missing)} are missing from "
                    f"audit_records and cannot be installed: {exc.orig}"
                ) from exc

    def _install_guards(self, conn: Connection) -> None:
        for statement in _SQLITE_GUARDS if self.dialect == "sqlite" else _POSTGRES_GUARDS:
            conn.exec_driver_sql(statement)

    def missing_guards(self, conn: Connection) -> list[str]:
        """Append-only triggers that should be on the table and are not."""
        if self.dialect == "sqlite":
            wanted = {"audit_records_no_update", "audit_records_no_delete"}
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?"
            found = set(conn.exec_driver_sql(query, (audit_records.name,)).scalars())
        else:
            wanted = {"audit_records_no_change", "audit_records_no_truncate"}
            query = (
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_records'::regclass "
                "AND tgenabled <> 'D'"
            )
            found = set(conn.exec_driver_sql(query).scalars())
        return sorted(wanted - found)

    def exists(self, conn: Connection | None = None) -> bool:
        """True if the audit table is there (read-only commands never create it)."""
        if conn is not None:
            return bool(inspect(conn).has_table(audit_records.name))
        with self.reader() as own:
            return bool(inspect(own).has_table(audit_records.name))

    def reader(self) -> Connection:
        """A connection for reading (in SQLite a snapshot that does not block the writer)."""
        return self.engine.connect().execution_options(sqlite_begin="DEFERRED")

    # -- appending -------------------------------------------------------------------------

    def append(self, entries: Sequence[AuditEntry], *, now: datetime | None = None) -> AppendResult:
        """Chain and insert entries in one transaction; events already recorded are skipped."""
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    return self.append_in(conn, entries, now=now)
            except IntegrityError:
                # Another writer recorded one of these events or advanced a chain first: redo.
                if attempt == 4:
                    raise
            except OperationalError as exc:
                if "locked" not in str(exc) or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def append_in(
        self, conn: Connection, entries: Sequence[AuditEntry], *, now: datetime | None = None
    ) -> AppendResult:
        """Chain and insert entries inside the caller's transaction."""
        recorded_at = utc_text(now or datetime.now(UTC))
        by_tenant: dict[str, list[AuditEntry]] = {}
        for entry in entries:
            by_tenant.setdefault(entry.tenant_id, []).append(entry)
        rows: list[dict[str, Any]] = []
        heads: dict[str, ChainHead] = {}
        duplicates = 0
        for tenant in sorted(by_tenant):  # lock order is fixed, so writers cannot deadlock
            self._lock_chain(conn, tenant)
            fresh = self._unrecorded(conn, tenant, by_tenant[tenant])
            duplicates += len(by_tenant[tenant]) - len(fresh)
            if not fresh:
                continue
            head = self.head(conn, tenant)
            seq, prev = (head.seq, head.record_hash) if head else (0, GENESIS_HASH)
            for entry in fresh:
                seq += 1
                body = canonical_json({**entry.facts, "seq": seq, "recorded_at": recorded_at})
                digest = record_hash(prev, body)
                rows.append(
                    {
                        "tenant_id": tenant,
                        "seq": seq,
                        "event_id": entry.event_id,
                        "event_type": entry.event_type,
                        "call_id": entry.call_id,
                        "occurred_at": entry.occurred_at,
                        "recorded_at": recorded_at,
                        "prev_hash": prev,
                        "record_hash": digest,
                        "body": body,
                    }
                )
                prev = digest
            heads[tenant] = ChainHead(tenant, seq, prev, recorded_at)
        if rows:
            conn.execute(audit_records.insert(), rows)
        return AppendResult(appended=len(rows), duplicates=duplicates, heads=heads)

    def _lock_chain(self, conn: Connection, tenant: str) -> None:
        if self.dialect == "postgresql":
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:t, 42))"), {"t": tenant}
            )
        # SQLite: BEGIN IMMEDIATE already holds the database's only write lock.

    def _unrecorded(
        self, conn: Connection, tenant: str, entries: list[AuditEntry]
    ) -> list[AuditEntry]:
        unique: dict[str, AuditEntry] = {}
        for entry in entries:
            unique.setdefault(entry.event_id, entry)
        ids = list(unique)
        seen: set[str] = set()
        col = audit_records.c
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start : start + IN_CHUNK]
            query = select(col.event_id).where(col.tenant_id == tenant, col.event_id.in_(chunk))
            seen.update(conn.execute(query).scalars())
        return [e for i, e in unique.items() if i not in seen]

    # -- reading ---------------------------------------------------------------------------

    def head(self, conn: Connection, tenant: str) -> ChainHead | None:
        """The newest record of a tenant's chain, if any."""
        col = audit_records.c
        row = conn.execute(
            select(col.seq, col.record_hash, col.recorded_at)
            .where(col.tenant_id == tenant)
            .order_by(col.seq.desc())
            .limit(1)
        ).first()
        return ChainHead(tenant, row.seq, row.record_hash, row.recorded_at) if row else None

    def heads(self, conn: Connection) -> dict[str, ChainHead]:
        """The head of every tenant's chain."""
        return {t: h for t in self.tenants(conn) if (h := self.head(conn, t)) is not None}

    def tenants(self, conn: Connection) -> list[str]:
        """Tenants with at least one record."""
        col = audit_records.c
        return list(
            conn.execute(select(col.tenant_id).distinct().order_by(col.tenant_id)).scalars()
        )

    def records(
        self,
        conn: Connection,
        tenant: str,
        *,
        since: str | None = None,
        until: str | None = None,
        call_id: str | None = None,
    ) -> Iterator[StoredRecord]:
        """A tenant's records in chain order (ties in seq by row id), optionally filtered."""
        col = audit_records.c
        query = select(audit_records).where(col.tenant_id == tenant)
        if since is not None:
            query = query.where(col.recorded_at >= since)
        if until is not None:
            query = query.where(col.recorded_at < until)
        if call_id is not None:
            query = query.where(col.call_id == call_id)
        # Streamed (a server-side cursor in PostgreSQL): a chain never has to fit in memory.
        result = conn.execute(query.order_by(col.seq, col.id).execution_options(yield_per=5000))
        for row in result:
            yield StoredRecord(*row)

    def count(self, conn: Connection, tenant: str | None = None) -> int:
        """Records stored (for one tenant or all)."""
        from sqlalchemy import func

        query = select(func.count()).select_from(audit_records)
        if tenant is not None:
            query = query.where(audit_records.c.tenant_id == tenant)
        return int(conn.execute(query).scalar_one())


def append_all(store: AuditStore, entries: Iterable[AuditEntry]) -> AppendResult:
    """Append many entries in one transaction (bulk loads, benchmarks)."""
    return store.append(list(entries))
