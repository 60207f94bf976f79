"""Transcript segments as Loopwise publishes them: always redacted."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from loopwise.events.base import ContractModel, DerivedCallEvent, PartyRole, Probability

RedactionType = Literal[
    "CARD_NUMBER",
    "CVV",
    "CARD_EXPIRY",
    "US_SSN",
    "BANK_ACCOUNT",
    "ROUTING_NUMBER",
    "IBAN",
    "PHONE",
    "EMAIL",
    "DATE_OF_BIRTH",
    "OTHER_PII",
]


class RedactionSpan(ContractModel):
    """Where a redacted value stood in the published (redacted) text."""

    type: RedactionType = Field(description="Kind of value removed")
    start: int = Field(ge=0, description="Offset of the replacement token in the redacted text")
    end: int = Field(ge=0, description="End offset (exclusive) of the token in the redacted text")
    confidence: Probability = Field(description="Detector confidence that this was that kind")


class Word(ContractModel):
    """One recognised (and redacted) word with its timing."""

    word: str = Field(max_length=200, description="The word; a redaction token if it was PII")
    start_s: float = Field(ge=0, description="Word start, seconds from call start")
    end_s: float = Field(ge=0, description="Word end, seconds from call start")
    probability: Probability = Field(description="Recogniser probability of this word")


class TranscriptSegmentV1(DerivedCallEvent):
    """A final, redacted transcript segment of one speaker."""

    event_type = "io.loopwise.transcript.segment.v1"

    segment_id: str = Field(
        min_length=1, max_length=160, description="Segment id, unique in the call"
    )
    speaker: PartyRole = Field(description="Who spoke")
    channel: int | None = Field(default=None, ge=0, le=1, description="Channel index, if known")
    start_s: float = Field(ge=0, description="Segment start, seconds from call start")
    end_s: float = Field(ge=0, description="Segment end, seconds from call start, >= start_s")
    text: str = Field(max_length=20_000, description="Redacted transcript text")
    words: list[Word] = Field(
        default_factory=list, max_length=5_000, description="Words with timings and probabilities"
    )
    confidence: Probability = Field(description="Segment confidence in [0, 1]")
    language: str = Field(min_length=2, max_length=16, description="Language code (ISO 639-1)")
    redactions: list[RedactionSpan] = Field(
        default_factory=list, max_length=1_000, description="What was redacted, where, how sure"
    )
    source: Literal["realtime", "post_call", "external"] = Field(
        description="Streaming ASR, whole-recording ASR, or the CX platform's own transcript"
    )
    flags: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Quality flags, e.g. audio_gap, audio_reordered, truncated",
    )

    @field_validator("end_s")
    @classmethod
    def _end_not_before_start(cls, end_s: float, info: ValidationInfo) -> float:
        start_s = info.data.get("start_s")
        if start_s is not None and end_s < start_s:
            raise ValueError("end_s is before start_s")
        return end_s
