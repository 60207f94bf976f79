"""`loopwise-replay`: play the CX platform's side from your own data, into the Loopwise topics.

Two inputs:

* a recording (wav/flac/ogg; mono, or one channel per party), resampled and encoded
  to the audio the transcription service takes (``pcm_s16le``, ``mulaw`` or ``alaw``
  at 8 or 16 kHz), sent as CallStarted, AudioChunk per channel, CallEnded;
* a transcript file (JSON lines, one segment per line: ``call_id``, ``speaker`` or
  ``party``, ``start``, ``end``, ``text``, optional ``tenant``, ``segment_id``,
  ``channel``, ``confidence``, ``language``), sent per call as CallStarted, external
  transcript segments, CallEnded.

Events leave on the call's timeline (a segment when it ends, an audio chunk when it
has been spoken) at ``--speed`` times real time (0: as fast as possible), or at a
fixed ``--rate`` of segments (or audio chunks) per second for benchmarks. ``--calls N``
plays the input N times with new call ids. Producer settings are the services':
idempotent, ``acks=all``, Kafka's murmur2 partitioner (a call's events meet in one
partition), the connection from the ``KAFKA_*`` variables.

As a library: `transcript_events` / `recording_events` yield `Outgoing` events in
timeline order, and `send` produces them with the pacing above and returns a
`ReplaySummary`.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loopwise.events import (
    AudioChunkV1,
    AudioFormat,
    CallEndedV1,
    CallStartedV1,
    ChannelSpec,
    ExternalTranscriptSegmentV1,
    TenantEvent,
    encode,
    validation_reason,
)
from loopwise.events.base import IDENTIFIER_PATTERN, PartyRole
from loopwise.settings import KafkaSettings

SOURCE = "loopwise-replay"
CALLS, AUDIO, TRANSCRIPTS = "cx.calls", "cx.audio", "cx.transcripts.external"
Encoding = Literal["pcm_s16le", "mulaw", "alaw"]


class ReplayInputError(ValueError):
    """The input file cannot be replayed; the message names the file and line."""


@dataclass(frozen=True, order=True)
class Outgoing:
    """One event to send, `at_s` seconds after the replay starts, to a catalogue topic."""

    at_s: float
    order: int
    label: str = field(compare=False)
    """Catalogue label of the topic: cx.calls, cx.audio or cx.transcripts.external."""
    event: TenantEvent = field(compare=False)

    @property
    def paced(self) -> bool:
        """True for content (segments, audio chunks): what `--rate` counts."""
        return self.label != CALLS


@dataclass
class CallOptions:
    """How replayed calls are announced (CallStarted fields)."""

    tenant: str = "replay"
    queue: str = "replay"
    region: str = "local"
    language: str | None = None


@dataclass
class ReplaySummary:
    """What a replay sent, and how long it took."""

    calls: int = 0
    segments: int = 0
    audio_chunks: int = 0
    audio_seconds: float = 0.0
    events: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    call_ids: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    send_rate: float = 0.0
    """Paced events (segments or chunks) per wall-clock second."""

    def as_json(self) -> dict[str, Any]:
        """The summary as plain JSON data."""
        return asdict(self)


# ---- input: transcript files ---------------------------------------------------------------


class TranscriptLine(BaseModel):
    """One line of a transcript file; unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    call_id: str = Field(min_length=1, max_length=128, pattern=IDENTIFIER_PATTERN)
    speaker: PartyRole
    start: float = Field(ge=0)
    end: float = Field(ge=0)
    text: str = Field(max_length=20_000)
    tenant: str | None = Field(default=None, max_length=128, pattern=IDENTIFIER_PATTERN)
    segment_id: str | None = Field(default=None, min_length=1, max_length=128)
    channel: int | None = Field(default=None, ge=0, le=1)
    confidence: float | None = Field(default=None, ge=0, le=1)
    language: str | None = Field(default=None, max_length=16)

    @field_validator("end")
    @classmethod
    def _end_not_before_start(cls, end: float, info: Any) -> float:
        start = info.data.get("start")
        if start is not None and end < start:
            raise ValueError("end is before start")
        return end


def read_transcript(path: Path) -> dict[str, list[TranscriptLine]]:
    """Segments of a JSON-lines transcript file, per call in file order; errors name the line.

    A line may name its call's tenant; lines of one call must not name different ones.
    """
    calls: dict[str, list[TranscriptLine]] = {}
    tenants: dict[str, tuple[str, int]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplayInputError(f"{path}: cannot read ({type(exc).__name__})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReplayInputError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if isinstance(data, dict) and "speaker" not in data:
            data["speaker"] = data.get("party")
        if isinstance(data, dict) and "tenant" not in data and "tenant_id" in data:
            data["tenant"] = data["tenant_id"]
        try:
            segment = TranscriptLine.model_validate(data)
        except ValidationError as exc:
            raise ReplayInputError(
                f"{path}:{number}: {validation_reason(exc, model=TranscriptLine)}"
            ) from None
        if segment.tenant is not None:
            first = tenants.setdefault(segment.call_id, (segment.tenant, number))
            if first[0] != segment.tenant:
                raise ReplayInputError(
                    f"{path}:{number}: tenant differs from line {first[1]} of the same call"
                )
        calls.setdefault(segment.call_id, []).append(segment)
    if not calls:
        raise ReplayInputError(f"{path}: no segments")
    return calls


def replay_call_id(original: str, run_id: str | None, index: int) -> str:
    """The call id of the `index`-th replay of a call: itself without a run id, else suffixed."""
    if run_id is None:
        return original
    suffix = f".{run_id}.{index}"
    return original[: 128 - len(suffix)] + suffix


def _started(
    options: CallOptions,
    tenant: str,
    call_id: str,
    at: datetime,
    audio: AudioFormat | None,
    channels: list[ChannelSpec],
) -> CallStartedV1:
    return CallStartedV1(
        tenant_id=tenant,
        call_id=call_id,
        occurred_at=at,
        queue=options.queue,
        region=options.region,
        language_hint=options.language,
        audio=audio,
        channels=channels,
        metadata={"source": SOURCE},
    )


def transcript_events(
    calls: Mapping[str, Sequence[TranscriptLine]],
    *,
    options: CallOptions | None = None,
    repeat: int = 1,
    run_id: str | None = None,
    stagger_s: float = 0.0,
    start: datetime | None = None,
) -> Iterator[Outgoing]:
    """Every call of a transcript as CallStarted, external segments and CallEnded, in time order.

    Each call (and each of `repeat` replays, with call ids from `replay_call_id`) starts
    `stagger_s` after the previous one; a segment is sent when it ends.
    """
    options = options or CallOptions()
    t0 = start or datetime.now(UTC)
    counter = itertools.count()
    streams: list[Iterator[Outgoing]] = []
    slot = 0
    for index in range(repeat):
        for original, segments in calls.items():
            call_id = replay_call_id(original, run_id, index)
            streams.append(
                _transcript_call(segments, call_id, slot * stagger_s, options, t0, counter)
            )
            slot += 1
    return heapq.merge(*streams)


def _transcript_call(
    segments: Sequence[TranscriptLine],
    call_id: str,
    offset: float,
    options: CallOptions,
    t0: datetime,
    counter: Iterator[int],
) -> Iterator[Outgoing]:
    # A call belongs to one tenant: the one its lines name (read_transcript checks they agree).
    tenant = next((s.tenant for s in segments if s.tenant), options.tenant)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=offset + seconds)

    channels = [ChannelSpec(index=0, role="agent"), ChannelSpec(index=1, role="customer")]
    yield Outgoing(
        offset, next(counter), CALLS, _started(options, tenant, call_id, at(0), None, channels)
    )
    ordered = sorted(enumerate(segments), key=lambda p: (p[1].end, p[0]))
    for number, seg in ordered:
        event = ExternalTranscriptSegmentV1(
            tenant_id=tenant,
            call_id=call_id,
            occurred_at=at(seg.end),
            segment_id=seg.segment_id or f"seg-{number:05d}",
            speaker=seg.speaker,
            channel=seg.channel,
            start_s=seg.start,
            end_s=seg.end,
            text=seg.text,
            confidence=seg.confidence,
            language=seg.language or options.language,
            engine=SOURCE,
        )
        yield Outgoing(offset + seg.end, next(counter), TRANSCRIPTS, event)
    duration = max(s.end for s in segments)
    ended = CallEndedV1(
        tenant_id=tenant,
        call_id=call_id,
        occurred_at=at(duration),
        reason="completed",
        duration_s=round(duration, 3),
    )
    yield Outgoing(offset + duration, next(counter), CALLS, ended)


# ---- input: recordings ----------------------------------------------------------------------


def recording_events(
    path: Path,
    *,
    call_id: str,
    options: CallOptions | None = None,
    roles: Sequence[PartyRole] | None = None,
    encoding: Encoding = "pcm_s16le",
    sample_rate: Literal[8000, 16000] = 16000,
    chunk_ms: int = 200,
    tail_silence_s: float = 0.0,
    repeat: int = 1,
    run_id: str | None = None,
    stagger_s: float = 0.0,
    start: datetime | None = None,
) -> Iterator[Outgoing]:
    """A recording as CallStarted, AudioChunk per channel and CallEnded, in time order.

    A mono file is one `mixed` channel, a stereo file agent (left) and customer (right)
    unless `roles` says otherwise. A chunk is sent once it has been spoken.
    `tail_silence_s` of silence is added at the end, as a line stays open after the talk.
    """
    from loopwise.audio import encode_samples, read_recording

    if not 20 <= chunk_ms <= 2000:
        raise ReplayInputError(f"chunk size {chunk_ms} ms: use 20-2000 ms")
    try:
        channels = read_recording(path, sample_rate)
    except (OSError, RuntimeError, ValueError) as exc:  # soundfile's errors: name the file
        raise ReplayInputError(f"{path}: not a readable recording ({exc})") from None
    if not 1 <= len(channels) <= 2:
        raise ReplayInputError(f"{path}: {len(channels)} channels; 1 (mono) or 2 are supported")
    if roles is None:
        roles = ["mixed"] if len(channels) == 1 else ["agent", "customer"]
    if len(roles) != len(channels):
        raise ReplayInputError(f"{path}: {len(channels)} channel(s) but {len(roles)} role(s)")
    if tail_silence_s > 0:
        import numpy as np

        pad = np.zeros(int(tail_silence_s * sample_rate), dtype=np.int16)
        channels = [np.concatenate([c, pad]) for c in channels]
    encoded = [encode_samples(c, encoding) for c in channels]
    options = options or CallOptions()
    t0 = start or datetime.now(UTC)
    counter = itertools.count()
    total = max(len(c) for c in channels)
    audio = AudioFormat(
        encoding=encoding, sample_rate_hz=sample_rate, channels=cast(Literal[1, 2], len(channels))
    )
    specs = [ChannelSpec(index=i, role=r) for i, r in enumerate(roles)]
    streams = [
        _recording_call(
            encoded,
            total,
            replay_call_id(call_id, run_id, index),
            index * stagger_s,
            options,
            audio,
            specs,
            chunk_ms,
            t0,
            counter,
        )
        for index in range(repeat)
    ]
    return heapq.merge(*streams)


def _recording_call(
    encoded: list[bytes],
    total: int,
    call_id: str,
    offset: float,
    options: CallOptions,
    audio: AudioFormat,
    specs: list[ChannelSpec],
    chunk_ms: int,
    t0: datetime,
    counter: Iterator[int],
) -> Iterator[Outgoing]:
    rate = audio.sample_rate_hz
    width = 2 if audio.encoding == "pcm_s16le" else 1
    step = rate * chunk_ms // 1000

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=offset + seconds)

    started = _started(options, options.tenant, call_id, at(0), audio, specs)
    yield Outgoing(offset, next(counter), CALLS, started)
    last: dict[str, int] = {}
    for seq, first in enumerate(range(0, total, step)):
        spoken = min(first + step, total) / rate
        for ch, data in enumerate(encoded):
            piece = data[first * width : (first + step) * width]
            if not piece:
                continue
            chunk = AudioChunkV1(
                tenant_id=options.tenant,
                call_id=call_id,
                occurred_at=at(spoken),
                channel=ch,
                sequence=seq,
                start_ms=first * 1000 // rate,
                audio=piece,
            )
            last[str(ch)] = seq
            yield Outgoing(offset + spoken, next(counter), AUDIO, chunk)
    duration = total / rate
    ended = CallEndedV1(
        tenant_id=options.tenant,
        call_id=call_id,
        occurred_at=at(duration),
        reason="completed",
        duration_s=round(duration, 3),
        last_audio_sequence=last,
    )
    yield Outgoing(offset + duration, next(counter), CALLS, ended)


# ---- output ---------------------------------------------------------------------------------


def producer_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The services' producer settings: idempotent, acks=all, murmur2 (Kafka's) partitioner."""
    return {
        **kafka.librdkafka(),
        "client.id": f"{kafka.client_id}-replay",
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "compression.type": "lz4",
    }


def topic_names(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Kafka topic per label: the catalogue's, unless overridden."""
    from loopwise.topics import topic

    names = {label: topic(label) for label in (CALLS, AUDIO, TRANSCRIPTS)}
    names.update(overrides or {})
    return names


def send(
    outgoing: Iterable[Outgoing],
    *,
    producer: Any = None,
    kafka: KafkaSettings | None = None,
    topics: Mapping[str, str] | None = None,
    speed: float = 1.0,
    rate: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    connect_timeout_s: float = 15.0,
) -> ReplaySummary:
    """Produce events in order, paced by the timeline at `speed` (0: no pacing) or at `rate`.

    `rate` is paced events (segments, audio chunks) per second; call events go between
    them in order. Waits for every delivery; raises RuntimeError naming the first failure
    (an unreachable cluster or a missing topic before anything is sent).
    """
    if producer is None:
        from confluent_kafka import Producer

        if kafka is None:
            raise ValueError("send() needs a producer or Kafka settings")
        producer = Producer(producer_config(kafka))
    names = topic_names(topics)
    summary = ReplaySummary()
    failures: list[str] = []
    calls: set[str] = set()
    formats: dict[str, AudioFormat] = {}

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err.str() if hasattr(err, "str") else err))

    try:
        present = set(producer.list_topics(timeout=connect_timeout_s).topics)
    except Exception as exc:  # noqa: BLE001 - KafkaException and friends: one clear line
        raise RuntimeError(f"cannot reach the Kafka cluster ({exc})") from None
    checked: set[str] = set()
    began = clock()
    paced = 0
    for item in outgoing:
        if rate:
            due = paced / rate if item.paced else None
        elif speed > 0:
            due = item.at_s / speed
        else:
            due = None
        if due is not None:
            wait = began + due - clock()
            if wait > 0:
                producer.poll(0)
                sleep(wait)
        key, value, headers, _ = encode(item.event, source=SOURCE)
        name = names[item.label]
        if name not in checked:
            if name not in present:
                raise RuntimeError(
                    f"topic {name} does not exist on the cluster "
                    "(create the catalogue's topics with `loopwise topics apply`)"
                )
            checked.add(name)
        while True:
            try:
                producer.produce(
                    name, key=key, value=value, headers=cast(Any, headers), on_delivery=delivered
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        if failures:
            break
        paced += item.paced
        summary.events += 1
        summary.by_topic[name] = summary.by_topic.get(name, 0) + 1
        event = item.event
        if isinstance(event, CallStartedV1):
            calls.add(event.call_id)
            summary.call_ids.append(event.call_id)
            if event.audio is not None:
                formats[event.call_id] = event.audio
        elif isinstance(event, ExternalTranscriptSegmentV1):
            summary.segments += 1
        elif isinstance(event, AudioChunkV1):
            summary.audio_chunks += 1
            fmt = formats.get(event.call_id)
            if fmt is not None and event.channel == 0:
                width = 2 if fmt.encoding == "pcm_s16le" else 1
                summary.audio_seconds += len(event.audio) / width / fmt.sample_rate_hz
    left = producer.flush(60)
    if left:
        failures.append(f"{left} event(s) not delivered within 60 s")
    if failures:
        raise RuntimeError(f"replay could not produce: {failures[0]}")
    summary.calls = len(calls)
    summary.audio_seconds = round(summary.audio_seconds, 3)
    summary.wall_s = round(clock() - began, 3)
    content = summary.segments + summary.audio_chunks
    summary.send_rate = round(content / summary.wall_s, 1) if summary.wall_s > 0 else 0.0
    return summary


# ---- the command ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `loopwise-replay`."""
    parser = argparse.ArgumentParser(
        prog="loopwise-replay",
        description=(
            "Play a recording (wav/flac/ogg, mono or one channel per party) or a transcript "
            "file (JSON lines) into the Loopwise topics as a CX platform would. The broker "
            "comes from KAFKA_BOOTSTRAP_SERVERS (and the other KAFKA_* settings)."
        ),
        epilog=(
            'Transcript lines: {"call_id": "c1", "speaker": "agent", "start": 0.0, '
            '"end": 2.5, "text": "Hello"} with optional tenant, segment_id, channel, '
            "confidence, language; `party` may stand for `speaker`. Examples: "
            "loopwise-replay transcript calls.jsonl --speed 10;  "
            "loopwise-replay recording call.wav --tenant acme --calls 5 --speed 0 --json"
        ),
    )
    sub = parser.add_subparsers(dest="input", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tenant", default="replay", help="tenant id (default: replay)")
        p.add_argument("--queue", default="replay", help="queue named in CallStarted")
        p.add_argument("--region", default="local", help="region named in CallStarted")
        p.add_argument("--language", default=None, help="language hint, e.g. en")
        p.add_argument(
            "--speed",
            type=float,
            default=1.0,
            help="times real time (default 1; 0 sends as fast as the broker takes it)",
        )
        p.add_argument(
            "--rate",
            type=float,
            default=None,
            help="send segments (or audio chunks) at this many per second instead",
        )
        p.add_argument("--calls", type=int, default=1, help="play the input N times")
        p.add_argument(
            "--run-id",
            default=None,
            help="suffix for new call ids (default: random when --calls > 1 or --new-ids)",
        )
        p.add_argument(
            "--new-ids", action="store_true", help="give calls new ids even when played once"
        )
        p.add_argument(
            "--stagger", type=float, default=0.0, help="seconds between the starts of calls"
        )
        p.add_argument("--json", action="store_true", help="print the summary as JSON")
        for label in (CALLS, AUDIO, TRANSCRIPTS):
            p.add_argument(
                f"--topic-{label.split('.', 1)[1].replace('.', '-')}",
                dest=f"topic_{label}",
                default=None,
                help=f"topic for {label} (default: the catalogue's)",
            )

    tr = sub.add_parser("transcript", help="a JSON-lines transcript file")
    tr.add_argument("file", type=Path)
    common(tr)
    rec = sub.add_parser("recording", help="a wav/flac/ogg recording")
    rec.add_argument("file", type=Path)
    rec.add_argument("--call-id", default=None, help="call id (default: from the file name)")
    rec.add_argument(
        "--roles",
        default=None,
        help="party per channel, comma-separated (default: mixed, or agent,customer)",
    )
    rec.add_argument("--encoding", choices=["pcm_s16le", "mulaw", "alaw"], default="pcm_s16le")
    rec.add_argument("--sample-rate", type=int, choices=[8000, 16000], default=16000)
    rec.add_argument("--chunk-ms", type=int, default=200, help="audio per chunk (20-2000 ms)")
    rec.add_argument(
        "--tail-silence", type=float, default=0.0, help="seconds of silence after the recording"
    )
    common(rec)
    return parser


def _file_call_id(path: Path) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.stem)
    return (cleaned.lstrip("._-") or "call")[:100]


def events_for(args: argparse.Namespace) -> Iterator[Outgoing]:
    """The events a parsed command line asks for."""
    if args.calls < 1:
        raise ReplayInputError("--calls must be at least 1")
    run_id = args.run_id
    if run_id is None and (args.calls > 1 or args.new_ids):
        run_id = uuid.uuid4().hex[:6]
    options = CallOptions(
        tenant=args.tenant, queue=args.queue, region=args.region, language=args.language
    )
    if args.input == "transcript":
        return transcript_events(
            read_transcript(args.file),
            options=options,
            repeat=args.calls,
            run_id=run_id,
            stagger_s=args.stagger,
        )
    roles = None
    if args.roles:
        roles = [r.strip() for r in args.roles.split(",")]
        allowed = {"agent", "customer", "ivr", "supervisor", "mixed", "unknown"}
        if not set(roles) <= allowed:
            raise ReplayInputError(f"--roles: each role is one of {', '.join(sorted(allowed))}")
    return recording_events(
        args.file,
        call_id=args.call_id or _file_call_id(args.file),
        options=options,
        roles=cast(list[PartyRole] | None, roles),
        encoding=args.encoding,
        sample_rate=args.sample_rate,
        chunk_ms=args.chunk_ms,
        tail_silence_s=args.tail_silence,
        repeat=args.calls,
        run_id=run_id,
        stagger_s=args.stagger,
    )


def _run(args: argparse.Namespace) -> int:
    from loopwise.settings import load_settings

    kafka = load_settings(KafkaSettings)
    topics = {
        label: getattr(args, f"topic_{label}")
        for label in (CALLS, AUDIO, TRANSCRIPTS)
        if getattr(args, f"topic_{label}")
    }
    summary = send(events_for(args), kafka=kafka, topics=topics, speed=args.speed, rate=args.rate)
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
    else:
        print(
            f"{summary.calls} call(s), {summary.segments} segment(s), "
            f"{summary.audio_chunks} audio chunk(s), {summary.events} events "
            f"to {kafka.bootstrap_servers} in {summary.wall_s:.1f} s"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `loopwise-replay`."""
    from loopwise.cli import dispatch

    parser = build_parser()
    parser.set_defaults(func=_run_checked)
    return dispatch(parser, argv)


def _run_checked(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ReplayInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
