"""`loopwise-replay` on a real broker: a transcript file through the command, a recording
through the library, each event checked against the contract and the input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from loopwise.audio import MULAW_TO_PCM, encode_g711, read_recording
from loopwise.events import (
    AudioChunkV1,
    CallEndedV1,
    CallEvent,
    CallStartedV1,
    ExternalTranscriptSegmentV1,
    TenantEvent,
    decode,
)
from loopwise.replay import (
    AUDIO,
    CALLS,
    TRANSCRIPTS,
    CallOptions,
    Outgoing,
    ReplayInputError,
    read_transcript,
    recording_events,
    send,
    transcript_events,
)
from loopwise.settings import KafkaSettings
from tests.support.kafka_io import Record, read_all, read_topic

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[1]
STEREO_CLIP = (
    ROOT.parent / "shared" / "data" / "asr" / "clips" / "fasterwhisper_stereo_diarization.wav"
)

LINES = [
    {"call_id": "call-a", "speaker": "agent", "start": 0.0, "end": 2.0, "text": "Hello, Acme."},
    {"call_id": "call-b", "party": "customer", "start": 0.5, "end": 1.5, "text": "Hi there"},
    {"call_id": "call-a", "speaker": "customer", "start": 2.5, "end": 4.0, "text": "My card"},
    {"call_id": "call-a", "speaker": "agent", "start": 1.0, "end": 3.0, "text": "Overlap"},
    {
        "call_id": "call-b",
        "speaker": "agent",
        "start": 2.0,
        "end": 2.5,
        "text": "Bye",
        "tenant": "globex",
        "segment_id": "b-2",
        "confidence": 0.8,
        "extra_platform_field": 1,
    },
]


@pytest.fixture
def replay_topics(new_topic: Callable[..., str]) -> dict[str, str]:
    return {CALLS: new_topic("calls"), AUDIO: new_topic("audio"), TRANSCRIPTS: new_topic("ext")}


def _events(records: list[Record]) -> list[tuple[Record, TenantEvent]]:
    out = []
    for r in records:
        envelope, event = decode(r.value, list(r.headers.items()))  # valid contract events
        assert r.key == event.kafka_key().encode()
        assert envelope.source == "loopwise-replay"
        out.append((r, event))
    return out


def test_transcript_file_through_the_command(
    kafka_bootstrap: str, replay_topics: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in LINES) + "\n\n", encoding="utf-8")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    command = [
        sys.executable,
        "-m",
        "loopwise.replay",
        "transcript",
        str(path),
        "--tenant",
        "acme",
        "--speed",
        "0",
        "--calls",
        "2",
        "--run-id",
        "r1",
        "--json",
        "--topic-calls",
        replay_topics[CALLS],
        "--topic-transcripts-external",
        replay_topics[TRANSCRIPTS],
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["calls"] == 4 and summary["segments"] == 10 and summary["events"] == 18
    assert sorted(summary["call_ids"]) == [
        "call-a.r1.0",
        "call-a.r1.1",
        "call-b.r1.0",
        "call-b.r1.1",
    ]

    calls = _events(read_topic(kafka_bootstrap, replay_topics[CALLS], expect=8))
    segments = _events(read_topic(kafka_bootstrap, replay_topics[TRANSCRIPTS], expect=10))
    assert len(calls) == 8 and len(segments) == 10
    # A call's events share a partition on both topics (same key, murmur2, same count).
    partition = {cast(CallEvent, e).call_id: r.partition for r, e in calls}
    segs: list[ExternalTranscriptSegmentV1] = []
    for record, event in segments:
        assert isinstance(event, ExternalTranscriptSegmentV1)
        assert record.partition == partition[event.call_id]
        segs.append(event)
    a0 = [s for s in segs if s.call_id == "call-a.r1.0"]
    assert [(s.speaker, s.start_s, s.end_s, s.text) for s in a0] == [
        ("agent", 0.0, 2.0, "Hello, Acme."),
        ("agent", 1.0, 3.0, "Overlap"),  # sent when it ends
        ("customer", 2.5, 4.0, "My card"),
    ]
    assert all(s.tenant_id == "acme" and s.engine == "loopwise-replay" for s in a0)
    b_last = next(s for s in segs if s.segment_id == "b-2" and "r1.1" in s.call_id)
    assert b_last.confidence == 0.8
    # A tenant named on any line of a call is the whole call's; --tenant is the default.
    assert {e.tenant_id for _, e in calls + segments if "call-b" in cast(CallEvent, e).call_id} == {
        "globex"
    }
    for call_id in partition:
        kinds = [type(e) for _, e in calls if cast(CallEvent, e).call_id == call_id]
        assert kinds == [CallStartedV1, CallEndedV1]
    ended = {e.call_id: e for _, e in calls if isinstance(e, CallEndedV1)}
    assert ended["call-a.r1.0"].duration_s == 4.0


def test_bad_transcript_lines_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps(LINES[0])
    path.write_text(good + "\n" + json.dumps({**LINES[0], "start": 5.0, "end": 1.0}) + "\n")
    with pytest.raises(ReplayInputError, match=r"bad.jsonl:2: end: .*end is before start"):
        read_transcript(path)
    path.write_text(good + "\n{nope\n")
    with pytest.raises(ReplayInputError, match=r"bad.jsonl:2: not JSON"):
        read_transcript(path)
    lines = [json.dumps({**LINES[0], "tenant": t}) for t in ("acme", "other")]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReplayInputError, match=r"bad.jsonl:2: tenant differs from line 1"):
        read_transcript(path)
    path.write_text(json.dumps({**LINES[0], "speaker": "robot"}) + "\n")
    with pytest.raises(ReplayInputError, match=r"bad.jsonl:1: speaker"):
        read_transcript(path)
    done = subprocess.run(
        [sys.executable, "-m", "loopwise.replay", "transcript", str(path)],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "bad.jsonl:1: speaker" in done.stderr


@pytest.fixture(params=["data-clip", "synthesised-stereo-wav", "synthesised-mono-flac"])
def recording(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The shared stereo clip (skipped where the data is absent), or a synthesised file."""
    if request.param == "data-clip":
        if not STEREO_CLIP.is_file():
            pytest.skip(f"development data not found at {STEREO_CLIP}")
        return STEREO_CLIP
    import soundfile  # type: ignore[import-untyped]

    rate, seconds = 22_050, 2.3  # a rate the replay must resample, a partial last chunk
    t = np.arange(int(rate * seconds)) / rate
    tones = [0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]
    if request.param == "synthesised-mono-flac":
        path = tmp_path / "one-tone.flac"
        soundfile.write(str(path), tones[0], rate)
    else:
        path = tmp_path / "two-tones.wav"
        soundfile.write(str(path), np.stack(tones, axis=1), rate)
    return path


def test_recording_as_mulaw_chunks_matches_the_file(
    kafka_bootstrap: str, replay_topics: dict[str, str], recording: Path
) -> None:
    path = recording
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the timeline's waits, on a clock the test moves
        slept.append(seconds)
        clock[0] += seconds

    events = list(
        recording_events(
            path,
            call_id="rec-1",
            options=CallOptions(tenant="acme"),
            encoding="mulaw",
            sample_rate=8000,
            chunk_ms=250,
            start=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )
    summary = send(
        events,
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        topics=replay_topics,
        speed=2.0,
        clock=lambda: clock[0],
        sleep=sleep,
    )
    channels = read_recording(path, 8000)
    n_chunks = -(-len(channels[0]) // 2000)
    n_ch = len(channels)
    assert summary.audio_chunks == n_ch * n_chunks and summary.calls == 1
    assert summary.audio_seconds == pytest.approx(len(channels[0]) / 8000, abs=1e-3)
    assert len(slept) == n_chunks  # one wait per chunk time (both channels' chunks go together)
    # Paced at twice real time: the last chunk is due at half the recording's length.
    assert clock[0] == pytest.approx(len(channels[0]) / 8000 / 2, abs=1e-6)

    audio = _events(read_topic(kafka_bootstrap, replay_topics[AUDIO], expect=n_ch * n_chunks))
    calls = _events(read_topic(kafka_bootstrap, replay_topics[CALLS], expect=2))
    started, ended = (e for _, e in calls)
    assert isinstance(started, CallStartedV1) and isinstance(ended, CallEndedV1)
    assert started.audio is not None and started.audio.encoding == "mulaw"
    roles = ["mixed"] if n_ch == 1 else ["agent", "customer"]
    assert [c.role for c in started.channels] == roles
    assert ended.last_audio_sequence == {str(ch): n_chunks - 1 for ch in range(n_ch)}
    for ch in range(n_ch):
        chunks = [e for _, e in audio if isinstance(e, AudioChunkV1) and e.channel == ch]
        assert [c.sequence for c in chunks] == list(range(n_chunks))
        assert [c.start_ms for c in chunks] == [i * 250 for i in range(n_chunks)]
        sent = b"".join(c.audio for c in chunks)
        assert sent == encode_g711(channels[ch], "mulaw")  # exactly the file, resampled
        decoded = MULAW_TO_PCM[np.frombuffer(sent, dtype=np.uint8)].astype(np.float64)
        assert np.corrcoef(decoded, channels[ch].astype(np.float64))[0, 1] > 0.99
    assert len({r.partition for r, _ in audio}) == 1


def test_rate_paces_segments_and_repeats_get_new_ids(
    kafka_bootstrap: str, replay_topics: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in LINES), encoding="utf-8")
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    outgoing: list[Outgoing] = list(
        transcript_events(read_transcript(path), repeat=3, run_id="x", stagger_s=1.0)
    )
    summary = send(
        outgoing,
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        topics=replay_topics,
        rate=50.0,
        clock=lambda: clock[0],
        sleep=sleep,
    )
    assert summary.segments == 15 and summary.calls == 6
    assert clock[0] == pytest.approx(14 / 50)  # the 15th segment is due at 14/50 s
    got = read_all(kafka_bootstrap, replay_topics[TRANSCRIPTS])
    ids: dict[str, Any] = {}
    for _, event in _events(got):
        ids.setdefault(cast(CallEvent, event).call_id, []).append(event)
    assert len(ids) == 6 and all(len(v) in (2, 3) for v in ids.values())


def test_unreachable_cluster_and_missing_topic_fail_with_a_clear_error(
    kafka_bootstrap: str, replay_topics: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_text(json.dumps(LINES[0]) + "\n", encoding="utf-8")
    calls = read_transcript(path)
    with pytest.raises(RuntimeError, match="cannot reach the Kafka cluster"):
        send(
            transcript_events(calls),
            kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
            speed=0,
            connect_timeout_s=2,
        )
    missing = {**replay_topics, TRANSCRIPTS: "loopwise.test.no-such-topic"}
    with pytest.raises(RuntimeError, match="no-such-topic does not exist"):
        send(
            transcript_events(calls),
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
            topics=missing,
            speed=0,
        )
