"""State bytes written per segment, short calls against long ones (flat changelog / store).

    uv run python bench/state_bytes.py [--lengths 10 100] [--service router|sentiment|both]

Runs the router's own handler and the `StateStore` codec in process (no broker): each call
gets CallStarted, then per segment a transcript, its sentiment and its compliance result,
then the call-level scores and CallEnded; after every event the parts the store would write
to the changelog (`dirty_parts`: the call header plus changed segments and tasks) are counted
and marked written, exactly as the Worker does after a batch of one. Prints bytes and records
per segment and per event, and the ratio between the longest and shortest calls.

Sentiment (`--service sentiment`): its handler with the shipped default model on a SQLite
store in a temporary directory, one customer turn per event, the store flushed every 50
events as a worker batch would; counts the bytes each event writes (the call's row, the
turn's row, the recorded outputs) and the handler's CPU per event.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

from loopwise.events import (
    CallComplianceV1,
    CallEndedV1,
    CallSentimentV1,
    CallStartedV1,
    ChannelSpec,
    ModelRef,
    SegmentComplianceV1,
    SegmentSentimentV1,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise_router import state as call_state
from loopwise_router.handler import JoinSettings, OutputTopics, Router
from loopwise_router.policy import load_policy

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
MODEL = ModelRef(name="bench", version="1")


def call_events(call_id: str, segments: int) -> list[TenantEvent]:
    ids = {"tenant_id": "acme-bank", "call_id": call_id, "occurred_at": T0}
    channels = [ChannelSpec(index=0, role="agent"), ChannelSpec(index=1, role="customer")]
    events: list[TenantEvent] = [
        CallStartedV1(**ids, queue="billing", region="eu", language_hint="en", channels=channels)
    ]
    for i in range(segments):
        seg = f"seg-{i:04d}"
        speaker = "customer" if i % 2 else "agent"
        text = f"turn {i}: I would like to talk about my last statement and the fees on it"
        events += [
            TranscriptSegmentV1(
                **ids,
                producer=MODEL,
                segment_id=seg,
                speaker=speaker,
                start_s=i * 5.0,
                end_s=i * 5.0 + 4.0,
                text=text,
                confidence=0.9,
                language="en",
                source="external",
            ),
            SegmentSentimentV1(
                **ids,
                producer=MODEL,
                segment_id=seg,
                speaker=speaker,
                label="neutral",
                score=0.1,
                confidence=0.8,
            ),
            SegmentComplianceV1(**ids, producer=MODEL, segment_id=seg, findings=[]),
        ]
    events += [
        CallSentimentV1(
            **ids,
            producer=MODEL,
            reason="call_ended",
            segments_scored=segments // 2,
            current=0.1,
            final=0.1,
            worst=-0.1,
            trend=0.0,
            label="neutral",
            confidence=0.8,
        ),
        CallComplianceV1(**ids, producer=MODEL, findings=[], segments_checked=segments),
        CallEndedV1(**ids, reason="completed", duration_s=segments * 5.0),
    ]
    return events


def measure(segments: int, calls: int, policy_path: str) -> dict[str, float]:
    policy = load_policy(policy_path)
    router = Router(lambda: policy, OutputTopics("r", "t", "o"), JoinSettings(call_grace_s=0))
    written = records = events_seen = 0
    started = time.perf_counter()
    for c in range(calls):
        state = None
        for n, event in enumerate(call_events(f"bench-{segments}-{c}", segments)):
            state, _ = router.handle(state, event, f"ev-{c}-{n}", 1000.0 + n * 0.01)
            parts = call_state.dirty_parts(state)
            written += sum(len(v or b"") + len(k) for k, v in parts.items())
            records += len(parts)
            call_state.mark_clean(state)
            events_seen += 1
    seconds = time.perf_counter() - started
    total_segments = segments * calls
    return {
        "segments_per_call": segments,
        "calls": calls,
        "bytes_per_segment": round(written / total_segments, 1),
        "bytes_per_event": round(written / events_seen, 1),
        "records_per_segment": round(records / total_segments, 2),
        "handler_us_per_event": round(seconds / events_seen * 1e6, 1),
    }


SENTIMENT_TEXTS = (
    "Hi, I have a question about my last statement.",
    "This is ridiculous, I was charged twice and nobody called me back.",
    "Okay, thank you, that makes sense.",
    "I am really not happy with how long this is taking.",
    "Great, that is exactly what I needed, thanks so much.",
    "Can you tell me when the refund will arrive?",
)


def measure_sentiment(turns: int, calls: int) -> dict[str, float]:
    import tempfile
    from pathlib import Path

    from loopwise.events import Envelope
    from loopwise.kafka.intake import Incoming
    from loopwise_sentiment.config import AggregationSettings, SentimentSettings
    from loopwise_sentiment.handler import SentimentHandler
    from loopwise_sentiment.models import load_model
    from loopwise_sentiment.rolling import ScoredTurn
    from loopwise_sentiment.state import CallState, SqliteStateStore

    class CountingStore(SqliteStateStore):
        written = 0

        def save(
            self,
            state: CallState,
            event_id: str,
            outputs: list[str],
            turn: ScoredTurn | None = None,
        ) -> None:
            row = len(state.to_json()) + len(state.key)
            turn_row = 0 if turn is None else len(turn.segment_id) + len(turn.event_id) + 32
            self.written += row + turn_row + len(event_id) + sum(len(o) for o in outputs)
            super().save(state, event_id, outputs, turn)

    with tempfile.TemporaryDirectory() as tmp:
        store = CountingStore(Path(tmp) / "sentiment.sqlite3")
        model = load_model(SentimentSettings.model_fields["model"].default)
        handler = SentimentHandler(model, store, AggregationSettings(), "out")  # type: ignore[arg-type]
        events = []
        for c in range(calls):
            ids = {"tenant_id": "acme-bank", "call_id": f"s-{turns}-{c}", "occurred_at": T0}
            for i in range(turns):
                seg = TranscriptSegmentV1(
                    **ids,
                    producer=MODEL,
                    segment_id=f"seg-{i:04d}",
                    speaker="customer",
                    start_s=i * 5.0,
                    end_s=i * 5.0 + 4.0,
                    text=SENTIMENT_TEXTS[(i * 5 + c) % len(SENTIMENT_TEXTS)],
                    confidence=0.9,
                    language="en",
                    source="external",
                )
                envelope = Envelope(type=seg.event_type, source="bench", id=f"ev-{c}-{i}")
                events.append(Incoming(envelope, seg, "in", 0, 0))
        published = 0
        started = time.process_time()
        for n, incoming in enumerate(events):
            published += len(handler(incoming)) - 1
            if n % 50 == 49:
                store.flush()
        store.flush()
        seconds = time.process_time() - started
        store.close()
    return {
        "turns_per_call": turns,
        "calls": calls,
        "bytes_written_per_event": round(store.written / len(events), 1),
        "call_events_published_per_event": round(published / len(events), 3),
        "handler_us_per_event": round(seconds / len(events) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--segments-total", type=int, default=2000)
    parser.add_argument("--policy", default="deploy/policies/default.yaml")
    parser.add_argument("--service", choices=["router", "sentiment", "both"], default="both")
    args = parser.parse_args()
    lengths = sorted(args.lengths)
    if args.service in ("router", "both"):
        rows = [measure(n, max(1, args.segments_total // n), args.policy) for n in lengths]
        for row in rows:
            print(json.dumps({"service": "review-router", **row}))
        ratio = rows[-1]["bytes_per_segment"] / rows[0]["bytes_per_segment"]
        print(
            f"router: bytes per segment, {rows[-1]['segments_per_call']}- vs "
            f"{rows[0]['segments_per_call']}-segment calls: {ratio:.2f}x"
        )
    if args.service in ("sentiment", "both"):
        srows = [measure_sentiment(n, max(1, args.segments_total // n)) for n in lengths]
        for row in srows:
            print(json.dumps({"service": "sentiment", **row}))
        sratio = srows[-1]["bytes_written_per_event"] / srows[0]["bytes_written_per_event"]
        cpu = srows[-1]["handler_us_per_event"] / srows[0]["handler_us_per_event"]
        print(
            f"sentiment: bytes written per turn {sratio:.2f}x, handler CPU per turn {cpu:.2f}x, "
            f"{srows[-1]['turns_per_call']}- vs {srows[0]['turns_per_call']}-turn calls"
        )


if __name__ == "__main__":
    main()
