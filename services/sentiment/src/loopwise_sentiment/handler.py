"""Pure scoring and per-call aggregation: input events in, output events out; no Kafka here.

`score_segment` turns a transcript segment into its sentiment event.
`SentimentHandler` adds the per-call side: every aggregated segment updates the
call's rolling sentiment (idempotent by event id, via the state store) and a
`CallSentimentV1` goes out on a significant change and when the call ends. A
segment that arrives after the end re-publishes the final with `call_ended`.
A significant change is derived from the turns of the rolling window (what its
current score is computed from); a final from every turn of the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Literal

from loopwise.events import (
    CallEndedV1,
    CallSentimentV1,
    ModelRef,
    SegmentSentimentV1,
    SentimentSignal,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise.kafka.intake import Emit, Incoming
from loopwise_sentiment.config import AggregationSettings
from loopwise_sentiment.models import SentimentModel
from loopwise_sentiment.rolling import Rolling, ScoredTurn, significant_change
from loopwise_sentiment.state import CallState, StateStore, lineage, with_turn

MAX_DERIVED = 10_000


def model_ref(model: SentimentModel) -> ModelRef:
    """The producer reference every event of this model carries."""
    return ModelRef(name=model.name, version=model.version)


def score_segment(
    model: SentimentModel, segment: TranscriptSegmentV1, event_id: str
) -> SegmentSentimentV1:
    """Sentiment of one segment; deterministic, so a redelivery yields the same event."""
    result = model.score(segment.text, asr_confidence=segment.confidence, language=segment.language)
    return SegmentSentimentV1(
        tenant_id=segment.tenant_id,
        call_id=segment.call_id,
        occurred_at=segment.occurred_at,
        producer=model_ref(model),
        derived_from=[event_id],
        segment_id=segment.segment_id,
        speaker=segment.speaker,
        label=result.label,
        score=result.score,
        confidence=result.confidence,
        signals=[SentimentSignal(name=s.name, weight=s.weight) for s in result.signals[:32]],
    )


def call_sentiment(
    model: SentimentModel,
    state: CallState,
    derived_from: Sequence[str],
    settings: AggregationSettings,
    *,
    reason: Literal["call_ended", "significant_change"],
    occurred_at: datetime,
    extra_derived: Sequence[str] = (),
) -> CallSentimentV1:
    """The call-level event for a state; `derived_from`: its turns' event ids, in time order."""
    summary = (state.rolling or Rolling(settings.window)).summary(settings.neutral_band)
    derived = [*derived_from, *extra_derived][-MAX_DERIVED:]
    return CallSentimentV1(
        tenant_id=state.tenant_id,
        call_id=state.call_id,
        occurred_at=occurred_at,
        producer=model_ref(model),
        derived_from=derived,
        reason=reason,
        segments_scored=summary.segments_scored,
        current=summary.current,
        final=summary.current if reason == "call_ended" else None,
        trend=summary.trend,
        worst=summary.worst,
        worst_start_s=summary.worst_start_s,
        worst_end_s=summary.worst_end_s,
        label=summary.label,
        confidence=summary.confidence,
    )


class SentimentHandler:
    """The service's handler: segment and call-ended events to sentiment events."""

    def __init__(
        self,
        model: SentimentModel,
        store: StateStore,
        settings: AggregationSettings,
        output_topic: str,
    ) -> None:
        self.model = model
        self.store = store
        self.settings = settings
        self.output_topic = output_topic
        self.redelivered = 0

    def __call__(self, incoming: Incoming) -> list[Emit]:
        """Handle one event (the worker's Handler signature)."""
        event = incoming.event
        event_id = incoming.envelope.id
        if isinstance(event, TranscriptSegmentV1):
            return self.on_segment(event, event_id)
        if isinstance(event, CallEndedV1):
            return self.on_call_ended(event, event_id)
        return []  # call started / metadata: nothing to score

    def _emit(self, events: Sequence[TenantEvent]) -> list[Emit]:
        # a call's final (and a late segment's correction of it) replace one another: a
        # worker batch sends only its last
        return [
            Emit(
                self.output_topic,
                e,
                supersedes=f"call-final/{e.tenant_id}/{e.call_id}"
                if isinstance(e, CallSentimentV1) and e.reason == "call_ended"
                else None,
            )
            for e in events
        ]

    def _replayed(self, event_id: str) -> list[CallSentimentV1] | None:
        recorded = self.store.recorded(event_id)
        if recorded is None:
            return None
        self.redelivered += 1
        return [CallSentimentV1.model_validate_json(text) for text in recorded]

    def on_segment(self, segment: TranscriptSegmentV1, event_id: str) -> list[Emit]:
        """Score a segment; update its call's rolling sentiment if its side is aggregated."""
        scored = score_segment(self.model, segment, event_id)
        if segment.speaker not in self.settings.speakers:
            return self._emit([scored])
        replayed = self._replayed(event_id)
        if replayed is not None:  # redelivery: already counted; send the same outputs again
            return self._emit([scored, *replayed])
        state = self.store.load(segment.tenant_id, segment.call_id) or CallState(
            segment.tenant_id, segment.call_id
        )
        turn = ScoredTurn(
            segment_id=segment.segment_id,
            start_s=segment.start_s,
            end_s=segment.end_s,
            score=scored.score,
            confidence=scored.confidence,
            event_id=event_id,
        )
        state = with_turn(state, turn, self.settings.window, self.store)
        outputs: list[CallSentimentV1] = []
        if state.ended:
            # A late segment after the end: correct the published final.
            extra = [state.ended_event_id] if state.ended_event_id else []
            outputs.append(
                call_sentiment(
                    self.model,
                    state,
                    lineage(state, turn, self.store),
                    self.settings,
                    reason="call_ended",
                    occurred_at=segment.occurred_at,
                    extra_derived=extra,
                )
            )
        elif state.rolling is not None and significant_change(
            state.rolling.summary(self.settings.neutral_band),
            state.last_published,
            state.last_label,
            min_segments=self.settings.min_segments,
            delta=self.settings.significant_delta,
        ):
            # derived from the turns of the window its current score comes from (the final
            # lists every turn): an interim event's size does not grow with the call
            outputs.append(
                call_sentiment(
                    self.model,
                    state,
                    [t.event_id for t in state.rolling.tail],
                    self.settings,
                    reason="significant_change",
                    occurred_at=segment.occurred_at,
                )
            )
        if outputs:
            state = replace(state, last_published=outputs[-1].current, last_label=outputs[-1].label)
        self.store.save(state, event_id, [o.model_dump_json() for o in outputs], turn)
        return self._emit([scored, *outputs])

    def on_call_ended(self, ended: CallEndedV1, event_id: str) -> list[Emit]:
        """Publish the call's final rolling sentiment."""
        replayed = self._replayed(event_id)
        if replayed is not None:
            return self._emit(replayed)
        state = self.store.load(ended.tenant_id, ended.call_id) or CallState(
            ended.tenant_id, ended.call_id
        )
        state = replace(state, ended=True, ended_event_id=event_id)
        if state.rolling is not None and state.rolling.window != self.settings.window:
            turns = self.store.turns(state.tenant_id, state.call_id)
            state = replace(state, rolling=Rolling.of(turns, self.settings.window))
        final = call_sentiment(
            self.model,
            state,
            lineage(state, None, self.store),
            self.settings,
            reason="call_ended",
            occurred_at=ended.occurred_at,
            extra_derived=[event_id],
        )
        state = replace(state, last_published=final.current, last_label=final.label)
        self.store.save(state, event_id, [final.model_dump_json()])
        return self._emit([final])
