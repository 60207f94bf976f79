"""Walking the chains against the checkpoints: the first bad record and the kind of fault.

Kinds: `edited` (a record's content or hash changed), `deleted` (a record is
missing before the end), `inserted` (a record that was never chained in),
`reordered` (a genuine record stands at another record's place), `duplicated`
(a record or an event appears twice), `truncated` (records a checkpoint signed
are missing from the end), and `checkpoint` (a checkpoint whose signature does
not verify). A tail that was rewritten with recomputed hashes is caught by the
first checkpoint after it and named there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Literal

from loopwise_audit.chain import GENESIS_HASH, record_hash
from loopwise_audit.checkpoints import CheckpointSet, KeyRing
from loopwise_audit.store import AuditStore, StoredRecord

FaultKind = Literal[
    "edited", "deleted", "inserted", "reordered", "duplicated", "truncated", "checkpoint"
]
_COLUMNS = ("tenant_id", "event_id", "event_type", "call_id", "occurred_at", "recorded_at")


@dataclass(frozen=True)
class Fault:
    """The first thing wrong with one tenant's chain."""

    tenant_id: str
    kind: FaultKind
    seq: int
    event_id: str | None
    detail: str

    def describe(self) -> str:
        """One line for people."""
        event = f" (event {self.event_id})" if self.event_id else ""
        return f"{self.tenant_id}: {self.kind} at seq {self.seq}{event}: {self.detail}"


@dataclass
class ChainReport:
    """The outcome of walking one tenant's chain."""

    tenant_id: str
    records: int = 0
    head_seq: int = 0
    checkpoints: int = 0
    fault: Fault | None = None

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return self.fault is None


@dataclass
class VerifyReport:
    """Every tenant's chain report."""

    chains: list[ChainReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every chain verified."""
        return all(c.ok for c in self.chains)

    @property
    def faults(self) -> list[Fault]:
        """The first fault of each bad chain."""
        return [c.fault for c in self.chains if c.fault is not None]


def _same(a: StoredRecord, b: StoredRecord) -> bool:
    return (a.body, a.record_hash, a.prev_hash, a.event_id) == (
        b.body,
        b.record_hash,
        b.prev_hash,
        b.event_id,
    )


def _parse(body: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def hash_ok(record: StoredRecord) -> bool:
    """True if a record's stored hash is the hash of its content and predecessor."""
    try:
        return record_hash(record.prev_hash, record.body) == record.record_hash
    except ValueError:  # prev_hash is not hex
        return False


class _Walk:
    """State of one chain walk."""

    def __init__(
        self, tenant: str, signed: Mapping[int, str], start_seq: int, start_prev: str
    ) -> None:
        self.tenant = tenant
        self.signed = signed
        self.report = ChainReport(tenant)
        self.prev_hash = start_prev
        self.prev_event: str | None = None
        self.expected = start_seq
        self.seen: dict[str, int] = {}

    def fault(self, kind: FaultKind, seq: int, event_id: str | None, detail: str) -> ChainReport:
        self.report.fault = Fault(self.tenant, kind, seq, event_id, detail)
        self.report.head_seq = self.expected - 1  # the last record that verified
        return self.report

    def run(self, rows: Iterable[StoredRecord]) -> ChainReport:
        groups = groupby(rows, key=lambda r: r.seq)
        current = next(groups, None)
        while current is not None:
            seq, members = current[0], list(current[1])
            current = next(groups, None)
            if seq != self.expected:
                if seq > self.expected:
                    return self.fault(
                        "deleted",
                        self.expected,
                        None,
                        f"record {self.expected} is missing (the chain jumps to {seq})",
                    )
                return self.fault("inserted", seq, members[0].event_id, "invalid sequence number")
            if len(members) > 1:
                return self._fork(seq, members, current)
            problem = self._check(members[0], seq)
            if problem is not None:
                return problem
        self.report.head_seq = self.expected - 1
        signed_max = max(self.signed, default=0)
        if signed_max > self.report.head_seq:
            return self.fault(
                "truncated",
                self.report.head_seq + 1,
                None,
                f"a checkpoint signed record {signed_max} "
                f"but the chain ends at {self.report.head_seq}",
            )
        return self.report

    def _fork(
        self, seq: int, members: list[StoredRecord], following: tuple[int, Any] | None
    ) -> ChainReport:
        first = members[0]
        if all(_same(first, other) for other in members[1:]):
            return self.fault(
                "duplicated", seq, first.event_id, f"record {seq} is stored {len(members)} times"
            )
        # Which one is genuine: the one the next record (or a checkpoint) is chained to.
        witness = self.signed.get(seq)
        if following is not None and following[0] == seq + 1:
            nxt = list(following[1])
            witness = nxt[0].prev_hash if nxt else witness
        intruders = [m for m in members if m.record_hash != witness] or members[1:]
        return self.fault(
            "inserted",
            seq,
            intruders[0].event_id,
            f"{len(members)} different records claim seq {seq}; "
            f"{len(intruders)} of them were never chained in",
        )

    def _check(self, r: StoredRecord, seq: int) -> ChainReport | None:
        if not hash_ok(r):
            return self.fault("edited", seq, r.event_id, "content does not match its hash")
        facts = _parse(r.body)
        if facts is None:
            return self.fault("edited", seq, r.event_id, "body is not a JSON object")
        if facts.get("tenant_id") != self.tenant:
            return self.fault(
                "inserted", seq, r.event_id, f"record of tenant {facts.get('tenant_id')!r}"
            )
        if facts.get("seq") != seq:
            return self.fault(
                "reordered",
                seq,
                r.event_id,
                f"record {facts.get('seq')} of the chain stands at position {seq}",
            )
        if r.prev_hash != self.prev_hash:
            if self.prev_event is None:
                return self.fault(
                    "edited",
                    seq,
                    r.event_id,
                    "first record is not chained to its known predecessor",
                )
            return self.fault(
                "edited",
                seq - 1,
                self.prev_event,
                f"record {seq - 1} changed after record {seq} was chained to it",
            )
        for name in _COLUMNS:
            if getattr(r, name) != facts.get(name):
                return self.fault(
                    "edited", seq, r.event_id, f"column {name} differs from the hashed record"
                )
        earlier = self.seen.get(r.event_id)
        if earlier is not None:
            return self.fault(
                "duplicated", seq, r.event_id, f"event already recorded at seq {earlier}"
            )
        signed = self.signed.get(seq)
        if signed is not None:
            self.report.checkpoints += 1
            if signed != r.record_hash:
                return self.fault(
                    "edited",
                    seq,
                    r.event_id,
                    "the checkpoint for this record signed another hash "
                    "(the chain was rewritten up to here)",
                )
        self.seen[r.event_id] = seq
        self.prev_hash = r.record_hash
        self.prev_event = r.event_id
        self.expected = seq + 1
        self.report.records += 1
        return None


def verify_chain(
    tenant: str,
    rows: Iterable[StoredRecord],
    signed: Mapping[int, str] | None = None,
    *,
    start_seq: int = 1,
    start_prev: str = GENESIS_HASH,
) -> ChainReport:
    """Walk one tenant's records (in seq order) against its checkpoints (seq -> head hash).

    A segment of a chain (an export) starts at `start_seq` chained to `start_prev`.
    """
    return _Walk(tenant, signed or {}, start_seq, start_prev).run(rows)


def signed_heads(
    checkpoints: CheckpointSet, keys: KeyRing
) -> tuple[dict[str, dict[int, str]], list[Fault]]:
    """Checkpoints whose HMAC verifies, by tenant and sequence; faults for the rest."""
    heads: dict[str, dict[int, str]] = {}
    faults: list[Fault] = []
    for problem in checkpoints.problems:
        faults.append(
            Fault("?", "checkpoint", 0, None, f"{problem.path}:{problem.line}: {problem.reason}")
        )
    for tenant, loaded in checkpoints.by_tenant.items():
        mine = heads.setdefault(tenant, {})
        for item in loaded:
            cp = item.checkpoint
            where = f"{item.path.name}:{item.line}"
            if not keys.valid(cp):
                faults.append(
                    Fault(
                        tenant,
                        "checkpoint",
                        cp.sequence,
                        None,
                        f"{where}: signature does not verify (key {cp.key_id!r})",
                    )
                )
                continue
            if mine.get(cp.sequence, cp.head_hash) != cp.head_hash:
                faults.append(
                    Fault(tenant, "checkpoint", cp.sequence, None, f"{where}: two signed heads")
                )
                continue
            mine[cp.sequence] = cp.head_hash
    return heads, faults


def verify_store(
    store: AuditStore,
    checkpoints: CheckpointSet,
    keys: KeyRing,
    *,
    tenants: Iterable[str] | None = None,
    conn: Any = None,
) -> VerifyReport:
    """Verify every tenant's chain (or the given ones) in the store against the checkpoints."""
    heads, cp_faults = signed_heads(checkpoints, keys)
    report = VerifyReport()
    own = conn is None
    connection = store.reader() if own else conn
    try:
        present = store.exists(connection)
        stored = store.tenants(connection) if present else []
        wanted = sorted(set(tenants) if tenants is not None else {*stored, *heads})
        for tenant in wanted:
            rows = store.records(connection, tenant) if present else iter(())
            chain = verify_chain(tenant, rows, heads.get(tenant, {}))
            if chain.fault is None:
                bad = [f for f in cp_faults if f.tenant_id == tenant]
                chain.fault = bad[0] if bad else None
            report.chains.append(chain)
        for fault in cp_faults:
            if fault.tenant_id not in wanted and tenants is None:
                report.chains.append(ChainReport(fault.tenant_id, fault=fault))
    finally:
        if own:
            connection.close()
    return report
