"""The transcription handler: call events, audio chunks and external segments in, redacted
segments out. Pure of Kafka: the worker feeds it `Incoming` events and produces its `Emit`s.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from loopwise.events import (
    AudioChunkV1,
    CallEndedV1,
    CallMetadataV1,
    CallStartedV1,
    ExternalTranscriptSegmentV1,
    ModelRef,
    validation_reason,
)
from loopwise.kafka.intake import DeadLetterRequest, Emit, Incoming
from loopwise.logging import get_logger
from loopwise_transcription.audio import AudioFormatError, looks_like_text
from loopwise_transcription.calls import (
    CallState,
    ChannelState,
    Partition,
    SequenceOutcome,
    Utterance,
    next_in_order,
    sequence_outcome,
)
from loopwise_transcription.config import AsrSettings, TranscriptionSettings, Vocabulary
from loopwise_transcription.metrics import (
    CHUNKS,
    HELD_CHUNKS,
    OPEN_CALLS,
    SEGMENTS,
    SEQUENCE_ANOMALIES,
    UTTERANCE_LATENCY,
)
from loopwise_transcription.recognise import Recognition, Recognizer
from loopwise_transcription.segments import (
    EXTERNAL_PRODUCER,
    external_segment_event,
    segment_event_id,
)
from loopwise_transcription.vad import VadParams

log = get_logger(__name__)


class BadAudioChunk(ValueError):
    """A chunk that cannot be used; the error class names why (the worker dead-letters it)."""


class UnknownChannel(BadAudioChunk):
    """The chunk's channel is not one of the call's channels."""


class NoAudioFormat(BadAudioChunk):
    """The call-started event declared no audio format."""


class NotAudio(BadAudioChunk):
    """The chunk's bytes are text, not samples."""


class OversizeChunk(BadAudioChunk):
    """The chunk holds more audio than one chunk may."""


class LateChunk(BadAudioChunk):
    """The chunk came after its gap had been given up on."""


class CallAlreadyEnded(BadAudioChunk):
    """The chunk's call has ended."""


class SegmentInvalid(ValueError):
    """A segment could not be built; the reason names fields, never their values."""


@dataclass
class _Held:
    incoming: Incoming
    since: float


class TranscriptionHandler:
    """Per-call streaming transcription; state lives in memory, keyed by call id."""

    def __init__(
        self,
        settings: TranscriptionSettings,
        asr: AsrSettings,
        engine: Recognizer,
        vocabulary: Vocabulary | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.asr = asr
        self.engine = engine
        self.vocabulary = vocabulary or Vocabulary()
        self.recognition = Recognition(engine, asr, self.vocabulary)
        self.clock = clock
        self.vad = VadParams.from_ms(
            threshold=asr.vad_threshold,
            min_silence_ms=asr.vad_min_silence_ms,
            speech_pad_ms=asr.vad_speech_pad_ms,
            min_speech_ms=asr.vad_min_speech_ms,
            max_utterance_s=asr.max_utterance_s,
        )
        self.external_producer = ModelRef(name=EXTERNAL_PRODUCER, version="1")
        self.calls: dict[str, CallState] = {}
        self.held: dict[str, list[_Held]] = {}
        self.ended: OrderedDict[str, None] = OrderedDict()
        self._dead: list[DeadLetterRequest] = []

    # -- entry points ----------------------------------------------------------------------

    def __call__(self, incoming: Incoming) -> list[Emit]:
        """Handle one event; raise BadAudioChunk (or a subclass) to dead-letter it."""
        try:
            return self._handle(incoming)
        except ValidationError as exc:
            # pydantic's message quotes input values (transcript text): keep only the summary.
            raise SegmentInvalid(validation_reason(exc)) from None

    def _handle(self, incoming: Incoming) -> list[Emit]:
        now = self.clock()
        event = incoming.event
        if isinstance(event, AudioChunkV1):
            return self._chunk(incoming, now)
        if isinstance(event, CallStartedV1):
            return self._start(incoming, now)
        if isinstance(event, CallEndedV1):
            return self._end(incoming, now)
        if isinstance(event, ExternalTranscriptSegmentV1):
            segment = external_segment_event(event, incoming.envelope.id, self.external_producer)
            SEGMENTS.labels("external", segment.language).inc()
            return [Emit(self.settings.output_topic, segment)]
        if isinstance(event, CallMetadataV1):
            return []
        raise TypeError(f"transcription does not handle {type(event).__name__}")

    def tick(self, now: float | None = None) -> list[tuple[Incoming, Emit]]:
        """Timers: expire held chunks (to dead letters), close idle calls (flush their speech).

        Returns segments of idle calls with the input event each is a child of.
        """
        try:
            return self._tick(self.clock() if now is None else now)
        except ValidationError as exc:
            raise SegmentInvalid(validation_reason(exc)) from None

    def _tick(self, now: float) -> list[tuple[Incoming, Emit]]:
        for call_id in list(self.held):
            entries = self.held[call_id]
            if now - entries[0].since >= self.settings.pre_start_hold_s:
                del self.held[call_id]
                for h in entries:
                    self._dead.append(
                        DeadLetterRequest(
                            h.incoming,
                            "CallNotStarted",
                            f"no call-started event for this call within "
                            f"{self.settings.pre_start_hold_s:g} s (unknown call id, or audio "
                            "sent before the call started)",
                        )
                    )
        self._gauge()
        out: list[tuple[Incoming, Emit]] = []
        for call_id, call in list(self.calls.items()):
            if call.ending is not None and now >= call.ending:
                flag = None if call.last_sequence is None else "audio_incomplete"
                out += [(call.incoming, e) for e in self._close(call_id, now, flag)]
            elif now - call.last_seen >= self.settings.idle_call_timeout_s:
                log.warning("call_idle_closed", call_id=call_id)
                parent = call.incoming
                out += [(parent, e) for e in self._close(call_id, now, "idle_timeout")]
        return out

    def take_dead_letters(self) -> list[DeadLetterRequest]:
        """Held inputs given up on since the last call."""
        dead, self._dead = self._dead, []
        return dead

    def offset_floors(self) -> dict[Partition, int]:
        """Per partition, the lowest input offset still needed to rebuild the in-memory state."""
        floors: dict[Partition, int] = {}

        def lower(partition: Partition, offset: int) -> None:
            floors[partition] = min(floors.get(partition, offset), offset)

        for call in self.calls.values():
            lower(*call.started_at)
            for channel in call.channels.values():
                for partition, offset in channel.floors().items():
                    lower(partition, offset)
        for entries in self.held.values():
            for h in entries:
                lower((h.incoming.topic, h.incoming.partition), h.incoming.offset)
        return floors

    def drop_partitions(self, partitions: set[Partition]) -> None:
        """Forget calls whose events came from partitions this instance no longer owns."""
        for call_id, call in list(self.calls.items()):
            if call.started_at[0] in partitions:
                del self.calls[call_id]
        for call_id, entries in list(self.held.items()):
            if any((h.incoming.topic, h.incoming.partition) in partitions for h in entries):
                del self.held[call_id]
        self._gauge()

    # -- calls -----------------------------------------------------------------------------

    def _start(self, incoming: Incoming, now: float) -> list[Emit]:
        event = incoming.event
        assert isinstance(event, CallStartedV1)
        if event.call_id in self.calls:
            return []  # a redelivered start: the call is already open
        self.ended.pop(event.call_id, None)
        post_call = self.settings.post_call_max_s if self.settings.mode == "post_call" else None
        self.calls[event.call_id] = CallState.open(incoming, self.vad, now, post_call)
        emits: list[Emit] = []
        for held in self.held.pop(event.call_id, []):
            try:
                emits += self._chunk(held.incoming, now)
            except (BadAudioChunk, AudioFormatError) as exc:
                self._dead.append(DeadLetterRequest(held.incoming, type(exc).__name__, str(exc)))
        self._gauge()
        return emits

    def _end(self, incoming: Incoming, now: float) -> list[Emit]:
        event = incoming.event
        assert isinstance(event, CallEndedV1)
        call = self.calls.get(event.call_id)
        if call is None:
            log.info("call_end_for_unknown_call", call_id=event.call_id)
            return []
        # Audio and call topics are not ordered with each other: chunks may still be on
        # their way. Close at once only when the event says which chunk was last and all
        # of them are here (or the call has no audio); else after a grace period.
        call.ending = now + self.settings.end_grace_s
        if event.last_audio_sequence is not None:
            call.last_sequence = {
                int(k): v for k, v in event.last_audio_sequence.items() if k.isdigit()
            }
        if not call.channels or call.audio_complete() or self.settings.end_grace_s == 0:
            return self._close(event.call_id, now, None)
        return []

    def _close(self, call_id: str, now: float, flag: str | None) -> list[Emit]:
        call = self.calls.pop(call_id)
        emits: list[Emit] = []
        for channel in call.channels.values():
            for incoming, missing in next_in_order(channel, 0, force=True):
                emits += self._feed(call, channel, incoming, now, missing)
            if flag:
                channel.flags.add(flag)
            emits += self._publish(call, channel.flush(now))
        self.ended[call_id] = None
        while len(self.ended) > 10_000:
            self.ended.popitem(last=False)
        self._gauge()
        return emits

    # -- audio -----------------------------------------------------------------------------

    def _chunk(self, incoming: Incoming, now: float) -> list[Emit]:
        chunk = incoming.event
        assert isinstance(chunk, AudioChunkV1)
        call = self.calls.get(chunk.call_id)
        if call is None:
            if chunk.call_id in self.ended:
                CHUNKS.labels("rejected").inc()
                raise CallAlreadyEnded("audio chunk for a call that has already ended")
            self._hold(incoming, now)
            return []
        call.last_seen = now
        channel = call.channels.get(chunk.channel)
        try:
            if not call.channels:
                raise NoAudioFormat("the call-started event declared no audio format")
            if channel is None:
                raise UnknownChannel(
                    f"channel {chunk.channel} is not one of the call's channels "
                    f"{sorted(call.channels)}"
                )
            self._validate(channel, chunk)
        except (BadAudioChunk, AudioFormatError):
            CHUNKS.labels("rejected").inc()
            raise
        outcome = sequence_outcome(channel, chunk.sequence)
        if outcome == SequenceOutcome.DUPLICATE:
            CHUNKS.labels("duplicate").inc()
            return []
        if outcome == SequenceOutcome.LATE:
            CHUNKS.labels("rejected").inc()
            raise LateChunk(
                f"chunk {chunk.sequence} came after its gap was closed "
                f"(channel now at {channel.next_seq})"
            )
        CHUNKS.labels("accepted").inc()
        if outcome == SequenceOutcome.WAIT:
            channel.waiting[chunk.sequence] = incoming
            return self._drain(call, channel, now)
        # A channel entered mid-stream (a restart replaying from held offsets) waits for the
        # chunks before like any gap, then moves past them with its position estimated.
        emits: list[Emit] = []
        if channel.waiting:
            SEQUENCE_ANOMALIES.labels("reordered").inc()
            channel.flags.add("audio_reordered")
        emits += self._feed(call, channel, incoming, now, 0)
        channel.next_seq = chunk.sequence + 1
        emits += self._drain(call, channel, now)
        if call.ending is not None and call.audio_complete():
            emits += self._close(chunk.call_id, now, None)
        return emits

    def _validate(self, channel: ChannelState, chunk: AudioChunkV1) -> None:
        if looks_like_text(chunk.audio):
            raise NotAudio("chunk bytes are printable text, not audio samples")
        if channel.encoding == "pcm_s16le" and len(chunk.audio) % 2:
            raise AudioFormatError(f"pcm_s16le chunk has an odd byte count ({len(chunk.audio)})")
        seconds = channel.chunk_samples(chunk) / channel.rate
        if seconds > self.settings.max_chunk_s:
            raise OversizeChunk(
                f"chunk holds {seconds:.1f} s of audio; the limit is "
                f"{self.settings.max_chunk_s:g} s"
            )

    def _hold(self, incoming: Incoming, now: float) -> None:
        total = sum(len(v) for v in self.held.values())
        if total >= self.settings.pre_start_max_chunks:
            CHUNKS.labels("rejected").inc()
            self._dead.append(
                DeadLetterRequest(
                    incoming,
                    "CallNotStarted",
                    "no call-started event for this call and the hold for such chunks is full",
                )
            )
            return
        CHUNKS.labels("held").inc()
        self.held.setdefault(incoming.event.call_id, []).append(_Held(incoming, now))  # type: ignore[attr-defined]
        self._gauge()

    def _drain(self, call: CallState, channel: ChannelState, now: float) -> list[Emit]:
        emits: list[Emit] = []
        for incoming, missing in next_in_order(channel, self.settings.reorder_window):
            emits += self._feed(call, channel, incoming, now, missing)
        return emits

    def _feed(
        self, call: CallState, channel: ChannelState, incoming: Incoming, now: float, missing: int
    ) -> list[Emit]:
        return self._publish(call, channel.feed(incoming, now, missing))

    # -- recognition -----------------------------------------------------------------------

    def _publish(self, call: CallState, utterances: list[Utterance]) -> list[Emit]:
        emits: list[Emit] = []
        for u in utterances:
            if u.cut.reason == "recording":
                found = self.recognition.recording(call, u)
            else:
                one = self.recognition.utterance(call, u)
                found = [] if one is None else [one]
                if one is not None:
                    UTTERANCE_LATENCY.observe(max(0.0, self.clock() - u.speech_end_arrived))
            for segment in found:
                event_id = segment_event_id(
                    call.started.call_id, segment.segment_id, self.engine.ref
                )
                emits.append(Emit(self.settings.output_topic, segment, event_id=event_id))
        return emits

    def _gauge(self) -> None:
        OPEN_CALLS.set(len(self.calls))
        HELD_CHUNKS.set(sum(len(v) for v in self.held.values()))
