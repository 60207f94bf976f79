"""The state store next to the data (SQLite): seen event ids, tasks, rows, facts, dirty sets.

Rows live here first and the files are rewritten from them, so the store is the one
place where exactly-once is decided: an event id is marked seen in the same
transaction that adds its rows, and that transaction commits before the batch's
offsets are stored. A crash before the commit loses both (the event is redelivered);
a crash after it keeps both (the redelivered event is skipped).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopwise.events import ReviewDecisionV1, ReviewTaskCreatedV1
from loopwise_feedback.handler import DecisionFact, OutcomeFact, TrainingRow

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_events (
    event_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    seen_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_time ON seen_events (seen_at);
CREATE TABLE IF NOT EXISTS tasks (
    tenant_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant_id, task_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending_decisions (
    tenant_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant_id, task_id, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows (
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    row_id TEXT NOT NULL,
    date TEXT NOT NULL,
    model_key TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    decided_at REAL NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, tenant_id, row_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rows_by_partition ON rows (kind, tenant_id, date, model_key);
CREATE INDEX IF NOT EXISTS rows_by_time ON rows (kind, decided_at);
CREATE TABLE IF NOT EXISTS decisions (
    tenant_id TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    verdict TEXT NOT NULL,
    task_created_at REAL NOT NULL,
    decided_at REAL NOT NULL,
    seconds_to_decide REAL,
    PRIMARY KEY (tenant_id, decision_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (decided_at);
CREATE TABLE IF NOT EXISTS outcomes (
    tenant_id TEXT NOT NULL,
    outcome_id TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    release TEXT NOT NULL,
    scope TEXT NOT NULL,
    occurred_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, outcome_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outcomes_by_time ON outcomes (occurred_at);
CREATE TABLE IF NOT EXISTS dirty (
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    date TEXT NOT NULL,
    model_key TEXT NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (kind, tenant_id, date, model_key)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Partition:
    """One training set: a kind, a tenant, a day and a model version."""

    kind: str
    tenant_id: str
    date: str
    model_key: str


@dataclass(frozen=True)
class PendingDecision:
    """A decision that arrived before its task."""

    event_id: str
    decision: ReviewDecisionV1


def connect(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open (and create) the store in WAL mode, with explicit transactions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(SCHEMA)
    return conn


class FeedbackStore:
    """Writes of the exporter's worker thread, inside one transaction per Kafka batch."""

    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        self.path = path
        self.conn = connect(path, synchronous)
        self._savepoints = 0

    def close(self) -> None:
        """Roll back anything uncommitted and close."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.conn.close()

    # -- transactions ----------------------------------------------------------------------

    @contextmanager
    def event(self) -> Iterator[None]:
        """One event's writes: kept with the batch, or undone alone if the event fails."""
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")
        name = f"ev{self._savepoints}"
        self._savepoints += 1
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        self.conn.execute(f"RELEASE {name}")

    def commit(self) -> None:
        """Make the batch durable (called before its offsets are stored); undo it on failure."""
        self._savepoints = 0
        if not self.conn.in_transaction:
            return
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def rollback(self) -> None:
        """Undo the batch in hand."""
        self._savepoints = 0
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    # -- writes ----------------------------------------------------------------------------

    def mark_seen(self, event_id: str, topic: str) -> bool:
        """Remember an event id; False if it was already seen (a redelivery)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO seen_events (event_id, topic, seen_at) VALUES (?, ?, ?)",
            (event_id, topic, time.time()),
        )
        return cur.rowcount == 1

    def put_task(self, task: ReviewTaskCreatedV1) -> None:
        """Keep a task until its decision arrives (the first copy wins)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO tasks (tenant_id, task_id, created_at, body)"
            " VALUES (?, ?, ?, ?)",
            (task.tenant_id, task.task_id, task.occurred_at.timestamp(), task.model_dump_json()),
        )

    def get_task(self, tenant_id: str, task_id: str) -> ReviewTaskCreatedV1 | None:
        """The task a decision decides, if it arrived."""
        found = self.conn.execute(
            "SELECT body FROM tasks WHERE tenant_id = ? AND task_id = ?", (tenant_id, task_id)
        ).fetchone()
        return ReviewTaskCreatedV1.model_validate_json(found[0]) if found else None

    def put_pending(self, event_id: str, decision: ReviewDecisionV1) -> None:
        """Park a decision whose task has not arrived yet."""
        self.conn.execute(
            "INSERT OR IGNORE INTO pending_decisions (tenant_id, task_id, event_id, body) "
            "VALUES (?, ?, ?, ?)",
            (decision.tenant_id, decision.task_id, event_id, decision.model_dump_json()),
        )

    def take_pending(self, tenant_id: str, task_id: str) -> list[PendingDecision]:
        """Remove and return the decisions that waited for this task."""
        found = self.conn.execute(
            "SELECT event_id, body FROM pending_decisions WHERE tenant_id = ? AND task_id = ? "
            "ORDER BY event_id",
            (tenant_id, task_id),
        ).fetchall()
        self.conn.execute(
            "DELETE FROM pending_decisions WHERE tenant_id = ? AND task_id = ?",
            (tenant_id, task_id),
        )
        return [PendingDecision(e, ReviewDecisionV1.model_validate_json(b)) for e, b in found]

    def add_rows(self, rows: list[TrainingRow]) -> int:
        """Add training rows (a row id already present adds nothing); return how many were new."""
        added = 0
        for row in rows:
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO rows (kind, tenant_id, row_id, date, model_key, model_name,"
                " model_version, decided_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.kind,
                    row.tenant_id,
                    row.row_id,
                    row.date,
                    row.model_key,
                    row.model_name,
                    row.model_version,
                    row.decided_at,
                    json.dumps(row.body, sort_keys=True, ensure_ascii=False),
                ),
            )
            if cur.rowcount == 1:
                added += 1
                self.conn.execute(
                    "INSERT INTO dirty (kind, tenant_id, date, model_key, generation) "
                    "VALUES (?, ?, ?, ?, 1) ON CONFLICT (kind, tenant_id, date, model_key)"
                    " DO UPDATE SET generation = generation + 1",
                    (row.kind, row.tenant_id, row.date, row.model_key),
                )
        return added

    def put_decision(self, fact: DecisionFact) -> None:
        """Record when a task was opened and decided."""
        self.conn.execute(
            "INSERT OR IGNORE INTO decisions (tenant_id, decision_id, task_id, policy_version,"
            " verdict, task_created_at, decided_at, seconds_to_decide)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                fact.tenant_id,
                fact.decision_id,
                fact.task_id,
                fact.policy_version,
                fact.verdict,
                fact.task_created_at,
                fact.decided_at,
                fact.seconds_to_decide,
            ),
        )

    def put_outcome(self, fact: OutcomeFact) -> None:
        """Record how an item was released."""
        self.conn.execute(
            "INSERT OR IGNORE INTO outcomes (tenant_id, outcome_id, policy_version, release,"
            " scope, occurred_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                fact.tenant_id,
                fact.outcome_id,
                fact.policy_version,
                fact.release,
                fact.scope,
                fact.occurred_at,
            ),
        )


# -- reads (any connection) ------------------------------------------------------------------


def dirty_partitions(conn: sqlite3.Connection) -> list[tuple[Partition, int]]:
    """Training sets changed since they were last written, with their change generation."""
    found = conn.execute(
        "SELECT kind, tenant_id, date, model_key, generation FROM dirty "
        "ORDER BY kind, tenant_id, date, model_key"
    ).fetchall()
    return [(Partition(k, t, d, m), g) for k, t, d, m, g in found]


def all_partitions(conn: sqlite3.Connection) -> list[Partition]:
    """Every training set the store holds rows for."""
    found = conn.execute(
        "SELECT DISTINCT kind, tenant_id, date, model_key FROM rows "
        "ORDER BY kind, tenant_id, date, model_key"
    ).fetchall()
    return [Partition(*r) for r in found]


def mark_clean(conn: sqlite3.Connection, partition: Partition, generation: int) -> None:
    """Forget a change once written, unless more rows arrived meanwhile."""
    conn.execute(
        "DELETE FROM dirty WHERE kind = ? AND tenant_id = ? AND date = ? AND model_key = ?"
        " AND generation = ?",
        (partition.kind, partition.tenant_id, partition.date, partition.model_key, generation),
    )


def partition_rows(conn: sqlite3.Connection, partition: Partition) -> list[dict[str, Any]]:
    """A training set's rows, in row id order (so a rewrite is byte-identical)."""
    found = conn.execute(
        "SELECT body FROM rows WHERE kind = ? AND tenant_id = ? AND date = ? AND model_key = ?"
        " ORDER BY row_id",
        (partition.kind, partition.tenant_id, partition.date, partition.model_key),
    ).fetchall()
    return [json.loads(r[0]) for r in found]


def partition_model(conn: sqlite3.Connection, partition: Partition) -> tuple[str, str]:
    """The model name and version of a training set."""
    found = conn.execute(
        "SELECT model_name, model_version FROM rows WHERE kind = ? AND tenant_id = ? AND date = ?"
        " AND model_key = ? LIMIT 1",
        (partition.kind, partition.tenant_id, partition.date, partition.model_key),
    ).fetchone()
    return (str(found[0]), str(found[1])) if found else ("", "")


def count_rows(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows per kind."""
    return {
        str(k): int(n)
        for k, n in conn.execute("SELECT kind, count(*) FROM rows GROUP BY kind").fetchall()
    }


def count_pending(conn: sqlite3.Connection) -> int:
    """Decisions still waiting for their task."""
    return int(conn.execute("SELECT count(*) FROM pending_decisions").fetchone()[0])


def prune(conn: sqlite3.Connection, retention_s: float, now: float | None = None) -> int:
    """Forget event ids and decided tasks older than the retention; return how many went.

    Safe once the retention exceeds the input topics' own: such events can no longer be
    redelivered, and training rows and outcomes keep their own keys besides.
    """
    cutoff = (now if now is not None else time.time()) - retention_s
    seen = conn.execute("DELETE FROM seen_events WHERE seen_at < ?", (cutoff,)).rowcount
    tasks = conn.execute(
        "DELETE FROM tasks WHERE created_at < ? AND NOT EXISTS (SELECT 1 FROM pending_decisions p"
        " WHERE p.tenant_id = tasks.tenant_id AND p.task_id = tasks.task_id)",
        (cutoff,),
    ).rowcount
    return int(seen) + int(tasks)
