"""The SQLite state store: one event undone alone, batches committed whole, pruning."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import ModuleType

import pytest

from loopwise_feedback.handler import decision_rows
from loopwise_feedback.store import FeedbackStore, dirty_partitions, prune


def _count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def test_a_failing_event_is_undone_alone_and_the_batch_commits(
    tmp_path: Path, fb: ModuleType
) -> None:
    path = tmp_path / "feedback.sqlite"
    store = FeedbackStore(path)
    case = fb.make_case(1, [fb.Seg("a b c", "a b d")])
    rows = decision_rows(case.task, case.decision, "ev-1", audio_path_template="x.wav").rows
    with store.event():
        assert store.mark_seen("ev-1", "t")
        store.add_rows(rows)
    with pytest.raises(RuntimeError), store.event():
        assert store.mark_seen("ev-2", "t")
        raise RuntimeError("bad event")
    assert _count(path, "seen_events") == 0  # nothing visible before the batch commits
    store.commit()
    assert _count(path, "seen_events") == 1
    assert _count(path, "rows") == len(rows)
    with store.event():
        assert not store.mark_seen("ev-1", "t")  # a redelivery
        assert store.add_rows(rows) == 0
    store.commit()
    assert _count(path, "rows") == len(rows)
    assert {p.kind for p, _ in dirty_partitions(store.conn)} == {"asr", "label_studio"}
    store.close()


def test_prune_forgets_old_ids_and_decided_tasks_only(tmp_path: Path, fb: ModuleType) -> None:
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    old, waiting = fb.make_case(1, [fb.Seg("x")]), fb.make_case(2, [fb.Seg("y")])
    with store.event():
        store.mark_seen("ev-old", "t")
        store.put_task(old.task)
        store.put_task(waiting.task)
        store.put_pending(
            "ev-dec", waiting.decision.model_copy(update={"task_id": "task-call-0002"})
        )
    store.commit()
    # Seen ids age by when they were seen (wall clock).
    seen_at = store.conn.execute("SELECT seen_at FROM seen_events").fetchone()[0]
    prune(store.conn, 60, now=seen_at + 30)
    assert _count(tmp_path / "feedback.sqlite", "seen_events") == 1
    prune(store.conn, 60, now=seen_at + 90)
    assert _count(tmp_path / "feedback.sqlite", "seen_events") == 0
    # Tasks age by their own time: case 1 goes, case 2 stays while a decision waits for it.
    prune(store.conn, 86400, now=old.task.occurred_at.timestamp() + 10 * 86400)
    assert store.get_task("acme", old.task.task_id) is None
    assert store.get_task("acme", waiting.task.task_id) is not None
    store.close()


def test_a_store_failure_retries_the_batch_instead_of_dead_lettering(
    tmp_path: Path, fb: ModuleType
) -> None:
    from loopwise.events import encode
    from loopwise.kafka.intake import Incoming
    from loopwise_feedback.worker import Exporter

    path = tmp_path / "feedback.sqlite"
    exporter = Exporter(FeedbackStore(path), "x.wav")
    exporter.store.conn.execute("PRAGMA busy_timeout=50")
    case = fb.make_case(1, [fb.Seg("a b", "a c")])
    incoming = [
        Incoming(encode(e, source="t")[3], e, "t", 0, i)
        for i, e in enumerate([case.task, case.decision])
    ]
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")
    for item in incoming:
        assert list(exporter.handle(item)) == []  # no exception: not a bad event
    with pytest.raises(sqlite3.OperationalError):
        exporter.before_commit()  # the worker rewinds the batch
    blocker.rollback()
    blocker.close()
    for item in incoming:  # the redelivered batch
        list(exporter.handle(item))
    exporter.before_commit()
    assert _count(path, "seen_events") == 2
    assert _count(path, "rows") == 2  # one ASR row, one Label Studio task
    exporter.store.close()
