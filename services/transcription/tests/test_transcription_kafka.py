"""The transcription service on a real broker: a streamed two-party call, external
transcripts redacted, and every kind of bad input dead-lettered without PII."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from loopwise.events import (
    AudioChunkV1,
    ExternalTranscriptSegmentV1,
    ExternalWord,
    encode,
)
from loopwise_transcription.config import AsrSettings, TranscriptionSettings
from loopwise_transcription.engine import Engine
from loopwise_transcription.handler import TranscriptionHandler
from loopwise_transcription.vad import UtteranceCutter
from loopwise_transcription.worker import TranscriptionWorker
from services.transcription.tests.transcription_helpers import (
    PROMPTS,
    call_ended,
    call_started,
    mulaw_chunks,
    two_party_call,
    word_errors,
)
from tests.support.card_numbers import holds_test_card
from tests.support.kafka_io import produce_events, produce_raw, read_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.usefixtures("asr_data")]


@pytest.fixture
def topics(new_topic: Callable[..., str], group_id: str) -> dict[str, str]:
    return {
        "calls": new_topic("calls"),
        "audio": new_topic("audio"),
        "external": new_topic("external"),
        "out": new_topic("transcripts"),
        "dlq": new_topic("dlq"),
        "group": group_id,
    }


def service_settings(kafka_bootstrap: str, topics: dict[str, str]) -> TranscriptionSettings:
    return TranscriptionSettings(
        kafka={"bootstrap_servers": kafka_bootstrap},  # type: ignore[arg-type]
        group_id=topics["group"],
        input_topics=[topics["calls"], topics["audio"], topics["external"]],
        output_topic=topics["out"],
        dead_letter_topic=topics["dlq"],
        observability={"host": "127.0.0.1", "port": 0},  # type: ignore[arg-type]
        max_message_bytes=200_000,
        pre_start_hold_s=1.0,
        max_chunk_s=2.0,
        poll_timeout_s=0.2,
    )


def start_worker(
    settings: TranscriptionSettings, engine: Engine, asr_settings: AsrSettings
) -> tuple[TranscriptionWorker, threading.Thread]:
    handler = TranscriptionHandler(settings, asr_settings, engine)
    worker = TranscriptionWorker(
        handler=handler, settings=settings, output_topics=[settings.output_topic]
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def stop_worker(worker: TranscriptionWorker, thread: threading.Thread) -> None:
    worker.stop()
    thread.join(60)
    assert not thread.is_alive(), "worker did not stop"


@pytest.fixture
def service(
    kafka_bootstrap: str, topics: dict[str, str], engine: Engine, asr_settings: AsrSettings
) -> Iterator[TranscriptionWorker]:
    """The transcription worker in a thread of this process, sharing the session's model."""
    worker, thread = start_worker(service_settings(kafka_bootstrap, topics), engine, asr_settings)
    yield worker
    stop_worker(worker, thread)


def test_a_restart_mid_utterance_replays_the_held_audio_and_loses_nothing(
    kafka_bootstrap: str, topics: dict[str, str], engine: Engine, asr_settings: AsrSettings
) -> None:
    settings = service_settings(kafka_bootstrap, topics)
    channels = two_party_call([(0.4, 1, "phone")], seconds=5.0)
    chunks = mulaw_chunks("call-restart", channels)
    customer = [c for c in chunks if c.channel == 1]
    half = len(chunks) // 2  # the customer is mid-sentence here
    first, thread = start_worker(settings, engine, asr_settings)
    produce_events(kafka_bootstrap, topics["calls"], [call_started("call-restart")])
    produce_events(kafka_bootstrap, topics["audio"], chunks[:half])

    def consumed_half() -> bool:
        call = first.transcriber.calls.get("call-restart")
        return (
            call is not None and call.channels[1].next_seq == customer[half // 2 - 1].sequence + 1
        )

    assert wait_for(consumed_half, 60)
    cutter = first.transcriber.calls["call-restart"].channels[1].cutter
    assert isinstance(cutter, UtteranceCutter) and cutter.triggered  # mid-utterance
    stop_worker(first, thread)  # commits, but no further than the open utterance's audio

    second, thread = start_worker(settings, engine, asr_settings)
    try:
        last = {"0": customer[-1].sequence, "1": customer[-1].sequence}
        produce_events(kafka_bootstrap, topics["audio"], chunks[half:])
        produce_events(kafka_bootstrap, topics["calls"], [call_ended("call-restart", last)])
        out = values(read_topic(kafka_bootstrap, topics["out"], expect=1, timeout_s=60, settle_s=2))
    finally:
        stop_worker(second, thread)
    assert len(out) == 1, [s["text"] for s in out]
    assert out[0]["speaker"] == "customer"
    assert word_errors(PROMPTS["phone"][1], out[0]["text"]) < 0.3, out[0]["text"]
    assert abs(out[0]["start_s"] - 0.4) < 0.6
    dead = read_topic(kafka_bootstrap, topics["dlq"], expect=1, timeout_s=2)
    assert dead == [], "nothing may be dead-lettered across a restart"


SERVICE_METRICS = [
    ("loopwise_transcription_audio_seconds_total", {"mode": "realtime"}),
    ("loopwise_transcription_asr_seconds_total", {"mode": "realtime"}),
    ("loopwise_transcription_real_time_factor_count", {"mode": "realtime"}),
    ("loopwise_transcription_utterance_latency_seconds_count", {}),
    ("loopwise_transcription_segments_total", {"source": "realtime", "language": "en"}),
]


def sample(name: str, **labels: str) -> float:
    """A metric of the in-process service (it runs in a thread of this process)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def values(records: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]


def test_two_party_mulaw_call_streamed_in_chunks_comes_out_in_order_with_roles(
    kafka_bootstrap: str, topics: dict[str, str], service: TranscriptionWorker
) -> None:
    # agent: "please hold ...", customer: "please enter your phone number ...",
    # agent: "please enter your password ..."; each starts after the other has finished.
    script = [(0.4, 0, "hold"), (3.2, 1, "phone"), (7.1, 0, "password")]
    channels = two_party_call(script, seconds=11.0)
    before = {name: sample(name, **labels) for name, labels in SERVICE_METRICS}
    produce_events(kafka_bootstrap, topics["calls"], [call_started("call-duo")])
    produce_events(
        kafka_bootstrap,
        topics["audio"],
        mulaw_chunks("call-duo", channels, chunk_ms=100, start_ms=True),
    )
    last = {"0": len(channels[0]) // 800 - 1, "1": len(channels[1]) // 800 - 1}
    produce_events(kafka_bootstrap, topics["calls"], [call_ended("call-duo", last)])

    out = values(read_topic(kafka_bootstrap, topics["out"], expect=3, timeout_s=120, settle_s=1))
    assert len(out) == 3, [s["text"] for s in out]
    by_time = sorted(out, key=lambda s: s["start_s"])
    assert [s["speaker"] for s in by_time] == ["agent", "customer", "agent"]
    assert [s["channel"] for s in by_time] == [0, 1, 0]
    for segment, (start, _, prompt) in zip(by_time, script, strict=True):
        assert word_errors(PROMPTS[prompt][1], segment["text"]) < 0.3, segment["text"]
        assert abs(segment["start_s"] - start) < 0.6
        assert segment["end_s"] > segment["start_s"]
        assert 0.0 < segment["confidence"] <= 1.0
        assert segment["language"] == "en" and segment["source"] == "realtime"
        assert segment["producer"]["name"].startswith("whisper-tiny")
        assert segment["words"] and all(0 <= w["probability"] <= 1 for w in segment["words"])
        assert segment["words"][0]["start_s"] >= segment["start_s"] - 0.01
    # Published in the order the utterances ended: the agent's channel keeps its order.
    agent = [s["start_s"] for s in out if s["speaker"] == "agent"]
    assert agent == sorted(agent)
    grew = {name: sample(name, **labels) - before[name] for name, labels in SERVICE_METRICS}
    assert grew["loopwise_transcription_audio_seconds_total"] > 5.0  # speech cut by the VAD
    assert grew["loopwise_transcription_asr_seconds_total"] > 0
    assert grew["loopwise_transcription_real_time_factor_count"] == 3
    assert grew["loopwise_transcription_utterance_latency_seconds_count"] == 3
    assert grew["loopwise_transcription_segments_total"] == 3


def test_post_call_mode_transcribes_each_party_once_the_call_ends(
    kafka_bootstrap: str, topics: dict[str, str], engine: Engine, asr_settings: AsrSettings
) -> None:
    settings = service_settings(kafka_bootstrap, topics).model_copy(update={"mode": "post_call"})
    script = [(0.4, 0, "hold"), (3.2, 1, "phone")]
    channels = two_party_call(script, seconds=7.0)
    chunks = mulaw_chunks("call-post", channels, start_ms=True)
    worker, thread = start_worker(settings, engine, asr_settings)
    try:
        produce_events(kafka_bootstrap, topics["calls"], [call_started("call-post")])
        produce_events(kafka_bootstrap, topics["audio"], chunks)

        def all_audio_in() -> bool:
            call = worker.transcriber.calls.get("call-post")
            return call is not None and all(
                ch.next_seq == chunks[-1].sequence + 1 for ch in call.channels.values()
            )

        assert wait_for(all_audio_in, 60)
        # All audio is in, and still nothing is published: post-call waits for the end.
        assert read_topic(kafka_bootstrap, topics["out"], expect=1, timeout_s=1) == []
        last = {"0": chunks[-1].sequence, "1": chunks[-1].sequence}
        produce_events(kafka_bootstrap, topics["calls"], [call_ended("call-post", last)])
        out = values(read_topic(kafka_bootstrap, topics["out"], expect=2, timeout_s=60))
    finally:
        stop_worker(worker, thread)
    by_time = sorted(out, key=lambda s: s["start_s"])
    assert [(s["speaker"], s["source"]) for s in by_time] == [
        ("agent", "post_call"),
        ("customer", "post_call"),
    ]
    for segment, (start, _, prompt) in zip(by_time, script, strict=True):
        assert word_errors(PROMPTS[prompt][1], segment["text"]) < 0.3, segment["text"]
        assert abs(segment["start_s"] - start) < 0.8


def external(
    segment_id: str, text: str, words: list[str] | None = None
) -> ExternalTranscriptSegmentV1:
    return ExternalTranscriptSegmentV1(
        tenant_id="acme",
        call_id="call-ext",
        occurred_at=datetime.now(UTC),
        segment_id=segment_id,
        speaker="customer",
        start_s=1.0,
        end_s=4.0,
        text=text,
        confidence=0.9,
        language="en-US",
        words=[
            ExternalWord(word=w, start_s=1.0 + i * 0.3, end_s=1.2 + i * 0.3, probability=0.9)
            for i, w in enumerate(words or [])
        ],
        engine="platform-asr",
    )


def test_external_transcripts_are_redacted_through_kafka(
    kafka_bootstrap: str, topics: dict[str, str], service: TranscriptionWorker
) -> None:
    spoken = "four one one one one one one one one one one one one one one one"
    events = [
        external("s1", "my card number is 4111 1111 1111 1111 thanks"),
        external("s2", f"it is {spoken}", ["it", "is", *spoken.split()]),
        external("s3", "the meeting is at 3 pm and costs 25 dollars"),
    ]
    produce_events(kafka_bootstrap, topics["external"], events)
    out = {
        s["segment_id"]: s
        for s in values(read_topic(kafka_bootstrap, topics["out"], expect=3, timeout_s=60))
    }
    assert out["ext-s1"]["text"] == "my card number is [CARD_NUMBER] thanks"
    assert [r["type"] for r in out["ext-s1"]["redactions"]] == ["CARD_NUMBER"]
    assert out["ext-s2"]["text"] == "it is [CARD_NUMBER]"
    words = [w["word"] for w in out["ext-s2"]["words"]]
    assert words == ["it", "is", "[CARD_NUMBER]"]
    assert out["ext-s2"]["words"][2]["end_s"] == pytest.approx(1.2 + 17 * 0.3)
    assert out["ext-s3"]["text"] == "the meeting is at 3 pm and costs 25 dollars"
    assert out["ext-s3"]["redactions"] == []
    for segment in out.values():
        assert segment["source"] == "external" and segment["speaker"] == "customer"
        assert segment["language"] == "en"
        assert not holds_test_card(json.dumps(segment)) and "one one one" not in json.dumps(segment)


def raw_call_started(call_id: str, **audio: Any) -> tuple[bytes, bytes, Any]:
    """A call-started message whose audio block is edited after encoding (bypassing the model)."""
    key, value, headers, _ = encode(call_started(call_id), source="test")
    body = json.loads(value)
    body["audio"].update(audio)
    return key, json.dumps(body).encode(), headers


def test_every_kind_of_bad_input_ends_in_a_dead_letter_without_payload(
    kafka_bootstrap: str, topics: dict[str, str], service: TranscriptionWorker
) -> None:
    produce_raw(
        kafka_bootstrap,
        topics["calls"],
        [
            raw_call_started("call-codec", encoding="g729"),
            raw_call_started("call-rate", sample_rate_hz=44100),
        ],
    )
    produce_events(
        kafka_bootstrap,
        topics["calls"],
        [call_started("call-bad", channels=1, encoding="pcm_s16le", rate=16000)],
    )

    def chunk(call_id: str, audio: bytes, channel: int = 0, sequence: int = 0) -> AudioChunkV1:
        return AudioChunkV1(
            tenant_id="acme",
            call_id=call_id,
            occurred_at=datetime.now(UTC),
            channel=channel,
            sequence=sequence,
            audio=audio,
        )

    secret_text = b"my card is 4111 1111 1111 1111, cvv 123 " * 10
    silence = b"\x00\x00" * 1600
    produce_events(
        kafka_bootstrap,
        topics["audio"],
        [
            chunk("call-ghost", silence),  # no call-started ever: held, then dead-lettered
            chunk("call-bad", silence, channel=1),  # a channel the call does not have
            chunk("call-bad", secret_text),  # text, not audio
            chunk("call-bad", b"\x01\x00" * 16000 * 3, sequence=1),  # 3 s: over the 2 s limit
            chunk("call-bad", b"\x00" * 321, sequence=2),  # torn 16-bit sample
        ],
    )
    # Bigger than the worker takes at all (200 kB).
    _, huge, headers, _ = encode(chunk("call-bad", b"\x00\x00" * 100_000, sequence=3), source="t")
    produce_raw(kafka_bootstrap, topics["audio"], [(b"call-bad", huge, headers)])
    # Not even JSON.
    produce_raw(kafka_bootstrap, topics["audio"], [(b"call-bad", b"\xff\xfe garbage", headers)])

    expected = {
        "SchemaViolation": 2,
        "CallNotStarted": 1,
        "UnknownChannel": 1,
        "NotAudio": 1,
        "OversizeChunk": 1,
        "AudioFormatError": 1,
        "OversizeMessage": 1,
        "InvalidUtf8": 1,
    }
    dead = read_topic(
        kafka_bootstrap, topics["dlq"], expect=sum(expected.values()), timeout_s=60, settle_s=1.0
    )
    classes: dict[str, int] = {}
    for record in dead:
        name = record.headers["dlq_error_class"].decode()
        classes[name] = classes.get(name, 0) + 1
        body = json.loads(record.value or b"")
        assert body["payload_b64"] is None, "dead letters must not carry audio or text"
        assert body["reason"] and not holds_test_card(body["reason"])
        assert not holds_test_card(record.value or b"")
    assert classes == expected
    ghost = next(r for r in dead if r.headers["dlq_error_class"] == b"CallNotStarted")
    assert ghost.key == b"call-ghost"
    assert ghost.headers["dlq_original_topic"].decode() == topics["audio"]
    # The service is still serving.
    assert service.healthy()
    produce_events(kafka_bootstrap, topics["external"], [external("alive", "still here")])
    out = values(read_topic(kafka_bootstrap, topics["out"], expect=1, timeout_s=30))
    assert [s["text"] for s in out] == ["still here"]


def test_the_run_command_serves_and_drains_on_sigterm(
    kafka_bootstrap: str, topics: dict[str, str]
) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LOOPWISE_TRANSCRIPTION_GROUP_ID": topics["group"],
        "LOOPWISE_TRANSCRIPTION_INPUT_TOPICS": json.dumps([topics["calls"], topics["external"]]),
        "LOOPWISE_TRANSCRIPTION_OUTPUT_TOPIC": topics["out"],
        "LOOPWISE_TRANSCRIPTION_DEAD_LETTER_TOPIC": topics["dlq"],
        "LOOPWISE_TRANSCRIPTION_OBSERVABILITY__PORT": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "loopwise_transcription", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        produce_events(kafka_bootstrap, topics["external"], [external("cli", "call 415 555 0100")])
        out = values(read_topic(kafka_bootstrap, topics["out"], expect=1, timeout_s=90))
        assert [s["text"] for s in out] == ["call [PHONE]"]
    finally:
        process.send_signal(signal.SIGTERM)
        logs, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    lines = [json.loads(line) for line in logs.decode().splitlines() if line.startswith("{")]
    assert {"worker_started", "worker_stopped"} <= {line.get("event") for line in lines}
    # Not just "415": a timestamp's milliseconds can read 415.
    for leak in (b"555 0100", b"5550100", b"415 555"):
        assert leak not in logs, "transcript text must never reach a log line"


def test_a_recording_replayed_with_loopwise_replay_is_transcribed_per_party(
    kafka_bootstrap: str, topics: dict[str, str], service: TranscriptionWorker, asr_data: Any
) -> None:
    from loopwise.replay import AUDIO, CALLS, CallOptions, recording_events, send
    from loopwise.settings import KafkaSettings

    clip = asr_data / "fasterwhisper_stereo_diarization.wav"
    manifest = asr_data.parent / "manifest.jsonl"
    entry = next(
        json.loads(line)
        for line in manifest.read_text(encoding="utf-8").splitlines()
        if clip.name in line
    )
    summary = send(
        recording_events(
            clip,
            call_id="call-replayed",
            options=CallOptions(tenant="acme", language="en"),
            encoding="pcm_s16le",
            sample_rate=16000,
            tail_silence_s=2.0,
        ),
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        topics={CALLS: topics["calls"], AUDIO: topics["audio"]},
        speed=0,
    )
    assert summary.calls == 1 and summary.audio_chunks > 0
    out = values(read_topic(kafka_bootstrap, topics["out"], expect=2, timeout_s=120, settle_s=1))
    text = {
        role: " ".join(s["text"] for s in out if s["speaker"] == role)
        for role in ("agent", "customer")
    }
    assert word_errors(entry["channel_texts"]["left"], text["agent"]) < 0.3, text
    assert word_errors(entry["channel_texts"]["right"], text["customer"]) < 0.3, text
    assert all(s["call_id"] == "call-replayed" and s["source"] == "realtime" for s in out)
