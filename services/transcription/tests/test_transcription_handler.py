"""The streaming handler with the real model: sequence repair, held chunks, bad chunks, offsets."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from loopwise.events import AudioChunkV1, Envelope, TenantEvent, TranscriptSegmentV1
from loopwise.kafka.intake import Incoming
from loopwise_transcription.config import AsrSettings, TranscriptionSettings
from loopwise_transcription.engine import Engine
from loopwise_transcription.handler import (
    CallAlreadyEnded,
    LateChunk,
    NotAudio,
    OversizeChunk,
    TranscriptionHandler,
    UnknownChannel,
)
from services.transcription.tests.transcription_helpers import (
    PROMPTS,
    call_ended,
    call_started,
    mulaw_chunks,
    normalise,
    pcm8k,
    word_errors,
)

pytestmark = pytest.mark.usefixtures("asr_data")


class Clock:
    """A settable monotonic clock for hold timeouts."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Feed:
    """Turns events into Incoming with increasing offsets, as one partition would."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self, event: TenantEvent, topic: str = "audio") -> Incoming:
        self.offset += 1
        envelope = Envelope(
            type=event.event_type,
            source="test",
            tenant_id=event.tenant_id,
            call_id=getattr(event, "call_id", None),
        )
        return Incoming(envelope, event, topic, 0, self.offset)


def make_handler(engine: Engine, settings: AsrSettings, **overrides: Any) -> TranscriptionHandler:
    service = TranscriptionSettings(
        kafka={"bootstrap_servers": "unused:9092"},  # type: ignore[arg-type]
        output_topic="segments",
        **overrides,
    )
    return TranscriptionHandler(service, settings, engine, clock=Clock())


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def mono_call(call_id: str, prompt: str = "hold") -> list[AudioChunkV1]:
    clip = pcm8k(prompt)
    audio = np.concatenate([np.zeros(2400, np.int16), clip, np.zeros(8000, np.int16)])
    return [c for c in mulaw_chunks(call_id, [audio, np.zeros(0, np.int16)]) if c.channel == 0]


def segments(emits: list[Any]) -> list[TranscriptSegmentV1]:
    return [e.event for e in emits if isinstance(e.event, TranscriptSegmentV1)]


def test_reordered_and_missing_chunks_are_repaired_flagged_and_counted(
    engine: Engine, asr_settings: AsrSettings
) -> None:
    handler = make_handler(engine, asr_settings, reorder_window=2)
    feed = Feed()
    chunks = mono_call("call-seq")
    handler(feed(call_started("call-seq", channels=1, roles=("customer",)), "calls"))
    gaps, reorders = (
        counter("loopwise_transcription_sequence_anomalies_total", kind="gap"),
        counter("loopwise_transcription_sequence_anomalies_total", kind="reordered"),
    )
    order = list(range(len(chunks)))
    order[3], order[4] = order[4], order[3]  # reordered
    order.remove(8)  # lost in the middle of the speech
    out: list[Any] = []
    for i in order:
        out += handler(feed(chunks[i]))
    out += handler(feed(chunks[5]))  # a duplicate: ignored
    out += handler(feed(call_ended("call-seq", {"0": len(chunks) - 1}), "calls"))
    published = segments(out)
    assert published, "no segment came out of the call"
    flags = {f for s in published for f in s.flags}
    assert {"audio_reordered", "audio_gap"} <= flags
    assert counter("loopwise_transcription_sequence_anomalies_total", kind="gap") == gaps + 1
    assert (
        counter("loopwise_transcription_sequence_anomalies_total", kind="reordered") == reorders + 1
    )
    assert all(s.speaker == "customer" and s.source == "realtime" for s in published)
    with pytest.raises(CallAlreadyEnded):
        handler(feed(chunks[0]))


def test_chunks_before_the_start_are_held_then_used(
    engine: Engine, asr_settings: AsrSettings
) -> None:
    handler = make_handler(engine, asr_settings)
    feed = Feed()
    chunks = mono_call("call-early")
    out: list[Any] = []
    for chunk in chunks[:5]:
        out += handler(feed(chunk))
    assert out == [] and len(handler.held["call-early"]) == 5
    floors = handler.offset_floors()
    assert floors[("audio", 0)] == 1, "held chunks must keep their offsets uncommitted"
    out += handler(feed(call_started("call-early", channels=1), "calls"))
    for chunk in chunks[5:-1]:
        out += handler(feed(chunk))
    # The end overtakes the last chunk (another topic): the call waits for it.
    out += handler(feed(call_ended("call-early", {"0": len(chunks) - 1}), "calls"))
    assert "call-early" in handler.calls
    out += handler(feed(chunks[-1]))
    assert "call-early" not in handler.calls
    (segment,) = segments(out)
    assert word_errors(PROMPTS["hold"][1], segment.text) < 0.3
    assert segment.start_s == pytest.approx(0.3, abs=0.35)
    assert handler.take_dead_letters() == []
    assert handler.offset_floors() == {}, "a closed call holds no offsets"


def test_chunks_of_a_call_that_never_starts_are_dead_lettered_after_the_hold(
    engine: Engine, asr_settings: AsrSettings
) -> None:
    handler = make_handler(engine, asr_settings, pre_start_hold_s=5.0)
    feed = Feed()
    chunks = mono_call("call-ghost")[:3]
    for chunk in chunks:
        assert handler(feed(chunk)) == []
    clock = handler.clock
    assert isinstance(clock, Clock)
    clock.now += 4.0
    handler.tick()
    assert handler.take_dead_letters() == []
    clock.now += 2.0
    handler.tick()
    dead = handler.take_dead_letters()
    assert [d.incoming.event for d in dead] == chunks
    assert {d.error_class for d in dead} == {"CallNotStarted"}
    assert handler.offset_floors() == {}


def test_bad_chunks_are_refused_with_their_reason(
    engine: Engine, asr_settings: AsrSettings
) -> None:
    handler = make_handler(engine, asr_settings, max_chunk_s=2.0)
    feed = Feed()
    handler(feed(call_started("call-bad", channels=1, encoding="pcm_s16le", rate=16000), "calls"))
    base = AudioChunkV1(
        tenant_id="acme",
        call_id="call-bad",
        occurred_at=datetime.now(UTC),
        channel=0,
        sequence=0,
        audio=b"\x00\x00" * 160,
    )
    with pytest.raises(UnknownChannel):
        handler(feed(base.model_copy(update={"channel": 1})))
    with pytest.raises(NotAudio):
        handler(feed(base.model_copy(update={"audio": b'{"text": "card 4111 1111"}' * 20})))
    with pytest.raises(OversizeChunk):
        handler(feed(base.model_copy(update={"audio": b"\x01\x00" * 16000 * 3})))
    with pytest.raises(ValueError, match="odd byte count"):
        handler(feed(base.model_copy(update={"audio": b"\x00" * 321})))
    assert handler(feed(base)) == []
    # Chunk 1 is given up on once the reorder window overflows, then arrives: too late.
    for seq in range(2, 2 + handler.settings.reorder_window + 1):
        handler(feed(base.model_copy(update={"sequence": seq})))
    with pytest.raises(LateChunk):
        handler(feed(base.model_copy(update={"sequence": 1})))


def test_a_call_end_without_last_sequences_waits_out_the_grace_period(
    engine: Engine, asr_settings: AsrSettings
) -> None:
    handler = make_handler(engine, asr_settings, end_grace_s=3.0)
    feed = Feed()
    chunks = mono_call("call-grace", "password")
    handler(feed(call_started("call-grace", channels=1), "calls"))
    out = handler(feed(call_ended("call-grace"), "calls"))
    for chunk in chunks:  # all of it after the end event
        out += handler(feed(chunk))
    clock = handler.clock
    assert isinstance(clock, Clock)
    assert handler.tick() == [] and "call-grace" in handler.calls
    clock.now += 3.0
    late = handler.tick()
    assert "call-grace" not in handler.calls
    texts = [s.text for s in segments(out)] + [
        e.event.text for _, e in late if isinstance(e.event, TranscriptSegmentV1)
    ]
    assert word_errors(PROMPTS["password"][1], " ".join(texts)) < 0.3


def test_an_idle_call_is_closed_and_its_open_speech_published(
    engine: Engine, asr_settings: AsrSettings
) -> None:
    handler = make_handler(engine, asr_settings, idle_call_timeout_s=60.0)
    feed = Feed()
    chunks = mono_call("call-idle", "hold")
    handler(feed(call_started("call-idle", channels=1), "calls"))
    for chunk in chunks[:10]:  # stops mid-sentence, and nothing more ever comes
        assert segments(handler(feed(chunk))) == []
    clock = handler.clock
    assert isinstance(clock, Clock)
    clock.now += 61.0
    late = handler.tick()
    assert "call-idle" not in handler.calls and handler.offset_floors() == {}
    (segment,) = [e.event for _, e in late if isinstance(e.event, TranscriptSegmentV1)]
    assert "idle_timeout" in segment.flags
    assert normalise(segment.text).startswith("please hold")
    assert all(parent.envelope.id == segment.derived_from[0] for parent, _ in late)


def test_open_utterances_hold_offsets_and_a_revoked_partition_is_forgotten(
    engine: Engine, asr_settings: AsrSettings
) -> None:
    handler = make_handler(engine, asr_settings)
    feed = Feed()
    chunks = mono_call("call-floor")
    start = feed(call_started("call-floor", channels=1), "calls")
    handler(start)
    first_audio = None
    for chunk in chunks[:12]:  # into the middle of the speech
        incoming = feed(chunk)
        first_audio = first_audio or incoming.offset
        handler(incoming)
    floors = handler.offset_floors()
    assert floors[("calls", 0)] == start.offset
    assert floors[("audio", 0)] <= 4, "audio of the open utterance must stay uncommitted"
    handler.drop_partitions({("calls", 0)})
    assert handler.calls == {} and handler.offset_floors() == {}
    replayed = replace(start, offset=start.offset)
    handler(replayed)
    assert "call-floor" in handler.calls
