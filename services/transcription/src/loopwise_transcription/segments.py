"""Recognised or external text to redacted `TranscriptSegmentV1` events: the only way out.

Every text that leaves the service (topic, CLI output) is built here, after
`loopwise.redaction`; nothing else in the package formats transcript text.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from loopwise.events import (
    ExternalTranscriptSegmentV1,
    ModelRef,
    RedactionSpan,
    TranscriptSegmentV1,
    Word,
)
from loopwise.events.base import PartyRole
from loopwise.redaction import redact, redact_words
from loopwise_transcription.engine import AsrSegment, AsrWord

SEGMENT_ID_NAMESPACE = uuid.UUID("0c7a2f4e-3d1b-4f59-9e62-7b1f4c3a8d21")
EXTERNAL_PRODUCER = "external-asr+loopwise-redaction"


@dataclass(frozen=True)
class RedactedText:
    """Redacted text, its words and the token spans."""

    text: str
    words: list[Word]
    spans: list[RedactionSpan]


def redact_asr(words: Sequence[AsrWord], text: str) -> RedactedText:
    """Redact recognised words (timings merged where a value spans words) and their text."""
    if not words:
        plain = redact(text)
        return RedactedText(plain.text, [], list(plain.spans))
    result = redact_words([w.word for w in words])
    out = [
        Word(
            word=rw.word[:200],
            start_s=words[rw.first].start_s,
            end_s=max(words[rw.last].end_s, words[rw.first].start_s),
            probability=min(w.probability for w in words[rw.first : rw.last + 1]),
        )
        for rw in result.words
    ]
    return RedactedText(result.text, out, list(result.spans))


def merge_asr(segments: Sequence[AsrSegment]) -> AsrSegment | None:
    """One utterance's decoded segments as one (words concatenated, confidence word-weighted)."""
    if not segments:
        return None
    words = [w for s in segments for w in s.words]
    weights = [max(1, len(s.words)) for s in segments]
    confidence = sum(s.confidence * n for s, n in zip(segments, weights, strict=True)) / sum(
        weights
    )
    return AsrSegment(
        text=" ".join(s.text for s in segments),
        start_s=min(s.start_s for s in segments),
        end_s=max(s.end_s for s in segments),
        words=words,
        confidence=confidence,
        language=segments[0].language,
        language_probability=segments[0].language_probability,
    )


def segment_event_id(call_id: str, segment_id: str, model: ModelRef) -> str:
    """Event id of an ASR segment: the same whenever the same utterance is cut again."""
    key = f"{call_id}/{segment_id}/{model.name}/{model.version}"
    return str(uuid.uuid5(SEGMENT_ID_NAMESPACE, key))


def asr_segment_event(
    *,
    tenant_id: str,
    call_id: str,
    segment_id: str,
    speaker: PartyRole,
    channel: int | None,
    asr: AsrSegment,
    source: Literal["realtime", "post_call"],
    producer: ModelRef,
    occurred_at: datetime,
    derived_from: Sequence[str] = (),
    flags: Sequence[str] = (),
    bounds: tuple[float, float] | None = None,
) -> TranscriptSegmentV1:
    """A redacted segment from recognised speech; `bounds` clamps times to the utterance."""
    red = redact_asr(asr.words, asr.text)
    start, end = asr.start_s, asr.end_s
    words = red.words
    if bounds is not None:
        lo, hi = bounds
        start, end = min(max(start, lo), hi), min(max(end, lo), hi)
        words = [
            w.model_copy(
                update={
                    "start_s": min(max(w.start_s, lo), hi),
                    "end_s": min(max(w.end_s, lo), hi),
                }
            )
            for w in words
        ]
    return TranscriptSegmentV1(
        tenant_id=tenant_id,
        call_id=call_id,
        occurred_at=occurred_at,
        producer=producer,
        derived_from=list(derived_from)[:10_000],
        segment_id=segment_id,
        speaker=speaker,
        channel=channel,
        start_s=start,
        end_s=max(start, end),
        text=red.text[:20_000],
        words=words[:5_000],
        confidence=round(min(1.0, max(0.0, asr.confidence)), 4),
        language=_language(asr.language),
        redactions=red.spans[:1_000],
        source=source,
        flags=sorted(set(flags))[:32],
    )


def external_segment_event(
    event: ExternalTranscriptSegmentV1, event_id: str, producer: ModelRef
) -> TranscriptSegmentV1:
    """The CX platform's own segment, redacted (text and words), other fields passed through."""
    text = redact(event.text)
    flags: list[str] = []
    confidence = event.confidence
    if confidence is None:
        flags.append("confidence_unknown")
    words: list[Word] = []
    if event.words:
        result = redact_words([w.word for w in event.words])
        for rw in result.words:
            covered = event.words[rw.first : rw.last + 1]
            probs = [w.probability for w in covered if w.probability is not None]
            probability = min(probs) if probs else confidence
            if probability is None:
                probability = 1.0
            words.append(
                Word(
                    word=rw.word[:200],
                    start_s=covered[0].start_s,
                    end_s=max(covered[-1].end_s, covered[0].start_s),
                    probability=probability,
                )
            )
    language = event.language.split("-")[0].lower() if event.language else "und"
    return TranscriptSegmentV1(
        tenant_id=event.tenant_id,
        call_id=event.call_id,
        occurred_at=event.occurred_at,
        producer=producer,
        derived_from=[event_id],
        segment_id=f"ext-{event.segment_id}"[:160],
        speaker=event.speaker,
        channel=event.channel,
        start_s=event.start_s,
        end_s=event.end_s,
        text=text.text[:20_000],
        words=words[:5_000],
        confidence=1.0 if confidence is None else confidence,
        language=_language(language),
        redactions=list(text.spans)[:1_000],
        source="external",
        flags=flags,
    )


def _language(code: str) -> str:
    code = (code or "und").strip()
    return code if 2 <= len(code) <= 16 else "und"
