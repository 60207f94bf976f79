"""Per-call state: the scored customer turns, whether the call ended, what was published.

Why SQLite behind the confluent-kafka worker (chosen when the alternative was a Faust
table, before the Worker had its changelog-backed `StateStore`): the hot
path (one score per segment) is stateless and runs on the shared worker with its
proven dead-letter and offset handling; the per-call state is small (a few
hundred turns per call) and private to this service. Each input event's new
state is written together with the call-level outputs it caused, keyed by the input's
event id, and the writes of one worker batch are committed in ONE SQLite
transaction (`flush`, the Worker's `before_commit`: after the batch's outputs are
acknowledged, before its offsets are stored), so a disk sync is paid per batch, not
per segment. A redelivered event (after a crash before the offset commit) is
therefore not counted twice, and its recorded outputs are sent
again with the same derived event ids, so downstream dedup removes them. The
store survives a process restart (tested); it is local to a replica, so run the
service as a StatefulSet with a volume and static group membership
(`consumer_overrides: {"group.instance.id": ...}`) so partitions come back to the
replica that holds their calls. A partition moved to another replica starts its
open calls afresh: a limitation the Worker's `StateStore` (as the router and compliance
scoring use it) would remove.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Protocol

import pydantic_core

from loopwise_sentiment.models import Label
from loopwise_sentiment.rolling import ScoredTurn


def call_key(tenant_id: str, call_id: str) -> str:
    """The store key of a tenant's call."""
    return f"{tenant_id}/{call_id}"


@dataclass(frozen=True)
class CallState:
    """What the service remembers about one call."""

    tenant_id: str
    call_id: str
    turns: tuple[ScoredTurn, ...] = ()
    ended: bool = False
    ended_event_id: str | None = None
    last_published: float | None = None
    last_label: Label | None = None

    @property
    def key(self) -> str:
        """Store key: tenant and call ('/' cannot occur in identifiers)."""
        return call_key(self.tenant_id, self.call_id)

    def with_turn(self, turn: ScoredTurn) -> CallState:
        """This state with a turn added, replacing an earlier version of the same segment."""
        kept = tuple(t for t in self.turns if t.segment_id != turn.segment_id)
        return replace(self, turns=(*kept, turn))

    def to_json(self) -> str:
        """Serialise for storage."""
        # asdict would copy every turn field by field (recursively); the turns hold only
        # numbers and strings, so their own __dict__ serialises the same JSON
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["turns"] = [vars(turn) for turn in self.turns]
        # pydantic-core's encoder: the same JSON as json.dumps (compact), several times faster
        # on a long call's turns
        return pydantic_core.to_json(data).decode("utf-8")

    @classmethod
    def from_json(cls, text: str) -> CallState:
        """Read back what to_json wrote."""
        data = pydantic_core.from_json(text)
        data["turns"] = tuple(ScoredTurn(**t) for t in data["turns"])
        return cls(**data)


class StateStore(Protocol):
    """Where per-call state and the outputs of every applied event are kept."""

    def recorded(self, event_id: str) -> list[str] | None:
        """The outputs (JSON) recorded when this event was applied, or None if it never was."""
        ...

    def load(self, tenant_id: str, call_id: str) -> CallState | None:
        """The state of a tenant's call, if any."""
        ...

    def save(self, state: CallState, event_id: str, outputs: list[str]) -> None:
        """Store a call's new state and the outputs an event caused, atomically."""
        ...

    def flush(self) -> None:
        """Make every save so far durable (before the worker stores the batch's offsets)."""
        ...


@dataclass
class MemoryStateStore:
    """A store in memory: for the batch command and unit tests."""

    calls: dict[str, CallState] = field(default_factory=dict)
    applied: dict[str, list[str]] = field(default_factory=dict)

    def recorded(self, event_id: str) -> list[str] | None:
        """See StateStore."""
        return self.applied.get(event_id)

    def load(self, tenant_id: str, call_id: str) -> CallState | None:
        """See StateStore."""
        return self.calls.get(call_key(tenant_id, call_id))

    def save(self, state: CallState, event_id: str, outputs: list[str]) -> None:
        """See StateStore."""
        self.calls[state.key] = state
        self.applied[event_id] = list(outputs)

    def flush(self) -> None:
        """See StateStore (nothing to do in memory)."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    ended INTEGER NOT NULL DEFAULT 0,
    updated_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS applied (
    event_id TEXT PRIMARY KEY,
    call_key TEXT NOT NULL,
    outputs TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS applied_call ON applied (call_key);
"""


class SqliteStateStore:
    """A durable store in one SQLite file (WAL mode, synchronous=FULL).

    Saves go into one transaction that `flush` commits: the worker calls it once per batch
    (`before_commit`), so the disk sync is paid per batch. Each save is its own savepoint:
    a save that fails leaves the batch's earlier saves in place. Reads on this connection
    see the batch's saves; a crash before `flush` loses them with the offsets not stored,
    so the batch is read again and applied afresh.
    """

    def __init__(self, path: Path | str, retain_ended_calls: int = 10_000) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retain_ended_calls = retain_ended_calls
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM applied").fetchone()
        self._seq = int(row[0])
        self._open = False  # a batch transaction is open
        self._ended = False  # a call ended in it: trim the ended calls at flush

    def recorded(self, event_id: str) -> list[str] | None:
        """See StateStore."""
        with self._lock:
            row = self._db.execute(
                "SELECT outputs FROM applied WHERE event_id = ?", (event_id,)
            ).fetchone()
        return None if row is None else list(json.loads(row[0]))

    def load(self, tenant_id: str, call_id: str) -> CallState | None:
        """See StateStore."""
        with self._lock:
            row = self._db.execute(
                "SELECT state FROM calls WHERE call_key = ?", (call_key(tenant_id, call_id),)
            ).fetchone()
        return None if row is None else CallState.from_json(row[0])

    def save(self, state: CallState, event_id: str, outputs: list[str]) -> None:
        """See StateStore: part of the batch transaction until `flush`."""
        with self._lock:
            db = self._db
            if not self._open:
                db.execute("BEGIN IMMEDIATE")
                self._open = True
            db.execute("SAVEPOINT save")
            try:
                db.execute(
                    "INSERT INTO calls (call_key, state, ended, updated_seq) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(call_key) DO UPDATE SET state = excluded.state, "
                    "ended = excluded.ended, updated_seq = excluded.updated_seq",
                    (state.key, state.to_json(), int(state.ended), self._seq + 1),
                )
                db.execute(
                    "INSERT OR REPLACE INTO applied (event_id, call_key, outputs, seq) "
                    "VALUES (?, ?, ?, ?)",
                    (event_id, state.key, json.dumps(outputs), self._seq + 1),
                )
            except BaseException:
                db.execute("ROLLBACK TO save")
                db.execute("RELEASE save")
                raise
            db.execute("RELEASE save")
            self._seq += 1
            self._ended = self._ended or state.ended

    def flush(self) -> None:
        """See StateStore: commit the batch's saves (and forget the oldest ended calls)."""
        with self._lock:
            if not self._open:
                return
            db = self._db
            try:
                if self._ended:
                    self._forget_old_ended()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                self._open = False
                self._ended = False

    def _forget_old_ended(self) -> None:
        old = self._db.execute(
            "SELECT call_key FROM calls WHERE ended = 1 "
            "ORDER BY updated_seq DESC LIMIT -1 OFFSET ?",
            (self.retain_ended_calls,),
        ).fetchall()
        for (key,) in old:
            self._db.execute("DELETE FROM applied WHERE call_key = ?", (key,))
            self._db.execute("DELETE FROM calls WHERE call_key = ?", (key,))

    def call_count(self) -> int:
        """Calls held (open and recently ended)."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
