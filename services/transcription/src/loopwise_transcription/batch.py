"""Post-call mode: whole recordings in one pass, and external transcript files, redacted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopwise.events import TranscriptSegmentV1
from loopwise.events.base import PartyRole
from loopwise.redaction import redact, redact_words
from loopwise_transcription.audio import MODEL_RATE, read_audio_file
from loopwise_transcription.engine import Engine
from loopwise_transcription.metrics import (
    ASR_SECONDS,
    AUDIO_SECONDS,
    REAL_TIME_FACTOR,
    SEGMENTS,
)
from loopwise_transcription.segments import asr_segment_event

STEREO_ROLES: tuple[PartyRole, PartyRole] = ("agent", "customer")


def roles_for(channels: int, roles: list[PartyRole] | None) -> list[PartyRole]:
    """Speaker role of each channel: given, or mixed (mono) / agent, customer (stereo)."""
    if roles:
        if len(roles) != channels:
            raise ValueError(f"{len(roles)} roles given for {channels} channel(s)")
        return roles
    return ["mixed"] if channels == 1 else list(STEREO_ROLES[:channels])


def transcribe_recording(
    engine: Engine,
    path: Path,
    *,
    tenant_id: str = "batch",
    roles: list[PartyRole] | None = None,
    language: str | None = None,
    vocabulary: tuple[str, ...] = (),
    raw: dict[str, Any] | None = None,
) -> tuple[list[TranscriptSegmentV1], float, float]:
    """Transcribe one file, each channel as its own party; segments sorted by start time.

    Returns the segments, the audio seconds and the compute seconds.
    """
    channels = read_audio_file(path, **(raw or {}))
    parties = roles_for(len(channels), roles)
    call_id = _call_id(path)
    segments: list[TranscriptSegmentV1] = []
    audio_s = max((c.samples.size for c in channels), default=0) / MODEL_RATE
    started = time.perf_counter()
    for channel, role in zip(channels, parties, strict=True):
        for n, asr in enumerate(
            engine.transcribe(
                channel.samples,
                language=language,
                vocabulary=vocabulary,
                vad_filter=engine.settings.batch_vad,
                word_timestamps=engine.settings.batch_word_timestamps,
            )
        ):
            segment = asr_segment_event(
                tenant_id=tenant_id,
                call_id=call_id,
                segment_id=f"ch{channel.index}-{n:05d}",
                speaker=role,
                channel=channel.index if len(channels) > 1 else None,
                asr=asr,
                source="post_call",
                producer=engine.ref,
                occurred_at=datetime.now(UTC),
            )
            SEGMENTS.labels("post_call", segment.language).inc()
            segments.append(segment)
    spent = time.perf_counter() - started
    AUDIO_SECONDS.labels("post_call").inc(audio_s)
    ASR_SECONDS.labels("post_call").inc(spent)
    REAL_TIME_FACTOR.labels("post_call").observe(spent / max(audio_s, 1e-3))
    segments.sort(key=lambda s: (s.start_s, s.channel or 0))
    return segments, audio_s, spent


def segment_line(path: Path, segment: TranscriptSegmentV1) -> dict[str, Any]:
    """The JSON line `batch` prints for one segment."""
    return {
        "file": str(path),
        "segment_id": segment.segment_id,
        "text": segment.text,
        "start": segment.start_s,
        "end": segment.end_s,
        "speaker": segment.speaker,
        "channel": segment.channel,
        "confidence": segment.confidence,
        "language": segment.language,
        "redactions": [r.model_dump() for r in segment.redactions],
        "words": [w.model_dump() for w in segment.words],
        "flags": segment.flags,
        "model": segment.producer.model_dump(),
    }


class BadLine(ValueError):
    """A line of an external transcript file that is not a JSON object with a text."""


def redact_external_lines(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Redact `text` (and `words[].word`) of each JSON line; other fields pass through.

    A line that is a full `ExternalTranscriptSegmentV1` is validated as one; any JSON
    object with a string `text` is accepted. A bad line raises BadLine naming its number.
    """
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadLine(f"line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise BadLine(f"line {number}: needs a JSON object with a string 'text'")
        yield redact_record(record)


def redact_record(record: dict[str, Any]) -> dict[str, Any]:
    """One external segment record with its text and words redacted."""
    red = redact(record["text"])
    out = {**record, "text": red.text, "redactions": [s.model_dump() for s in red.spans]}
    words = record.get("words")
    if (
        isinstance(words, list)
        and words
        and all(isinstance(w, dict) and isinstance(w.get("word"), str) for w in words)
    ):
        result = redact_words([w["word"] for w in words])
        out["words"] = [
            {
                **words[rw.first],
                "word": rw.word,
                "end_s": words[rw.last].get("end_s", words[rw.first].get("end_s")),
            }
            for rw in result.words
        ]
    elif "words" in record:
        out["words"] = []  # unknown word layout: dropped rather than passed unredacted
    return out


def _call_id(path: Path) -> str:
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.stem)[:100]
    return f"file-{stem or 'audio'}"
