"""The streaming service: a Faust app whose changelogged table keeps each call's rule state.

Both input topics are keyed by call id and co-partitioned, so every event of a
call reaches the same agent and the table's changelog partition; after a crash
or restart the table is rebuilt from the changelog before processing resumes.
"""

from __future__ import annotations

import sys
from typing import Any

import faust

from loopwise.events import (
    CallEndedV1,
    CallEvent,
    CallMetadataV1,
    CallStartedV1,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise.kafka.intake import Emit, Incoming
from loopwise.logging import get_logger
from loopwise.streaming import StreamRuntime, create_app, ensure_internal_topics
from loopwise_compliance import metrics
from loopwise_compliance.config import SERVICE, ComplianceSettings
from loopwise_compliance.handler import ComplianceScorer, state_from_json, state_to_json
from loopwise_compliance.rules import PackIndex

log = get_logger(__name__)

ACCEPTED: dict[str, type[TenantEvent]] = {
    model.event_type: model
    for model in (TranscriptSegmentV1, CallStartedV1, CallEndedV1, CallMetadataV1)
}
STATE_TABLE = "call-state"
FAUST_LOG_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error"}


def build_app(settings: ComplianceSettings, packs: PackIndex, **overrides: Any) -> faust.App:
    """The Faust app with its call-state table and one agent over calls and transcripts."""
    timeouts = {
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.session_timeout_s / 6,
    }
    app = create_app(SERVICE, settings, **{**timeouts, **overrides})
    runtime = StreamRuntime(
        app,
        service=SERVICE,
        settings=settings,
        input_topics=[settings.calls_topic, settings.transcripts_topic],
        output_topics=[settings.output_topic],
        accepted=ACCEPTED,
    )
    scorer = ComplianceScorer(packs)
    metrics.init_metrics(packs)
    table = app.Table(
        STATE_TABLE,
        default=None,
        partitions=settings.topic_partitions,
        # JSON keys come back from the changelog as the same str call ids they were written as.
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        help="Per-call compliance rule state (disclosures, verification, decided result)",
    )
    channel = app.topic(
        settings.calls_topic,
        settings.transcripts_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def handle(incoming: Incoming) -> list[Emit]:
        event = incoming.event
        if not isinstance(event, CallEvent):
            raise TypeError(f"{type(event).__name__} is not a call event")
        state = state_from_json(table.get(event.call_id))
        outcome = scorer.handle(state, event, incoming.envelope.id)
        if outcome.state is not None:
            table[event.call_id] = state_to_json(outcome.state)
        if outcome.redelivered:
            metrics.REDELIVERED.inc()
        if outcome.revised:
            metrics.REVISIONS.inc()
        metrics.count_outputs(outcome.outputs)
        return [Emit(settings.output_topic, out) for out in outcome.outputs]

    @app.agent(channel, name="compliance-scoring")
    async def score(stream: Any) -> None:
        async for event in stream.events():
            await runtime.process(event, handle)

    app.compliance_scorer = scorer  # type: ignore[attr-defined]
    return app


def run(settings: ComplianceSettings, packs: PackIndex) -> None:
    """Run the service until SIGTERM/SIGINT."""
    app = build_app(settings, packs)
    log.info(
        "rule_packs_loaded",
        packs=[f"{p.name}@{p.version_label}" for p in packs.packs()],
        tenants=sorted(packs.tenants),
    )
    ensure_internal_topics(app, settings)
    # Faust's own command line starts the worker; it reads argv, so give it only its own.
    level = FAUST_LOG_LEVELS[settings.observability.log_level]
    sys.argv = [sys.argv[0], "worker", "--loglevel", level]
    app.main()
