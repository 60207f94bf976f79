"""One valid example of every event, for tests, docs and smoke runs against a cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from loopwise.events.audit import AuditCheckpointV1
from loopwise.events.base import ModelRef, TenantEvent
from loopwise.events.calls import (
    AudioChunkV1,
    AudioFormat,
    CallEndedV1,
    CallMetadataV1,
    CallStartedV1,
    ChannelSpec,
    ExternalTranscriptSegmentV1,
)
from loopwise.events.review import (
    ConsoleAuditV1,
    FindingVerdict,
    FiredCondition,
    ReleasedOutcomeV1,
    ReleasedSegment,
    ReviewDecisionV1,
    ReviewTaskCreatedV1,
    ReviewTaskEscalatedV1,
    ReviewTaskExpiredV1,
    RoutingDecisionV1,
    SentimentRelabel,
    TaskSegment,
    TranscriptCorrection,
)
from loopwise.events.scores import (
    CallComplianceV1,
    CallSentimentV1,
    ComplianceFinding,
    Evidence,
    SegmentComplianceV1,
    SegmentSentimentV1,
    SentimentSignal,
)
from loopwise.events.transcripts import RedactionSpan, TranscriptSegmentV1, Word


def example_events(
    call_id: str = "call-0001", tenant_id: str = "acme", at: datetime | None = None
) -> list[TenantEvent]:
    """Every event type once, as one call would produce them, in pipeline order."""
    t0 = at or datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    ids: dict[str, Any] = {"tenant_id": tenant_id, "call_id": call_id}
    asr = ModelRef(name="faster-whisper/whisper-tiny", version="ct2-int8")
    text = "my card is [CARD_NUMBER] and I am really unhappy"
    finding = ComplianceFinding(
        finding_id=f"{call_id}/seg-0001/card_data.spoken",
        rule_id="card_data.spoken",
        category="card_data",
        severity="high",
        score=0.99,
        evidence=Evidence(segment_id="seg-0001", start=11, end=24, text="[CARD_NUMBER]"),
        segment_id="seg-0001",
    )
    segment = TaskSegment(
        segment_id="seg-0001",
        speaker="customer",
        start_s=3.2,
        end_s=7.9,
        text=text,
        transcript_confidence=0.91,
        sentiment_label="negative",
        sentiment_score=-0.62,
        sentiment_confidence=0.8,
        findings=[finding],
    )
    return [
        CallStartedV1(
            **ids,
            occurred_at=t0,
            queue="billing",
            region="eu-west",
            language_hint="en",
            audio=AudioFormat(encoding="mulaw", sample_rate_hz=8000, channels=2),
            channels=[ChannelSpec(index=0, role="agent"), ChannelSpec(index=1, role="customer")],
            metadata={"campaign": "renewals"},
        ),
        CallMetadataV1(**ids, occurred_at=t0, metadata={"customer_tier": "gold"}),
        AudioChunkV1(**ids, occurred_at=t0, channel=1, sequence=0, start_ms=0, audio=b"\xff" * 160),
        ExternalTranscriptSegmentV1(
            **ids,
            occurred_at=t0 + timedelta(seconds=8),
            segment_id="ext-1",
            speaker="customer",
            start_s=3.2,
            end_s=7.9,
            text="my card is 4111 1111 1111 1111 and I am really unhappy",
            confidence=0.9,
            language="en",
        ),
        TranscriptSegmentV1(
            **ids,
            occurred_at=t0 + timedelta(seconds=8),
            producer=asr,
            segment_id="seg-0001",
            speaker="customer",
            channel=1,
            start_s=3.2,
            end_s=7.9,
            text=text,
            words=[Word(word="my", start_s=3.2, end_s=3.4, probability=0.97)],
            confidence=0.91,
            language="en",
            redactions=[RedactionSpan(type="CARD_NUMBER", start=11, end=24, confidence=0.99)],
            source="realtime",
        ),
        SegmentSentimentV1(
            **ids,
            occurred_at=t0 + timedelta(seconds=8),
            producer=ModelRef(name="vader", version="3.3.2"),
            segment_id="seg-0001",
            speaker="customer",
            label="negative",
            score=-0.62,
            confidence=0.8,
            signals=[SentimentSignal(name="negation", weight=-0.1)],
        ),
        SegmentComplianceV1(
            **ids,
            occurred_at=t0 + timedelta(seconds=8),
            producer=ModelRef(name="default-pack", version="1"),
            segment_id="seg-0001",
            findings=[finding],
        ),
        RoutingDecisionV1(
            **ids,
            occurred_at=t0 + timedelta(seconds=8),
            producer=ModelRef(name="routing-policy", version="sha256:ab12"),
            decision_id=f"{call_id}/seg-0001",
            scope="segment",
            segment_id="seg-0001",
            outcome="hold",
            rule_id="card-data-hold",
            fired=[
                FiredCondition(
                    rule_id="card-data-hold",
                    condition="finding.category == card_data",
                    observed="card_data",
                )
            ],
            policy_version="sha256:ab12",
            priority="p1",
            sla_s=900,
            mode="realtime",
            task_id=f"task-{call_id}-1",
        ),
        ReviewTaskCreatedV1(
            **ids,
            occurred_at=t0 + timedelta(seconds=8),
            producer=ModelRef(name="routing-policy", version="sha256:ab12"),
            task_id=f"task-{call_id}-1",
            scope="segment",
            kind="hold",
            mode="realtime",
            priority="p1",
            due_at=t0 + timedelta(minutes=15),
            rule_ids=["card-data-hold"],
            reasons=["Card number spoken"],
            policy_version="sha256:ab12",
            queue="billing",
            language="en",
            segments=[segment],
        ),
        ReviewTaskEscalatedV1(
            **ids,
            occurred_at=t0 + timedelta(minutes=15),
            producer=ModelRef(name="routing-policy", version="sha256:ab12"),
            task_id=f"task-{call_id}-1",
            level=1,
            priority="p1",
            due_at=t0 + timedelta(minutes=30),
            reason="SLA of 900 s passed without a decision",
        ),
        ReviewDecisionV1(
            **ids,
            occurred_at=t0 + timedelta(minutes=20),
            producer=ModelRef(name="review-console", version="0.1.0"),
            decision_id="dec-1",
            task_id=f"task-{call_id}-1",
            reviewer_id="rev-7",
            verdict="approve",
            transcript_corrections=[
                TranscriptCorrection(
                    segment_id="seg-0001", text="my card is [CARD_NUMBER] and I am really unhappy"
                )
            ],
            sentiment_labels=[SentimentRelabel(segment_id="seg-0001", label="negative")],
            finding_verdicts=[
                FindingVerdict(
                    finding_id=finding.finding_id, rule_id=finding.rule_id, verdict="confirmed"
                )
            ],
            seconds_to_decide=42.0,
        ),
        ReviewTaskExpiredV1(
            **ids,
            occurred_at=t0 + timedelta(hours=24),
            producer=ModelRef(name="routing-policy", version="sha256:ab12"),
            task_id=f"task-{call_id}-2",
            reason="final deadline passed",
            action="kept_held",
        ),
        ReleasedOutcomeV1(
            **ids,
            occurred_at=t0 + timedelta(minutes=20),
            producer=ModelRef(name="routing-policy", version="sha256:ab12"),
            outcome_id=f"{call_id}/seg-0001",
            scope="segment",
            release="reviewed",
            verdict="approve",
            task_id=f"task-{call_id}-1",
            decision_id="dec-1",
            policy_version="sha256:ab12",
            segments=[
                ReleasedSegment(
                    segment_id="seg-0001",
                    speaker="customer",
                    start_s=3.2,
                    end_s=7.9,
                    text=text,
                    corrected=False,
                    sentiment_label="negative",
                )
            ],
            findings=[finding],
        ),
        CallEndedV1(
            **ids, occurred_at=t0 + timedelta(minutes=5), reason="completed", duration_s=300.0
        ),
        CallSentimentV1(
            **ids,
            occurred_at=t0 + timedelta(minutes=5),
            producer=ModelRef(name="vader", version="3.3.2"),
            reason="call_ended",
            segments_scored=12,
            current=-0.3,
            final=-0.3,
            trend=-0.05,
            worst=-0.62,
            worst_start_s=3.2,
            worst_end_s=7.9,
            label="negative",
            confidence=0.74,
        ),
        CallComplianceV1(
            **ids,
            occurred_at=t0 + timedelta(minutes=5),
            producer=ModelRef(name="default-pack", version="1"),
            findings=[],
            segments_checked=24,
        ),
        ConsoleAuditV1(
            tenant_id=tenant_id,
            occurred_at=t0 + timedelta(minutes=20),
            audit_id="console-audit-1",
            action="task.decide",
            outcome="allowed",
            status=200,
            actor_id="rev-7",
            actor_role="reviewer",
            auth="token",
            method="POST",
            route="/api/v1/tasks/{task_id}/decision",
            task_id=f"task-{call_id}-1",
            task_call_id=call_id,
            decision_id="dec-1",
        ),
        AuditCheckpointV1(
            tenant_id=tenant_id,
            occurred_at=t0 + timedelta(minutes=30),
            sequence=1000,
            head_hash="0" * 64,
            hmac="f" * 64,
            key_id="audit-2026-11",
            records=1001,
        ),
    ]
