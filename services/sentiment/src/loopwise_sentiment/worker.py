"""Wiring: the sentiment handler on the shared confluent-kafka worker, with SQLite state."""

from __future__ import annotations

from loopwise.events import (
    CallEndedV1,
    CallMetadataV1,
    CallSentimentV1,
    CallStartedV1,
    SegmentSentimentV1,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise.kafka import Emit, Incoming, Worker
from loopwise_sentiment.config import SERVICE, SentimentSettings
from loopwise_sentiment.handler import SentimentHandler
from loopwise_sentiment.metrics import (
    CALL_PUBLICATIONS,
    REDELIVERED,
    SEGMENT_CONFIDENCE,
    init_metrics,
)
from loopwise_sentiment.models import SentimentModel, load_model
from loopwise_sentiment.state import SqliteStateStore

ACCEPTED: dict[str, type[TenantEvent]] = {
    cls.event_type: cls for cls in (TranscriptSegmentV1, CallEndedV1, CallStartedV1, CallMetadataV1)
}
"""Transcript segments are scored, call ends close the aggregate, the rest is ignored."""


class InstrumentedHandler:
    """The handler, observed: confidence per label, call publications, redeliveries."""

    def __init__(self, handler: SentimentHandler) -> None:
        self.handler = handler
        self.model = handler.model
        init_metrics()

    def __call__(self, incoming: Incoming) -> list[Emit]:
        """Run the handler and record what it produced."""
        before = self.handler.redelivered
        emits = self.handler(incoming)
        if self.handler.redelivered > before:
            REDELIVERED.inc()
        for emit in emits:
            event = emit.event
            if isinstance(event, SegmentSentimentV1):
                SEGMENT_CONFIDENCE.labels(event.label).observe(event.confidence)
            elif isinstance(event, CallSentimentV1):
                CALL_PUBLICATIONS.labels(event.reason).inc()
        return emits


def build_worker(
    settings: SentimentSettings, model: SentimentModel | None = None
) -> tuple[Worker, SqliteStateStore]:
    """The service's worker and its state store, ready to run."""
    model = model or load_model(settings.model, settings.model_options)
    store = SqliteStateStore(settings.state_path, settings.retain_ended_calls)
    handler = SentimentHandler(model, store, settings.aggregation, settings.output_topic)
    worker = Worker(
        service=SERVICE,
        settings=settings,
        handler=InstrumentedHandler(handler),
        output_topics=[settings.output_topic],
        accepted=ACCEPTED,
        before_commit=store.flush,  # the batch's state, durable before its offsets
    )
    return worker, store
