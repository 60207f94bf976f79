"""Sentiment scores and compliance findings, per segment and per call."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loopwise.events.base import ContractModel, DerivedCallEvent, PartyRole, Probability

SentimentLabel = Literal["negative", "neutral", "positive"]
Severity = Literal["low", "medium", "high", "critical"]


class SentimentSignal(ContractModel):
    """One reason behind a sentiment score or its confidence."""

    name: str = Field(
        max_length=64, description="Signal name, e.g. negation, sarcasm_cue, short_text"
    )
    weight: float = Field(description="Signed contribution or penalty of the signal")


class SegmentSentimentV1(DerivedCallEvent):
    """Sentiment of one transcript segment."""

    event_type = "io.loopwise.sentiment.segment.v1"

    segment_id: str = Field(min_length=1, max_length=160, description="Scored segment id")
    speaker: PartyRole = Field(description="Who spoke the segment")
    label: SentimentLabel = Field(description="Sentiment class")
    score: float = Field(ge=-1.0, le=1.0, description="Polarity from -1 (negative) to 1 (positive)")
    confidence: Probability = Field(description="How likely the label is right")
    signals: list[SentimentSignal] = Field(
        default_factory=list, max_length=32, description="Signals behind score and confidence"
    )


class CallSentimentV1(DerivedCallEvent):
    """Rolling customer sentiment of a call."""

    event_type = "io.loopwise.sentiment.call.v1"

    reason: Literal["call_ended", "significant_change"] = Field(description="Why it was published")
    segments_scored: int = Field(ge=0, description="Customer segments scored so far")
    current: float = Field(ge=-1.0, le=1.0, description="Rolling customer score now")
    final: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="Score at call end; absent before the end"
    )
    trend: float = Field(description="Change of the rolling score per minute of call")
    worst: float = Field(ge=-1.0, le=1.0, description="Lowest rolling score in the call")
    worst_start_s: float | None = Field(
        default=None, ge=0, description="Start of the worst stretch"
    )
    worst_end_s: float | None = Field(default=None, ge=0, description="End of the worst stretch")
    label: SentimentLabel = Field(description="Sentiment class of the current score")
    confidence: Probability = Field(description="Mean confidence of the scored segments")


class Evidence(ContractModel):
    """The (redacted) text that made a finding."""

    segment_id: str | None = Field(
        default=None, max_length=160, description="Segment of the evidence"
    )
    start: int | None = Field(default=None, ge=0, description="Offset in the segment's text")
    end: int | None = Field(default=None, ge=0, description="End offset (exclusive)")
    text: str = Field(max_length=2_000, description="Redacted excerpt or explanation")
    start_s: float | None = Field(
        default=None, ge=0, description="When the evidence was said, seconds from call start"
    )
    end_s: float | None = Field(
        default=None, ge=0, description="When the evidence ended, seconds from call start"
    )


class ComplianceFinding(ContractModel):
    """One rule that fired."""

    finding_id: str = Field(
        min_length=1, max_length=200, description="Finding id, stable on replay"
    )
    rule_id: str = Field(min_length=1, max_length=128, description="Id of the rule in its pack")
    category: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description=(
            "Rule category: card_data, disclosure, identity_verification, prohibited_language, "
            "vulnerable_customer, escalation, or a pack's own"
        ),
    )
    severity: Severity = Field(description="How bad it is if true")
    score: Probability = Field(description="How sure the rule is")
    evidence: Evidence = Field(description="What made it fire")
    segment_id: str | None = Field(default=None, max_length=160, description="Segment, if any")
    matched_phrase: str | None = Field(
        default=None, max_length=500, description="The rule's phrase or pattern that matched"
    )
    explanation: str | None = Field(
        default=None,
        max_length=1_000,
        description="Why the rule fired, for reviewers (e.g. said 41.0 s after a 30 s deadline)",
    )


class SegmentComplianceV1(DerivedCallEvent):
    """Findings of one segment; an empty list says the segment was checked and is clean."""

    event_type = "io.loopwise.compliance.segment.v1"

    segment_id: str = Field(min_length=1, max_length=160, description="Checked segment id")
    findings: list[ComplianceFinding] = Field(
        default_factory=list, max_length=200, description="Findings; empty when nothing fired"
    )
    rule_pack_hash: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the resolved rule pack named in `producer` (hex)",
    )


class CallComplianceV1(DerivedCallEvent):
    """Call-level findings, decided when the call ends."""

    event_type = "io.loopwise.compliance.call.v1"

    findings: list[ComplianceFinding] = Field(
        default_factory=list, max_length=500, description="Call-level findings; may be empty"
    )
    segments_checked: int = Field(ge=0, description="Segments the rules saw")
    revision: int = Field(
        default=0,
        ge=0,
        description=(
            "0 for the result decided at call end; n when n segments that arrived after the "
            "end (e.g. the transcriber's final flush) were added and the call decided again"
        ),
    )
    rule_pack_hash: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the resolved rule pack named in `producer` (hex)",
    )
