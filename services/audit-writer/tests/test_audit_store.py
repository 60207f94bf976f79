"""The store on real SQLite: append-only guards, idempotency, chains, concurrent writers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.exc import DatabaseError

from loopwise_audit.chain import GENESIS_HASH, canonical_json, record_hash
from loopwise_audit.checkpoints import Checkpointer, KeyRing, append_checkpoint, load_checkpoints
from loopwise_audit.samples import sample_entries
from loopwise_audit.store import AuditStore
from loopwise_audit.verify import verify_store


def test_update_and_delete_are_refused(make_store: Callable[..., AuditStore]) -> None:
    store = make_store()
    store.append(list(sample_entries(5)))
    for statement in (
        "UPDATE audit_records SET body = '{}' WHERE seq = 2",
        "DELETE FROM audit_records WHERE seq = 5",
        "DELETE FROM audit_records",
    ):
        with pytest.raises(DatabaseError, match="append-only"), store.engine.begin() as conn:
            conn.exec_driver_sql(statement)
    with store.reader() as conn:
        assert store.count(conn) == 5


def test_redelivered_events_add_nothing(make_store: Callable[..., AuditStore]) -> None:
    store = make_store()
    entries = list(sample_entries(40))
    first = store.append(entries[:30])
    again = store.append(entries[20:] + entries[20:])  # 10 old, 10 new, each twice
    assert (first.appended, first.duplicates) == (30, 0)
    assert (again.appended, again.duplicates) == (10, 30)
    assert again.heads["acme"].seq == 40
    with store.reader() as conn:
        assert store.count(conn) == 40
        ids = [r.event_id for r in store.records(conn, "acme")]
    assert ids == [e.event_id for e in entries]


def test_chain_links_across_batches_and_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = AuditStore(url)
    store.append(list(sample_entries(7)))
    store.close()
    reopened = AuditStore(url)
    more = [e for e in sample_entries(12)][7:]
    reopened.append(more)
    with reopened.reader() as conn:
        rows = list(reopened.records(conn, "acme"))
    reopened.close()
    assert [r.seq for r in rows] == list(range(1, 13))
    prev = GENESIS_HASH
    for r in rows:
        assert r.prev_hash == prev
        assert r.record_hash == record_hash(prev, r.body)
        assert r.body == canonical_json(r.facts())
        prev = r.record_hash


def test_tenants_have_separate_chains(make_store: Callable[..., AuditStore]) -> None:
    store = make_store()
    store.append([*sample_entries(5, "acme"), *sample_entries(3, "globex")])
    with store.reader() as conn:
        heads = store.heads(conn)
    assert {t: h.seq for t, h in heads.items()} == {"acme": 5, "globex": 3}


def test_concurrent_writers_never_fork_a_chain(tmp_path: Path, audit_keys: KeyRing) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    AuditStore(url).close()
    entries = list(sample_entries(400))
    errors: list[BaseException] = []

    def write(part: list) -> None:  # type: ignore[type-arg]
        store = AuditStore(url, create=False)
        try:
            for start in range(0, len(part), 10):
                store.append(part[start : start + 10])
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=write, args=(entries[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    store = AuditStore(url)
    try:
        report = verify_store(store, load_checkpoints(tmp_path / "none"), audit_keys)
        assert report.ok, report.faults
        assert report.chains[0].records == 400
    finally:
        store.close()


def test_checkpoints_every_n_records_or_t_seconds(tmp_path: Path, audit_keys: KeyRing) -> None:
    now = [0.0]
    store = AuditStore(f"sqlite:///{tmp_path / 'a.db'}")
    checkpointer = Checkpointer(
        directory=tmp_path / "cp",
        keys=audit_keys,
        every_records=100,
        every_s=30,
        clock=lambda: now[0],
    )
    entries = list(sample_entries(260))
    checkpointer.note(store.append(entries[:99]).heads.values())
    assert checkpointer.run_due() == []  # 99 records, no time passed
    checkpointer.note(store.append(entries[99:150]).heads.values())
    made = checkpointer.run_due()
    assert [c.sequence for c in made] == [150]
    checkpointer.note(store.append(entries[150:160]).heads.values())
    assert checkpointer.run_due() == []
    now[0] = 31.0
    assert [c.sequence for c in checkpointer.run_due()] == [160]
    assert checkpointer.run_due(force=True) == []  # nothing new to sign
    loaded = load_checkpoints(tmp_path / "cp").by_tenant["acme"]
    assert [c.checkpoint.sequence for c in loaded] == [150, 160]
    assert all(audit_keys.valid(c.checkpoint) for c in loaded)
    # A restarted checkpointer knows what was signed and does not sign it again.
    again = Checkpointer(directory=tmp_path / "cp", keys=audit_keys, every_records=1, every_s=1)
    with store.reader() as conn:
        again.note(store.heads(conn).values())
    assert again.pending() == {}
    store.close()


def test_altered_checkpoint_is_a_fault(tmp_path: Path, audit_keys: KeyRing) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'a.db'}")
    checkpointer = Checkpointer(
        directory=tmp_path / "cp", keys=audit_keys, every_records=5, every_s=9
    )
    checkpointer.note(store.append(list(sample_entries(20))).heads.values())
    (made,) = checkpointer.run_due()
    forged = made.model_copy(update={"sequence": 25, "records": 25})
    append_checkpoint(tmp_path / "cp", forged)
    report = verify_store(store, load_checkpoints(tmp_path / "cp"), audit_keys)
    (fault,) = report.faults
    assert fault.kind == "checkpoint" and fault.seq == 25
    assert "signature does not verify" in fault.detail
    store.close()


def test_missing_guards_are_put_back_on_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = AuditStore(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER audit_records_no_delete")
        assert store.missing_guards(conn) == ["audit_records_no_delete"]
    store.close()
    reopened = AuditStore(url)
    with reopened.reader() as conn:
        assert reopened.missing_guards(conn) == []
    reopened.close()


def test_reading_never_creates_the_table(tmp_path: Path, audit_keys: KeyRing) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'absent.db'}", create=False)
    assert not store.exists()
    # Checkpoints exist but the table is gone: the whole chain is missing.
    source = AuditStore(f"sqlite:///{tmp_path / 'src.db'}")
    checkpointer = Checkpointer(
        directory=tmp_path / "cp", keys=audit_keys, every_records=1, every_s=1
    )
    checkpointer.note(source.append(list(sample_entries(3))).heads.values())
    checkpointer.run_due()
    (fault,) = verify_store(store, load_checkpoints(tmp_path / "cp"), audit_keys).faults
    assert (fault.kind, fault.seq) == ("truncated", 1)
    assert not store.exists()
    store.close()
    source.close()
