"""Recognition of what the cutter hands over: an utterance (one segment) or a whole
recording (post-call mode, a segment per sentence), redacted on the way out."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

from loopwise.events import ModelRef, TranscriptSegmentV1
from loopwise_transcription.audio import MODEL_RATE, Samples
from loopwise_transcription.calls import CallState, Utterance
from loopwise_transcription.config import AsrSettings, Vocabulary
from loopwise_transcription.engine import AsrSegment
from loopwise_transcription.metrics import (
    ASR_SECONDS,
    AUDIO_SECONDS,
    REAL_TIME_FACTOR,
    SEGMENTS,
)
from loopwise_transcription.segments import asr_segment_event, merge_asr


class Recognizer(Protocol):
    """What the handler needs of the engine."""

    ref: ModelRef

    def transcribe(
        self,
        samples: Samples,
        *,
        offset_s: float = 0.0,
        language: str | None = None,
        vocabulary: tuple[str, ...] = (),
        vad_filter: bool = False,
        beam_size: int | None = None,
        word_timestamps: bool = True,
    ) -> list[AsrSegment]:
        """Transcribe 16 kHz samples."""
        ...


class Recognition:
    """Turns cut audio of a call into redacted segments with the engine."""

    def __init__(self, engine: Recognizer, asr: AsrSettings, vocabulary: Vocabulary) -> None:
        self.engine = engine
        self.asr = asr
        self.vocabulary = vocabulary

    def recording(self, call: CallState, u: Utterance) -> list[TranscriptSegmentV1]:
        """Post-call mode: a channel's whole recording in one pass, a segment per sentence."""
        cut = u.cut
        offset_s = cut.start / MODEL_RATE
        audio_s = cut.samples.size / MODEL_RATE
        started = time.perf_counter()
        found = self.engine.transcribe(
            cut.samples,
            offset_s=offset_s,
            language=call.language,
            vocabulary=self.vocabulary.for_tenant(call.started.tenant_id),
            vad_filter=self.asr.batch_vad,
            word_timestamps=self.asr.batch_word_timestamps,
        )
        spent = time.perf_counter() - started
        AUDIO_SECONDS.labels("post_call").inc(audio_s)
        ASR_SECONDS.labels("post_call").inc(spent)
        REAL_TIME_FACTOR.labels("post_call").observe(spent / max(audio_s, 1e-3))
        segments = []
        for asr in found:
            segment = asr_segment_event(
                tenant_id=call.started.tenant_id,
                call_id=call.started.call_id,
                segment_id=f"ch{u.channel}-{round(asr.start_s * MODEL_RATE):010d}",
                speaker=u.role,
                channel=u.channel,
                asr=asr,
                source="post_call",
                producer=self.engine.ref,
                occurred_at=datetime.now(UTC),
                derived_from=[call.started_id, *u.derived_from],
                flags=sorted(u.flags),
                bounds=(offset_s, cut.end / MODEL_RATE),
            )
            SEGMENTS.labels("post_call", segment.language).inc()
            segments.append(segment)
        return segments

    def utterance(self, call: CallState, u: Utterance) -> TranscriptSegmentV1 | None:
        cut = u.cut
        offset_s = cut.start / MODEL_RATE
        audio_s = cut.samples.size / MODEL_RATE
        started = time.perf_counter()
        asr = merge_asr(
            self.engine.transcribe(
                cut.samples,
                offset_s=offset_s,
                language=call.language,
                vocabulary=self.vocabulary.for_tenant(call.started.tenant_id),
                beam_size=self.asr.realtime_beam_size,
            )
        )
        spent = time.perf_counter() - started
        AUDIO_SECONDS.labels("realtime").inc(audio_s)
        ASR_SECONDS.labels("realtime").inc(spent)
        REAL_TIME_FACTOR.labels("realtime").observe(spent / max(audio_s, 1e-3))
        if asr is None:
            return None
        flags = set(u.flags)
        if cut.reason == "max_length":
            flags.add("max_length_split")
        segment = asr_segment_event(
            tenant_id=call.started.tenant_id,
            call_id=call.started.call_id,
            segment_id=f"ch{u.channel}-{cut.start:010d}",
            speaker=u.role,
            channel=u.channel,
            asr=asr,
            source="realtime",
            producer=self.engine.ref,
            occurred_at=datetime.now(UTC),
            derived_from=[call.started_id, *u.derived_from],
            flags=sorted(flags),
            bounds=(offset_s, cut.end / MODEL_RATE),
        )
        SEGMENTS.labels("realtime", segment.language).inc()
        return segment
