"""What each event type says in its audit record: action, outcome, result, subject, details.

Only ids, labels, counts, versions and hashes: never transcript text, reviewer
comments or notes, task reasons or evidence excerpts. Scores become decimal
strings (records hold no floats).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from loopwise.events import (
    AudioChunkV1,
    AuditCheckpointV1,
    CallComplianceV1,
    CallEndedV1,
    CallMetadataV1,
    CallSentimentV1,
    CallStartedV1,
    ComplianceFinding,
    ConsoleAuditV1,
    ExternalTranscriptSegmentV1,
    ReleasedOutcomeV1,
    ReviewDecisionV1,
    ReviewTaskCreatedV1,
    ReviewTaskEscalatedV1,
    ReviewTaskExpiredV1,
    RoutingDecisionV1,
    SegmentComplianceV1,
    SegmentSentimentV1,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise_audit.chain import sha256_hex

_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/ =<>!-]{0,63}$")

Facts = dict[str, Any]


def utc_text(moment: datetime) -> str:
    """A timestamp as fixed-width UTC text (sorts as it compares): 2026-11-25T09:00:00.000000Z."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decimal(value: float | None) -> str | None:
    """A float as a short decimal string (records hold no floats)."""
    return None if value is None else format(value, ".6g")


def safe_token(value: str | float | bool | None) -> Any:
    """Keep short identifier-like strings and numbers; replace anything else by its hash."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return decimal(float(value))
    if _SAFE_TOKEN.match(value):
        return value
    return {"sha256": sha256_hex(value.encode("utf-8"))}


def _findings(findings: list[ComplianceFinding]) -> list[Facts]:
    return [
        {
            "finding_id": f.finding_id,
            "rule_id": f.rule_id,
            "category": f.category,
            "severity": f.severity,
            "score": decimal(f.score),
            "segment_id": f.segment_id,
        }
        for f in findings
    ]


# Each describer returns (action, outcome, result, subject, details).
Description = tuple[str, str, str, Facts, Facts]


def _call_started(e: CallStartedV1) -> Description:
    details = {
        "queue": e.queue,
        "region": e.region,
        "direction": e.direction,
        "language_hint": e.language_hint,
        "agent_id": e.agent_id,
        "channels": [{"index": c.index, "role": c.role} for c in e.channels],
        "metadata_keys": sorted(e.metadata),
    }
    return "call.start", "success", "started", {}, details


def _call_ended(e: CallEndedV1) -> Description:
    details = {"reason": e.reason, "duration_s": decimal(e.duration_s)}
    return "call.end", "success", e.reason, {}, details


def _call_metadata(e: CallMetadataV1) -> Description:
    return "call.metadata.update", "success", "updated", {}, {"metadata_keys": sorted(e.metadata)}


def _audio_chunk(e: AudioChunkV1) -> Description:
    subject = {"channel": e.channel, "audio_sequence": e.sequence}
    details = {"bytes": len(e.audio), "start_ms": e.start_ms}
    return "audio.receive", "success", "received", subject, details


def _external_transcript(e: ExternalTranscriptSegmentV1) -> Description:
    # The platform's own transcript is unredacted: only its size and timing are recorded.
    details = {
        "speaker": e.speaker,
        "chars": len(e.text),
        "words": len(e.words),
        "start_s": decimal(e.start_s),
        "end_s": decimal(e.end_s),
        "language": e.language,
        "engine": e.engine,
    }
    return (
        "transcript.receive_external",
        "success",
        "received",
        {"segment_id": e.segment_id},
        details,
    )


def _transcript(e: TranscriptSegmentV1) -> Description:
    details = {
        "speaker": e.speaker,
        "source": e.source,
        "language": e.language,
        "confidence": decimal(e.confidence),
        "chars": len(e.text),
        "words": len(e.words),
        "redactions": sorted({r.type for r in e.redactions}),
        "redaction_count": len(e.redactions),
        "flags": sorted(e.flags),
    }
    return (
        "transcript.publish",
        "success",
        "redacted_published",
        {"segment_id": e.segment_id},
        details,
    )


def _segment_sentiment(e: SegmentSentimentV1) -> Description:
    details = {
        "speaker": e.speaker,
        "score": decimal(e.score),
        "confidence": decimal(e.confidence),
        "signals": sorted(s.name for s in e.signals),
    }
    return "sentiment.score_segment", "success", e.label, {"segment_id": e.segment_id}, details


def _call_sentiment(e: CallSentimentV1) -> Description:
    details = {
        "reason": e.reason,
        "segments_scored": e.segments_scored,
        "current": decimal(e.current),
        "final": decimal(e.final),
        "worst": decimal(e.worst),
        "confidence": decimal(e.confidence),
    }
    return "sentiment.score_call", "success", e.label, {}, details


def _segment_compliance(e: SegmentComplianceV1) -> Description:
    result = "flagged" if e.findings else "clean"
    details = {"findings": _findings(e.findings)}
    return "compliance.check_segment", "success", result, {"segment_id": e.segment_id}, details


def _call_compliance(e: CallComplianceV1) -> Description:
    result = "flagged" if e.findings else "clean"
    details = {"findings": _findings(e.findings), "segments_checked": e.segments_checked}
    return "compliance.check_call", "success", result, {}, details


def _routing(e: RoutingDecisionV1) -> Description:
    subject = {"decision_id": e.decision_id, "segment_id": e.segment_id, "task_id": e.task_id}
    details = {
        "scope": e.scope,
        "rule_id": e.rule_id,
        "fired": [
            {
                "rule_id": f.rule_id,
                "condition": safe_token(f.condition),
                "observed": safe_token(f.observed),
            }
            for f in e.fired
        ],
        "sampling_draw": decimal(e.sampling_draw),
        "sample_rate": decimal(e.sample_rate),
        "priority": e.priority,
        "sla_s": e.sla_s,
        "mode": e.mode,
    }
    return "routing.decide", "success", e.outcome, subject, details


def _task_created(e: ReviewTaskCreatedV1) -> Description:
    subject = {"task_id": e.task_id, "segment_ids": [s.segment_id for s in e.segments]}
    details = {
        "scope": e.scope,
        "kind": e.kind,
        "mode": e.mode,
        "priority": e.priority,
        "due_at": utc_text(e.due_at),
        "rule_ids": sorted(e.rule_ids),
        "queue": e.queue,
        "segments": len(e.segments),
        "call_findings": _findings(e.call_findings),
    }
    return "review.task.open", "success", e.kind, subject, details


def _task_escalated(e: ReviewTaskEscalatedV1) -> Description:
    details = {"level": e.level, "priority": e.priority, "due_at": utc_text(e.due_at)}
    # An escalation means the review SLA was missed: a failure of the control.
    return "review.task.escalate", "failure", "sla_breached", {"task_id": e.task_id}, details


def _task_expired(e: ReviewTaskExpiredV1) -> Description:
    return "review.task.expire", "failure", e.action, {"task_id": e.task_id}, {}


def _decision(e: ReviewDecisionV1) -> Description:
    subject = {
        "task_id": e.task_id,
        "decision_id": e.decision_id,
        "segment_ids": sorted({c.segment_id for c in e.transcript_corrections}),
    }
    details = {
        "transcript_corrections": len(e.transcript_corrections),
        "corrected_text_sha256": {
            c.segment_id: sha256_hex(c.text.encode("utf-8")) for c in e.transcript_corrections
        },
        "sentiment_labels": [
            {"segment_id": s.segment_id, "label": s.label} for s in e.sentiment_labels
        ],
        "finding_verdicts": [
            {"finding_id": v.finding_id, "rule_id": v.rule_id, "verdict": v.verdict}
            for v in e.finding_verdicts
        ],
        "has_comment": e.comment is not None,
        "seconds_to_decide": decimal(e.seconds_to_decide),
    }
    return "review.decide", "success", e.verdict, subject, details


def _released(e: ReleasedOutcomeV1) -> Description:
    subject = {
        "outcome_id": e.outcome_id,
        "task_id": e.task_id,
        "decision_id": e.decision_id,
        "segment_ids": [s.segment_id for s in e.segments],
    }
    details = {
        "scope": e.scope,
        "verdict": e.verdict,
        "corrected_segments": sum(1 for s in e.segments if s.corrected),
        "findings": _findings(e.findings),
    }
    return "outcome.release", "success", e.release, subject, details


def _checkpoint(e: AuditCheckpointV1) -> Description:
    details = {"sequence": e.sequence, "head_hash": e.head_hash, "key_id": e.key_id}
    return "audit.checkpoint", "success", "signed", {}, details


def _console_audit(e: ConsoleAuditV1) -> Description:
    subject = {"task_id": e.task_id, "decision_id": e.decision_id}
    details = {
        "actor": e.actor_id,
        "role": e.actor_role,
        "auth": e.auth,
        "method": e.method,
        "route": e.route,
        "status": e.status,
        "reason": e.reason,
    }
    outcome = "success" if e.outcome == "allowed" else "failure"
    return f"console.{e.action}", outcome, e.outcome, subject, details


DESCRIBERS: dict[type[TenantEvent], Callable[[Any], Description]] = {
    CallStartedV1: _call_started,
    CallEndedV1: _call_ended,
    CallMetadataV1: _call_metadata,
    AudioChunkV1: _audio_chunk,
    ExternalTranscriptSegmentV1: _external_transcript,
    TranscriptSegmentV1: _transcript,
    SegmentSentimentV1: _segment_sentiment,
    CallSentimentV1: _call_sentiment,
    SegmentComplianceV1: _segment_compliance,
    CallComplianceV1: _call_compliance,
    RoutingDecisionV1: _routing,
    ReviewTaskCreatedV1: _task_created,
    ReviewTaskEscalatedV1: _task_escalated,
    ReviewTaskExpiredV1: _task_expired,
    ReviewDecisionV1: _decision,
    ReleasedOutcomeV1: _released,
    ConsoleAuditV1: _console_audit,
    AuditCheckpointV1: _checkpoint,
}
