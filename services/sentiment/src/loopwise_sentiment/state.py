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

What an event writes does not grow with the call: a call's row holds its running
aggregate (`Rolling`: the last few turns and running sums) and the publishing state, and
each turn is a row of its own, written once. All of a call's turns are read back only to
list them as the lineage of a published call-level event, or to re-aggregate when a turn
arrives out of time order or replaces an earlier version of its segment.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import pydantic_core

from loopwise.kafka.intake import RetryBatch
from loopwise_sentiment.models import Label
from loopwise_sentiment.rolling import Rolling, ScoredTurn, turn_order


def call_key(tenant_id: str, call_id: str) -> str:
    """The store key of a tenant's call."""
    return f"{tenant_id}/{call_id}"


@dataclass(frozen=True)
class CallState:
    """What the service remembers about one call (its turns are kept by the store, apart)."""

    tenant_id: str
    call_id: str
    rolling: Rolling | None = None
    """The running aggregate of the call's turns; None before the first."""
    ended: bool = False
    ended_event_id: str | None = None
    last_published: float | None = None
    last_label: Label | None = None

    @property
    def key(self) -> str:
        """Store key: tenant and call ('/' cannot occur in identifiers)."""
        return call_key(self.tenant_id, self.call_id)

    @property
    def segments_scored(self) -> int:
        """Turns aggregated so far."""
        return 0 if self.rolling is None else self.rolling.n

    def to_json(self) -> str:
        """Serialise for storage (the turns are not part of it)."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.rolling is not None:
            rolling = dict(vars(self.rolling))
            rolling["tail"] = [vars(t) for t in self.rolling.tail]
            data["rolling"] = rolling
        # pydantic-core's encoder: the same JSON as json.dumps (compact), several times faster
        return pydantic_core.to_json(data).decode("utf-8")

    @classmethod
    def from_json(cls, text: str) -> CallState:
        """Read back what to_json wrote."""
        data = pydantic_core.from_json(text)
        rolling = data.get("rolling")
        if rolling is not None:
            rolling["tail"] = tuple(ScoredTurn(**t) for t in rolling["tail"])
            data["rolling"] = Rolling(**rolling)
        return cls(**data)


def with_turn(state: CallState, turn: ScoredTurn, window: int, store: StateStore) -> CallState:
    """`state` with `turn` aggregated: in constant time when it follows the call's turns.

    A turn out of time order, a new version of a segment already taken, or a changed
    window size re-aggregates the call's turns from the store (the new turn replacing
    any earlier version of its segment).
    """
    rolling = state.rolling
    if rolling is None:
        return replace(state, rolling=Rolling(window).add(turn))
    if (
        rolling.window == window
        and rolling.follows(turn)
        and not store.has_turn(state.tenant_id, state.call_id, turn.segment_id)
    ):
        return replace(state, rolling=rolling.add(turn))
    return replace(state, rolling=Rolling.of(merged_turns(state, turn, store), window))


def merged_turns(state: CallState, turn: ScoredTurn, store: StateStore) -> list[ScoredTurn]:
    """The call's stored turns with `turn` in place of any earlier version, in time order."""
    turns = [
        t for t in store.turns(state.tenant_id, state.call_id) if t.segment_id != turn.segment_id
    ]
    turns.append(turn)
    turns.sort(key=turn_order)
    return turns


def lineage(state: CallState, turn: ScoredTurn | None, store: StateStore) -> list[str]:
    """The event ids of the call's turns in time order, `turn` in place of any earlier
    version of its segment: what a call-level event is derived from."""
    keys = store.turn_keys(state.tenant_id, state.call_id)
    if turn is None:
        return [event_id for _, _, event_id in keys]
    new = (turn.start_s, turn.segment_id, turn.event_id)
    if (keys and keys[-1][:2] >= new[:2]) or any(k[1] == turn.segment_id for k in keys):
        keys = sorted([k for k in keys if k[1] != turn.segment_id] + [new])
    else:
        keys.append(new)
    return [event_id for _, _, event_id in keys]


class StateStore(Protocol):
    """Where per-call state, each call's turns and the outputs of every applied event are kept."""

    def recorded(self, event_id: str) -> list[str] | None:
        """The outputs (JSON) recorded when this event was applied, or None if it never was."""
        ...

    def load(self, tenant_id: str, call_id: str) -> CallState | None:
        """The state of a tenant's call, if any."""
        ...

    def turns(self, tenant_id: str, call_id: str) -> list[ScoredTurn]:
        """The call's stored turns, in time order."""
        ...

    def has_turn(self, tenant_id: str, call_id: str, segment_id: str) -> bool:
        """True when a version of this segment is among the call's stored turns."""
        ...

    def turn_keys(self, tenant_id: str, call_id: str) -> list[tuple[float, str, str]]:
        """(start_s, segment_id, event_id) of the call's stored turns, in time order."""
        ...

    def save(
        self, state: CallState, event_id: str, outputs: list[str], turn: ScoredTurn | None = None
    ) -> None:
        """Store a call's new state, its new turn and the outputs an event caused, atomically."""
        ...

    def flush(self) -> None:
        """Make every save so far durable (before the worker stores the batch's offsets)."""
        ...


@dataclass
class MemoryStateStore:
    """A store in memory: for the batch command and unit tests."""

    calls: dict[str, CallState] = field(default_factory=dict)
    call_turns: dict[str, dict[str, ScoredTurn]] = field(default_factory=dict)
    applied: dict[str, list[str]] = field(default_factory=dict)

    def recorded(self, event_id: str) -> list[str] | None:
        """See StateStore."""
        return self.applied.get(event_id)

    def load(self, tenant_id: str, call_id: str) -> CallState | None:
        """See StateStore."""
        return self.calls.get(call_key(tenant_id, call_id))

    def turns(self, tenant_id: str, call_id: str) -> list[ScoredTurn]:
        """See StateStore."""
        stored = self.call_turns.get(call_key(tenant_id, call_id), {})
        return sorted(stored.values(), key=turn_order)

    def has_turn(self, tenant_id: str, call_id: str, segment_id: str) -> bool:
        """See StateStore."""
        return segment_id in self.call_turns.get(call_key(tenant_id, call_id), {})

    def turn_keys(self, tenant_id: str, call_id: str) -> list[tuple[float, str, str]]:
        """See StateStore."""
        return [(t.start_s, t.segment_id, t.event_id) for t in self.turns(tenant_id, call_id)]

    def save(
        self, state: CallState, event_id: str, outputs: list[str], turn: ScoredTurn | None = None
    ) -> None:
        """See StateStore."""
        self.calls[state.key] = state
        if turn is not None:
            self.call_turns.setdefault(state.key, {})[turn.segment_id] = turn
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
CREATE TABLE IF NOT EXISTS turns (
    call_key TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    score REAL NOT NULL,
    confidence REAL NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (call_key, segment_id)
);
CREATE INDEX IF NOT EXISTS turns_in_order ON turns (call_key, start_s, segment_id, event_id);
CREATE TABLE IF NOT EXISTS applied (
    event_id TEXT PRIMARY KEY,
    call_key TEXT NOT NULL,
    outputs TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS applied_call ON applied (call_key);
"""
SCHEMA_VERSION = 2
"""1: a call's row held all its turns (rewritten per turn); 2: one row per turn."""


_V1_WINDOW = 3
"""The default window of version 1 (it did not store one); a different configured window
re-aggregates a migrated call on its next turn (see `with_turn`)."""


def _migrate_v1(db: sqlite3.Connection) -> None:
    """Move version-1 rows' turns into the turns table and store their running aggregate."""
    rows = db.execute("SELECT call_key, state FROM calls").fetchall()
    for key, text in rows:
        data = json.loads(text)
        if "turns" not in data:
            continue
        turns = [ScoredTurn(**t) for t in data.pop("turns")]
        window = int(data.pop("window", 0)) or _V1_WINDOW
        for t in turns:
            db.execute(
                "INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, t.segment_id, t.start_s, t.end_s, t.score, t.confidence, t.event_id),
            )
        state = CallState(**data, rolling=Rolling.of(turns, window) if turns else None)
        db.execute("UPDATE calls SET state = ? WHERE call_key = ?", (state.to_json(), key))


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
        self._upgrade()
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM applied").fetchone()
        self._seq = int(row[0])
        self._open = False  # a batch transaction is open
        self._ended = False  # a call ended in it: trim the ended calls at flush

    def _upgrade(self) -> None:
        db = self._db
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: sentiment state schema {version} is newer than this "
                f"service's {SCHEMA_VERSION}; run the newer release or use a new state path"
            )
        if version == SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            _migrate_v1(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; an operational failure of the database (a full
        disk, an I/O error, a lock held too long) is the service's, not the input's: the
        worker runs the batch again (RetryBatch) rather than dead-letter the event."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.OperationalError as exc:
                # the worker runs the whole batch again: drop what of it is here (SQLite may
                # have rolled the transaction back itself, as it does on a full disk)
                self._abandon_batch()
                raise RetryBatch(f"sentiment state {self.path}: {exc}") from exc

    def _abandon_batch(self) -> None:
        if self._open and self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._open = False
        self._ended = False

    def recorded(self, event_id: str) -> list[str] | None:
        """See StateStore."""
        with self._locked() as db:
            row = db.execute(
                "SELECT outputs FROM applied WHERE event_id = ?", (event_id,)
            ).fetchone()
        return None if row is None else list(json.loads(row[0]))

    def load(self, tenant_id: str, call_id: str) -> CallState | None:
        """See StateStore."""
        with self._locked() as db:
            row = db.execute(
                "SELECT state FROM calls WHERE call_key = ?", (call_key(tenant_id, call_id),)
            ).fetchone()
        return None if row is None else CallState.from_json(row[0])

    def turns(self, tenant_id: str, call_id: str) -> list[ScoredTurn]:
        """See StateStore."""
        with self._locked() as db:
            rows = db.execute(
                "SELECT segment_id, start_s, end_s, score, confidence, event_id FROM turns "
                "WHERE call_key = ? ORDER BY start_s, segment_id",
                (call_key(tenant_id, call_id),),
            ).fetchall()
        return [ScoredTurn(*row) for row in rows]

    def has_turn(self, tenant_id: str, call_id: str, segment_id: str) -> bool:
        """See StateStore."""
        with self._locked() as db:
            row = db.execute(
                "SELECT 1 FROM turns WHERE call_key = ? AND segment_id = ?",
                (call_key(tenant_id, call_id), segment_id),
            ).fetchone()
        return row is not None

    def turn_keys(self, tenant_id: str, call_id: str) -> list[tuple[float, str, str]]:
        """See StateStore (plain tuples: a long call's lineage is read per published event)."""
        with self._locked() as db:
            return db.execute(
                "SELECT start_s, segment_id, event_id FROM turns "
                "WHERE call_key = ? ORDER BY start_s, segment_id",
                (call_key(tenant_id, call_id),),
            ).fetchall()

    def save(
        self, state: CallState, event_id: str, outputs: list[str], turn: ScoredTurn | None = None
    ) -> None:
        """See StateStore: part of the batch transaction until `flush`."""
        with self._locked() as db:
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
                if turn is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            state.key,
                            turn.segment_id,
                            turn.start_s,
                            turn.end_s,
                            turn.score,
                            turn.confidence,
                            turn.event_id,
                        ),
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
                if not db.in_transaction:  # rolled back by SQLite itself: saves are lost
                    raise RetryBatch(f"sentiment state {self.path}: the batch was rolled back")
                if self._ended:
                    self._forget_old_ended()
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
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
            self._db.execute("DELETE FROM turns WHERE call_key = ?", (key,))
            self._db.execute("DELETE FROM calls WHERE call_key = ?", (key,))

    def call_count(self) -> int:
        """Calls held (open and recently ended)."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
