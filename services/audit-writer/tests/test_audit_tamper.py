"""The tamper suite: six kinds of change at 100 positions of a 10,000-record chain, each named.

The attacker has the database: triggers and unique indexes are dropped first,
then each change runs in a transaction that is rolled back after the verifier
looked at it, so every case starts from the pristine chain. A second tenant's
chain stays untouched and must never raise an alarm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from loopwise_audit.chain import canonical_json, record_hash
from loopwise_audit.checkpoints import Checkpointer, CheckpointSet, KeyRing, load_checkpoints
from loopwise_audit.samples import sample_entries
from loopwise_audit.store import AuditStore, StoredRecord
from loopwise_audit.verify import Fault, VerifyReport, verify_store

N = 10_000
POSITIONS = sorted({round(1 + i * (N - 1) / 99) for i in range(100)})
TENANT, BYSTANDER = "acme", "globex"


@dataclass
class Chain:
    store: AuditStore
    checkpoints: CheckpointSet
    keys: KeyRing


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """10,000 records of one tenant and 300 of another, checkpointed every 1,000, unguarded."""
    root = tmp_path_factory.mktemp("tamper")
    store = AuditStore(f"sqlite:///{root / 'audit.db'}")
    keys = KeyRing("k", {"k": b"tamper-suite-key-0123456789abcdef"})
    checkpointer = Checkpointer(
        directory=root / "checkpoints", keys=keys, every_records=1000, every_s=3600
    )
    entries = list(sample_entries(N, TENANT))
    for start in range(0, N, 1000):
        checkpointer.note(store.append(entries[start : start + 1000]).heads.values())
        checkpointer.run_due()
    checkpointer.note(store.append(list(sample_entries(300, BYSTANDER))).heads.values())
    checkpointer.run_due(force=True)
    with store.engine.begin() as conn:  # the attacker switches the guards off
        for statement in (
            "DROP TRIGGER audit_records_no_update",
            "DROP TRIGGER audit_records_no_delete",
            "DROP INDEX audit_records_tenant_seq",
            "DROP INDEX audit_records_tenant_event",
            # Keep lookups fast, without the uniqueness that would stop forged rows.
            "CREATE INDEX tampered_tenant_seq ON audit_records (tenant_id, seq)",
        ):
            conn.exec_driver_sql(statement)
    yield Chain(store, load_checkpoints(root / "checkpoints"), keys)
    store.close()


def row(conn: Connection, seq: int) -> StoredRecord:
    found = conn.exec_driver_sql(
        "SELECT * FROM audit_records WHERE tenant_id = ? AND seq = ?", (TENANT, seq)
    ).one()
    return StoredRecord(*found)


def insert(conn: Connection, record: dict[str, Any]) -> None:
    names = ", ".join(record)
    marks = ", ".join("?" for _ in record)
    conn.exec_driver_sql(
        f"INSERT INTO audit_records ({names}) VALUES ({marks})", tuple(record.values())
    )


def edit(conn: Connection, p: int, variant: int) -> None:
    if variant == 0:  # change what the record says, keep its hash
        conn.exec_driver_sql(
            'UPDATE audit_records SET body = replace(body, \'"result":"\', \'"result":"x\') '
            "WHERE tenant_id = ? AND seq = ?",
            (TENANT, p),
        )
    elif variant == 1:  # change an indexed column only
        conn.exec_driver_sql(
            "UPDATE audit_records SET event_type = 'io.loopwise.forged.v1' "
            "WHERE tenant_id = ? AND seq = ?",
            (TENANT, p),
        )
    else:  # change the record and recompute its own hash
        old = row(conn, p)
        facts = old.facts()
        facts["result"] = "forged"
        body = canonical_json(facts)
        conn.exec_driver_sql(
            "UPDATE audit_records SET body = ?, record_hash = ? WHERE tenant_id = ? AND seq = ?",
            (body, record_hash(old.prev_hash, body), TENANT, p),
        )


def delete(conn: Connection, p: int) -> None:
    conn.exec_driver_sql("DELETE FROM audit_records WHERE tenant_id = ? AND seq = ?", (TENANT, p))


def insert_forged(conn: Connection, p: int) -> None:
    """A fabricated record that claims place p, chained to the genuine predecessor."""
    genuine = row(conn, p)
    facts = genuine.facts()
    facts.update(event_id=f"forged-{p}", action="review.decide", result="approve")
    body = canonical_json(facts)
    insert(
        conn,
        {
            "tenant_id": TENANT,
            "seq": p,
            "event_id": f"forged-{p}",
            "event_type": genuine.event_type,
            "call_id": genuine.call_id,
            "occurred_at": genuine.occurred_at,
            "recorded_at": genuine.recorded_at,
            "prev_hash": genuine.prev_hash,
            "record_hash": record_hash(genuine.prev_hash, body),
            "body": body,
        },
    )


def swap(conn: Connection, p: int) -> None:
    q = p + 1 if p < N else p - 1
    for old, new in ((p, -1), (q, p), (-1, q)):
        conn.exec_driver_sql(
            "UPDATE audit_records SET seq = ? WHERE tenant_id = ? AND seq = ?", (new, TENANT, old)
        )


def duplicate(conn: Connection, p: int) -> None:
    genuine = row(conn, p)
    columns = {k: v for k, v in genuine.__dict__.items() if k != "id"}
    insert(conn, columns)


def truncate(conn: Connection, p: int) -> None:
    conn.exec_driver_sql("DELETE FROM audit_records WHERE tenant_id = ? AND seq >= ?", (TENANT, p))


def verify_tampered(chain: Chain, tamper: Callable[[Connection], None]) -> VerifyReport:
    conn = chain.store.reader()
    try:
        with conn.begin() as transaction:
            tamper(conn)
            report = verify_store(chain.store, chain.checkpoints, chain.keys, conn=conn)
            transaction.rollback()
    finally:
        conn.close()
    return report


def acme_fault(report: VerifyReport) -> Fault | None:
    by_tenant = {c.tenant_id: c for c in report.chains}
    assert by_tenant[BYSTANDER].ok, f"untouched chain raised {by_tenant[BYSTANDER].fault}"
    assert by_tenant[BYSTANDER].records == 300
    return by_tenant[TENANT].fault


def run_cases(
    chain: Chain,
    tamper: Callable[[Connection, int, int], None],
    expect: Callable[[int], tuple[str, int]],
) -> None:
    wrong = []
    for index, p in enumerate(POSITIONS):
        fault = acme_fault(verify_tampered(chain, lambda conn, p=p, i=index: tamper(conn, p, i)))
        kind, seq = expect(p)
        if fault is None or (fault.kind, fault.seq) != (kind, seq):
            wrong.append(f"at {p}: expected {kind}@{seq}, got {fault and fault.describe()}")
    assert not wrong, f"{len(wrong)} of {len(POSITIONS)} cases misnamed:\n" + "\n".join(wrong[:20])


def test_positions_cover_first_and_last() -> None:
    assert len(POSITIONS) == 100 and POSITIONS[0] == 1 and POSITIONS[-1] == N


def test_untouched_chains_verify(chain: Chain) -> None:
    report = verify_store(chain.store, chain.checkpoints, chain.keys)
    assert report.ok, report.faults
    counts = {c.tenant_id: (c.records, c.checkpoints) for c in report.chains}
    assert counts == {TENANT: (N, 10), BYSTANDER: (300, 1)}


def test_edits_are_named(chain: Chain) -> None:
    run_cases(chain, edit, lambda p: ("edited", p))


def test_deletions_are_named(chain: Chain) -> None:
    # Removing the very last record leaves no gap to see: the signed head names it as truncation.
    run_cases(
        chain,
        lambda conn, p, _i: delete(conn, p),
        lambda p: ("deleted", p) if p < N else ("truncated", N),
    )


def test_insertions_are_named(chain: Chain) -> None:
    run_cases(chain, lambda conn, p, _i: insert_forged(conn, p), lambda p: ("inserted", p))


def test_reorderings_are_named(chain: Chain) -> None:
    run_cases(chain, lambda conn, p, _i: swap(conn, p), lambda p: ("reordered", min(p, N - 1)))


def test_duplications_are_named(chain: Chain) -> None:
    run_cases(chain, lambda conn, p, _i: duplicate(conn, p), lambda p: ("duplicated", p))


def test_truncations_are_named(chain: Chain) -> None:
    run_cases(chain, lambda conn, p, _i: truncate(conn, p), lambda p: ("truncated", p))


def test_forged_checkpoint_is_named(chain: Chain, tmp_path: Path) -> None:
    wrong_key = KeyRing("k", {"k": b"not-the-key-0123456789abcdef-0123"})
    report = verify_store(chain.store, chain.checkpoints, wrong_key)
    assert {f.kind for f in report.faults} == {"checkpoint"}
    assert not report.ok
