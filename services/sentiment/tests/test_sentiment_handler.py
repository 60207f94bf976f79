"""The pure handler: segment events, rolling call sentiment, idempotence, durable state."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from loopwise.events import (
    CallSentimentV1,
    CallStartedV1,
    ChannelSpec,
    Envelope,
    SegmentSentimentV1,
    TenantEvent,
)
from loopwise.kafka.intake import Emit, Incoming
from loopwise_sentiment.config import AggregationSettings
from loopwise_sentiment.handler import SentimentHandler
from loopwise_sentiment.models import load_model
from loopwise_sentiment.rolling import ScoredTurn, significant_change, summarise
from loopwise_sentiment.state import MemoryStateStore, SqliteStateStore, StateStore, with_turn


def _load_events() -> Any:
    """The shared event builders next to this file (tests here are not a package)."""
    if "sentiment_events" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "sentiment_events", Path(__file__).with_name("sentiment_events.py")
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["sentiment_events"] = module
        spec.loader.exec_module(module)
    return sys.modules["sentiment_events"]


ev = _load_events()

OUT = "out.sentiment"


def incoming(event: TenantEvent, event_id: str) -> Incoming:
    envelope = Envelope(type=event.event_type, source="test", id=event_id)
    return Incoming(envelope, event, "in", 0, 0)


def handler(store: StateStore, **agg: object) -> SentimentHandler:
    return SentimentHandler(
        load_model("vader-calibrated"),
        store,
        AggregationSettings(**agg),
        OUT,  # type: ignore[arg-type]
    )


def of_type(emits: list[Emit], cls: type[TenantEvent]) -> list[TenantEvent]:
    return [e.event for e in emits if isinstance(e.event, cls)]


def angry_call(h: SentimentHandler, call_id: str) -> list[Emit]:
    emits: list[Emit] = []
    for i, (speaker, text) in enumerate(ev.ANGRY_CALL):
        emits += h(incoming(ev.segment(call_id, i, text, speaker), f"{call_id}-e{i}"))
    return emits


def test_every_segment_gets_a_sentiment_event_naming_model_and_input() -> None:
    h = handler(MemoryStateStore())
    emits = angry_call(h, "call-a")
    scored = of_type(emits, SegmentSentimentV1)
    assert len(scored) == len(ev.ANGRY_CALL)
    assert all(e.topic == OUT for e in emits)
    for i, s in enumerate(scored):
        assert isinstance(s, SegmentSentimentV1)
        assert s.derived_from == [f"call-a-e{i}"]
        assert s.producer.name == "vader-calibrated" and s.producer.version
        assert s.segment_id == f"call-a-seg-{i:04d}"
    assert scored[4].label == "negative"  # type: ignore[attr-defined]


def test_call_end_publishes_final_worst_stretch_and_falling_trend() -> None:
    h = handler(MemoryStateStore())
    angry_call(h, "call-b")
    emits = h(incoming(ev.ended("call-b"), "call-b-end"))
    assert len(emits) == 1
    final = emits[0].event
    assert isinstance(final, CallSentimentV1)
    customer = sum(1 for s, _ in ev.ANGRY_CALL if s == "customer")
    assert final.reason == "call_ended" and final.segments_scored == customer
    assert final.final is not None and final.final < -0.5 and final.label == "negative"
    assert final.worst <= final.final and final.trend < 0
    assert final.worst_start_s is not None and final.worst_end_s is not None
    assert final.worst_start_s < final.worst_end_s
    assert "call-b-end" in final.derived_from and "call-b-e4" in final.derived_from
    assert "call-b-e0" not in final.derived_from  # agent turns are not aggregated


def test_significant_change_is_published_during_the_call() -> None:
    h = handler(MemoryStateStore())
    changes = of_type(angry_call(h, "call-c"), CallSentimentV1)
    assert changes, "the call turned negative: a significant change must be published"
    assert all(c.reason == "significant_change" and c.final is None for c in changes)  # type: ignore[attr-defined]
    assert changes[0].label == "negative"  # type: ignore[attr-defined]


def test_a_redelivered_segment_is_counted_once_and_replays_the_same_outputs() -> None:
    store = MemoryStateStore()
    h = handler(store)
    first = angry_call(h, "call-d")
    again = angry_call(h, "call-d")  # every event delivered twice
    assert [e.event for e in again] == [e.event for e in first]
    final = h(incoming(ev.ended("call-d"), "call-d-end"))[0].event
    assert isinstance(final, CallSentimentV1)
    assert final.segments_scored == sum(1 for s, _ in ev.ANGRY_CALL if s == "customer")
    assert h(incoming(ev.ended("call-d"), "call-d-end"))[0].event == final


def test_a_segment_after_the_end_corrects_the_final() -> None:
    h = handler(MemoryStateStore())
    h(incoming(ev.segment("call-e", 0, "Thanks, that is wonderful, great help!"), "e0"))
    first = h(incoming(ev.ended("call-e"), "e-end"))[0].event
    late = h(incoming(ev.segment("call-e", 1, "Actually no, this is awful and I am angry."), "e1"))
    corrected = of_type(late, CallSentimentV1)
    assert isinstance(first, CallSentimentV1) and len(corrected) == 1
    assert corrected[0].reason == "call_ended"  # type: ignore[attr-defined]
    assert corrected[0].segments_scored == 2  # type: ignore[attr-defined]
    assert corrected[0].final < first.final  # type: ignore[attr-defined,operator]


def test_other_call_events_are_ignored() -> None:
    started = CallStartedV1(
        tenant_id="acme",
        call_id="call-f",
        occurred_at=ev.T0,
        queue="q",
        region="r",
        channels=[ChannelSpec(index=0, role="customer")],
    )
    assert handler(MemoryStateStore())(incoming(started, "s")) == []


def test_an_empty_call_ends_neutral_with_nothing_scored() -> None:
    final = handler(MemoryStateStore())(incoming(ev.ended("call-g"), "g"))[0].event
    assert isinstance(final, CallSentimentV1)
    assert final.segments_scored == 0 and final.label == "neutral" and final.confidence == 0


def test_sqlite_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SqliteStateStore(path)
    h = handler(store)
    first = angry_call(h, "call-h")
    store.flush()  # the worker's before_commit, once per batch
    store.close()
    reopened = SqliteStateStore(path)
    h2 = handler(reopened)
    assert [e.event for e in angry_call(h2, "call-h")] == [e.event for e in first]
    final = h2(incoming(ev.ended("call-h"), "h-end"))[0].event
    assert isinstance(final, CallSentimentV1)
    assert final.segments_scored == sum(1 for s, _ in ev.ANGRY_CALL if s == "customer")
    reopened.close()


def test_sqlite_saves_are_durable_at_flush_only(tmp_path: Path) -> None:
    """A batch's saves are one transaction: a crash before `flush` (offsets not stored
    either) loses them all, so the redelivered batch is applied afresh, counted once."""
    path = tmp_path / "state.sqlite3"
    store = SqliteStateStore(path)
    h = handler(store)
    h(incoming(ev.segment("call-d", 0, "awful"), "d-0"))
    store.flush()
    h(incoming(ev.segment("call-d", 1, "terrible"), "d-1"))
    assert store.recorded("d-1") is not None  # the batch sees its own saves
    crashed = SqliteStateStore(path)  # another connection: what a restart would find
    assert crashed.recorded("d-0") is not None and crashed.recorded("d-1") is None
    state = crashed.load("acme", "call-d")
    assert state is not None and state.segments_scored == 1
    assert [t.event_id for t in crashed.turns("acme", "call-d")] == ["d-0"]
    crashed.close()
    store.close()  # closed without flush: the open batch is rolled back
    reopened = SqliteStateStore(path)
    assert reopened.recorded("d-1") is None
    reopened.close()


def test_a_failed_save_keeps_the_batch_s_earlier_saves(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "s.sqlite3")
    h = handler(store)
    h(incoming(ev.segment("call-f", 0, "awful"), "f-0"))
    before = store.load("acme", "call-f")
    assert before is not None
    late = ScoredTurn("s9", 90.0, 95.0, -0.9, 0.9, "f-9")
    changed = with_turn(before, late, 3, store)
    with pytest.raises(TypeError):  # fails after the state and turn rows were written
        store.save(changed, "f-9", [object()], late)  # type: ignore[list-item]
    store.flush()
    assert store.recorded("f-0") is not None and store.recorded("f-9") is None
    assert store.load("acme", "call-f") == before
    assert not store.has_turn("acme", "call-f", "s9")


def test_sqlite_forgets_the_oldest_ended_calls(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "s.sqlite3", retain_ended_calls=2)
    h = handler(store)
    for c in range(4):
        h(incoming(ev.segment(f"k{c}", 0, "awful"), f"k{c}-0"))
        h(incoming(ev.ended(f"k{c}"), f"k{c}-end"))
        store.flush()
    assert store.call_count() == 2
    assert store.load("acme", "k0") is None and store.load("acme", "k3") is not None
    assert store.load("other-tenant", "k3") is None
    assert store.recorded("k0-0") is None
    assert store.turns("acme", "k0") == [] and len(store.turns("acme", "k3")) == 1


def turn(i: int, score: float, confidence: float = 0.9) -> ScoredTurn:
    return ScoredTurn(f"s{i}", i * 10.0, i * 10.0 + 5, score, confidence, f"e{i}")


def test_rolling_summary_weights_by_confidence_and_finds_the_worst_window() -> None:
    turns = [turn(0, 0.5), turn(1, -0.8), turn(2, -0.9), turn(3, -0.7), turn(4, 0.6), turn(5, 0.8)]
    s = summarise(list(reversed(turns)), window=2, neutral_band=0.1)  # order does not matter
    assert s.segments_scored == 6
    assert s.worst == pytest.approx(-0.85) and (s.worst_start_s, s.worst_end_s) == (10.0, 25.0)
    assert s.current == pytest.approx(0.7) and s.label == "positive"
    doubtful = summarise([turn(0, 0.8, 0.9), turn(1, -0.8, 0.1)], window=2, neutral_band=0.1)
    assert doubtful.current == pytest.approx((0.9 * 0.8 - 0.1 * 0.8) / 1.0)


def test_significant_change_rules() -> None:
    neg = summarise([turn(0, -0.6), turn(1, -0.6)], window=3, neutral_band=0.1)
    assert significant_change(neg, None, None, min_segments=2, delta=0.3)
    assert not significant_change(neg, None, None, min_segments=3, delta=0.3)
    assert not significant_change(neg, -0.5, "negative", min_segments=2, delta=0.3)
    slightly = summarise([turn(0, 0.12), turn(1, 0.12)], window=3, neutral_band=0.1)
    assert not significant_change(slightly, 0.05, "neutral", min_segments=2, delta=0.3)


def test_the_instrumented_handler_counts_redeliveries_and_confidence() -> None:
    from prometheus_client import REGISTRY

    from loopwise_sentiment.worker import InstrumentedHandler

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    h = InstrumentedHandler(handler(MemoryStateStore()))
    before_redelivered = sample("loopwise_sentiment_redelivered_events_total")
    before_negative = sample("loopwise_sentiment_segment_confidence_ratio_count", label="negative")
    event = incoming(ev.segment("call-m", 0, "This is awful and I am furious."), "m0")
    assert h(event) == h(event)
    assert sample("loopwise_sentiment_redelivered_events_total") == before_redelivered + 1
    after_negative = sample("loopwise_sentiment_segment_confidence_ratio_count", label="negative")
    assert after_negative == before_negative + 2
