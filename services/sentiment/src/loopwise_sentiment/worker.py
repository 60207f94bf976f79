"""Wiring: the sentiment handler on the shared confluent-kafka worker, with SQLite state."""

from __future__ import annotations

from loopwise.events import (
    CallEndedV1,
    CallMetadataV1,
    CallStartedV1,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise.kafka import Worker
from loopwise_sentiment.config import SERVICE, SentimentSettings
from loopwise_sentiment.handler import SentimentHandler
from loopwise_sentiment.models import SentimentModel, load_model
from loopwise_sentiment.state import SqliteStateStore

ACCEPTED: dict[str, type[TenantEvent]] = {
    cls.event_type: cls for cls in (TranscriptSegmentV1, CallEndedV1, CallStartedV1, CallMetadataV1)
}
"""Transcript segments are scored, call ends close the aggregate, the rest is ignored."""


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
        handler=handler,
        output_topics=[settings.output_topic],
        accepted=ACCEPTED,
    )
    return worker, store
