"""The call's running aggregate: equal to a from-scratch summary, flat in size, migrated."""

from __future__ import annotations

import json
import random
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loopwise.events import (
    CallEndedV1,
    CallSentimentV1,
    Envelope,
    ModelRef,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise.kafka.intake import Incoming
from loopwise_sentiment.config import AggregationSettings
from loopwise_sentiment.handler import SentimentHandler
from loopwise_sentiment.models import load_model
from loopwise_sentiment.rolling import MIN_WEIGHT, Rolling, ScoredTurn
from loopwise_sentiment.state import (
    SCHEMA_VERSION,
    MemoryStateStore,
    SqliteStateStore,
    StateStore,
)

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
TEXTS = [
    "This is ridiculous, I am furious.",
    "Thanks, that is great, you have been very helpful.",
    "I have a question about my bill.",
    "Terrible service, absolutely awful.",
    "Okay.",
    "Wonderful, I really appreciate it!",
]


def reference(turns: list[ScoredTurn], window: int) -> dict[str, float | int | None]:
    """The summary written the direct way: every rolling value from scratch, then means."""
    ordered = sorted(turns, key=lambda t: (t.start_s, t.segment_id))
    rolling = []
    for i in range(len(ordered)):
        span = ordered[max(0, i - window + 1) : i + 1]
        w = [max(t.confidence, MIN_WEIGHT) for t in span]
        rolling.append(sum(a * t.score for a, t in zip(w, span, strict=True)) / sum(w))
    worst_i = min(range(len(rolling)), key=lambda i: rolling[i])
    mids = [(t.start_s + t.end_s) / 2 for t in ordered]
    n = len(mids)
    mt, mv = sum(mids) / n, sum(rolling) / n
    var = sum((t - mt) ** 2 for t in mids)
    cov = sum((t - mt) * (v - mv) for t, v in zip(mids, rolling, strict=True))
    return {
        "n": n,
        "current": rolling[-1],
        "worst": rolling[worst_i],
        "worst_start_s": ordered[max(0, worst_i - window + 1)].start_s,
        "worst_end_s": ordered[worst_i].end_s,
        "trend": 0.0 if n < 2 or var == 0 else 60.0 * cov / var,
        "confidence": sum(t.confidence for t in ordered) / n,
    }


def incoming(event: TenantEvent, event_id: str) -> Incoming:
    return Incoming(Envelope(type=event.event_type, source="test", id=event_id), event, "in", 0, 0)


def segment_event(call: str, seg: str, start: float, text: str, conf: float) -> TenantEvent:
    return TranscriptSegmentV1(
        tenant_id="acme",
        call_id=call,
        occurred_at=T0,
        producer=ModelRef(name="asr", version="1"),
        segment_id=seg,
        speaker="customer",
        start_s=start,
        end_s=start + 3.5,
        text=text,
        confidence=conf,
        language="en",
        source="realtime",
    )


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "memory":
        return MemoryStateStore()
    return SqliteStateStore(tmp_path / "state.sqlite3")


@pytest.mark.parametrize("seed", range(6))
def test_the_running_aggregate_equals_the_summary_from_scratch(
    store: StateStore, seed: int
) -> None:
    """In-order turns, turns out of time order, new versions of a segment and redeliveries:
    after every event the running aggregate equals the summary of the turns so far computed
    from scratch, and the call's final lists every turn in time order."""
    rnd = random.Random(seed)
    window = rnd.choice([1, 2, 3, 5])
    settings = AggregationSettings(window=window)
    h = SentimentHandler(load_model("vader-calibrated"), store, settings, "out")  # type: ignore[arg-type]
    model_turns: dict[str, ScoredTurn] = {}
    sent: list[tuple[TenantEvent, str]] = []
    for i in range(60):
        roll = rnd.random()
        if roll < 0.1 and sent:  # a redelivery of an earlier event
            event, event_id = rnd.choice(sent)
        else:
            if roll < 0.2 and model_turns:  # a new version of a segment already scored
                seg = rnd.choice(sorted(model_turns))
                # same timing, or re-timed after every other turn (a re-segmented turn)
                start = rnd.choice([model_turns[seg].start_s, 4.0 * i + 1.0])
            elif roll < 0.3:  # a segment out of time order
                seg, start = f"seg-{i:03d}", rnd.uniform(0, 4.0 * i)
            else:
                seg, start = f"seg-{i:03d}", 4.0 * i + rnd.uniform(0, 0.5)
            text = rnd.choice(TEXTS)
            event, event_id = segment_event("c", seg, start, text, rnd.uniform(0.0, 1.0)), f"e{i}"
            sent.append((event, event_id))
        emits = h(incoming(event, event_id))
        for change in [e.event for e in emits[1:]]:  # interim: the window's turns only
            assert isinstance(change, CallSentimentV1) and change.reason == "significant_change"
            assert 1 <= len(change.derived_from) <= window
        if event_id == f"e{i}":
            scored = emits[0].event
            model_turns[scored.segment_id] = ScoredTurn(  # type: ignore[attr-defined]
                scored.segment_id,  # type: ignore[attr-defined]
                event.start_s,  # type: ignore[attr-defined]
                event.end_s,  # type: ignore[attr-defined]
                scored.score,  # type: ignore[attr-defined]
                scored.confidence,  # type: ignore[attr-defined]
                event_id,
            )
        state = store.load("acme", "c")
        assert state is not None and state.rolling is not None
        want = reference(list(model_turns.values()), window)
        got = state.rolling
        assert got.n == want["n"]
        assert got.current == pytest.approx(want["current"], abs=1e-9)
        assert got.worst == pytest.approx(want["worst"], abs=1e-9)
        assert (got.worst_start_s, got.worst_end_s) == (want["worst_start_s"], want["worst_end_s"])
        assert got.trend() == pytest.approx(want["trend"], rel=1e-6, abs=1e-9)
        assert got.confidence_sum / got.n == pytest.approx(want["confidence"], abs=1e-9)
    final = h(incoming(segment_end("c"), "end"))[0].event
    assert isinstance(final, CallSentimentV1) and final.segments_scored == len(model_turns)
    in_order = sorted(model_turns.values(), key=lambda t: (t.start_s, t.segment_id))
    assert final.derived_from == [*(t.event_id for t in in_order), "end"]


def segment_end(call: str) -> TenantEvent:
    return CallEndedV1(tenant_id="acme", call_id=call, occurred_at=T0, duration_s=300.0)


def test_a_changed_window_re_aggregates_the_call(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "s.sqlite3")
    model = load_model("vader-calibrated")
    three = SentimentHandler(model, store, AggregationSettings(window=3), "out")  # type: ignore[arg-type]
    for i, text in enumerate(TEXTS):
        three(incoming(segment_event("w", f"s{i}", 5.0 * i, text, 0.9), f"w{i}"))
    five = SentimentHandler(model, store, AggregationSettings(window=5), "out")  # type: ignore[arg-type]
    five(incoming(segment_event("w", "s9", 99.0, "Okay.", 0.9), "w9"))
    state = store.load("acme", "w")
    assert state is not None and state.rolling is not None and state.rolling.window == 5
    assert state.rolling == Rolling.of(store.turns("acme", "w"), 5)


def test_what_an_event_writes_does_not_grow_with_the_call(tmp_path: Path) -> None:
    """The call's row (rewritten per turn) is as large at the 400th turn as at the 10th."""
    store = SqliteStateStore(tmp_path / "s.sqlite3")
    h = SentimentHandler(load_model("vader-calibrated"), store, AggregationSettings(), "out")  # type: ignore[arg-type]
    sizes = {}
    for i in range(400):
        h(incoming(segment_event("long", f"s{i:04d}", 5.0 * i, TEXTS[i % 6], 0.9), f"l{i}"))
        if i + 1 in (10, 400):
            state = store.load("acme", "long")
            assert state is not None
            sizes[i + 1] = len(state.to_json())
    assert sizes[400] <= 1.2 * sizes[10], sizes
    assert len(store.turns("acme", "long")) == 400


def test_a_version_1_store_is_migrated(tmp_path: Path) -> None:
    """A store written before turns had rows of their own: every call's turns move to the
    turns table, its running aggregate is built from them, and the call goes on."""
    path = tmp_path / "v1.sqlite3"
    turns = [
        ScoredTurn(f"s{i}", 5.0 * i, 5.0 * i + 4, (-1) ** i * 0.4, 0.8, f"v{i}") for i in range(4)
    ]
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE calls (call_key TEXT PRIMARY KEY, state TEXT NOT NULL, "
        "ended INTEGER NOT NULL DEFAULT 0, updated_seq INTEGER NOT NULL);"
        "CREATE TABLE applied (event_id TEXT PRIMARY KEY, call_key TEXT NOT NULL, "
        "outputs TEXT NOT NULL, seq INTEGER NOT NULL);"
    )
    old_state = {
        "tenant_id": "acme",
        "call_id": "old",
        "turns": [vars(t) for t in turns],
        "ended": False,
        "ended_event_id": None,
        "last_published": -0.1,
        "last_label": "neutral",
    }
    db.execute("INSERT INTO calls VALUES ('acme/old', ?, 0, 4)", (json.dumps(old_state),))
    db.execute("INSERT INTO applied VALUES ('v3', 'acme/old', '[]', 4)")
    db.commit()
    db.close()
    store = SqliteStateStore(path)
    state = store.load("acme", "old")
    assert state is not None and state.last_published == -0.1
    assert state.rolling == Rolling.of(turns, 3)
    assert store.turns("acme", "old") == turns and store.recorded("v3") == []
    h = SentimentHandler(load_model("vader-calibrated"), store, AggregationSettings(), "out")  # type: ignore[arg-type]
    final = h(incoming(segment_end("old"), "old-end"))[0].event
    assert isinstance(final, CallSentimentV1) and final.segments_scored == 4
    assert final.derived_from == ["v0", "v1", "v2", "v3", "old-end"]
    store.close()
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION


def test_a_store_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer than this service"):
        SqliteStateStore(path)


def test_a_full_disk_asks_the_worker_to_run_the_batch_again(tmp_path: Path) -> None:
    """A store that cannot write (SQLite's page limit: the same SQLITE_FULL a full disk
    gives) is the service's failure, not the input's: RetryBatch, never a dead letter; once
    there is room again the same event is applied, once."""
    from loopwise.kafka.intake import RetryBatch

    store = SqliteStateStore(tmp_path / "s.sqlite3")
    h = SentimentHandler(load_model("vader-calibrated"), store, AggregationSettings(), "out")  # type: ignore[arg-type]
    h(incoming(segment_event("full", "s0", 0.0, TEXTS[0], 0.9), "f0"))
    store.flush()
    db = store._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    batch: list[Incoming] = []  # the worker's batch since the last flush
    with pytest.raises(RetryBatch, match="full"):
        for i in range(1, 5000):  # until the pages run out
            batch.append(
                incoming(segment_event("full", f"s{i}", 5.0 * i, TEXTS[i % 6], 0.9), f"f{i}")
            )
            h(batch[-1])
    assert len(batch) > 1
    db.execute("PRAGMA max_page_count = 1073741823")
    for again in batch:  # the batch run again, from its first input
        assert h(again)
    store.flush()
    assert [t.segment_id for t in store.turns("acme", "full")] == ["s0"] + [
        b.event.segment_id  # type: ignore[attr-defined]
        for b in batch
    ]
    state = store.load("acme", "full")
    assert state is not None and state.segments_scored == len(batch) + 1
