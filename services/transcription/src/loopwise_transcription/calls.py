"""Per-call, per-channel streaming state: sequence repair, audio position and offsets held.

Nothing here talks to Kafka; the handler feeds it validated chunks and turns the
utterances it returns into segments.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from loopwise.events import AudioChunkV1, CallStartedV1
from loopwise.events.base import PartyRole
from loopwise.kafka.intake import Incoming
from loopwise_transcription.audio import MODEL_RATE, StreamResampler, bytes_per_sample, decode_chunk
from loopwise_transcription.metrics import SEQUENCE_ANOMALIES
from loopwise_transcription.vad import Cut, Recorder, UtteranceCutter, VadParams

Partition = tuple[str, int]


@dataclass(frozen=True)
class ChunkMark:
    """Where a consumed chunk's audio ends in the channel, and where the chunk came from."""

    end: int  # channel sample index (16 kHz) after this chunk
    partition: Partition
    offset: int
    event_id: str
    arrived: float  # monotonic time the handler got it


@dataclass
class Utterance:
    """A cut utterance with what is needed to publish it."""

    cut: Cut
    channel: int
    role: PartyRole
    flags: set[str]
    derived_from: list[str]
    speech_end_arrived: float


@dataclass
class ChannelState:
    """One channel: the cutter, the next expected sequence number, chunks waiting for a gap."""

    index: int
    role: PartyRole
    rate: int
    encoding: str
    vad: VadParams
    post_call_max_s: float | None = None  # set: keep the whole recording (post-call mode)
    cutter: UtteranceCutter | Recorder = field(init=False)
    resampler: StreamResampler = field(init=False)
    next_seq: int = 0
    waiting: dict[int, Incoming] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)
    marks: deque[ChunkMark] = field(default_factory=deque)
    flags: set[str] = field(default_factory=set)
    received: int = 0  # input samples (at the channel's rate) accounted for, holes included

    def __post_init__(self) -> None:
        self.cutter = (
            UtteranceCutter(self.vad)
            if self.post_call_max_s is None
            else Recorder(int(self.post_call_max_s * MODEL_RATE))
        )
        self.resampler = StreamResampler(self.rate)

    def chunk_samples(self, chunk: AudioChunkV1) -> int:
        """Samples (at the channel's own rate) a chunk holds."""
        return len(chunk.audio) // bytes_per_sample(self.encoding)

    def feed(self, incoming: Incoming, now: float, missing: int = 0) -> list[Utterance]:
        """Decode and add one in-order chunk; return utterances it completed.

        `missing` chunks before it never came: the position jumps by their (estimated)
        length unless the chunk says where it starts.
        """
        chunk = incoming.event
        assert isinstance(chunk, AudioChunkV1)
        utterances: list[Utterance] = []
        # Positions are compared in input samples: the resampler's output lags its input.
        hole = 0
        if chunk.start_ms is not None:
            at = chunk.start_ms * self.rate // 1000
            if at - self.received > self.rate // 4:  # over 250 ms of audio never came
                hole = at - self.received
        elif missing:
            hole = missing * self.chunk_samples(chunk)
            self.flags.add("offset_estimated")
        if hole:
            self.received += hole
            skip = self.cutter.position + hole * MODEL_RATE // self.rate
            utterances += self._wrap(self.cutter.skip_to(skip), now)
        self.received += self.chunk_samples(chunk)
        samples = self.resampler.push(decode_chunk(chunk.audio, self.encoding, self.rate))
        end = self.cutter.position + samples.size
        self.marks.append(
            ChunkMark(
                end,
                (incoming.topic, incoming.partition),
                incoming.offset,
                incoming.envelope.id,
                now,
            )
        )
        utterances += self._wrap(self.cutter.feed(samples), now)
        return utterances

    def flush(self, now: float) -> list[Utterance]:
        """End of the channel: the resampler's tail and any open utterance."""
        tail = self.resampler.push(np.zeros(0, dtype=np.float32), last=True)
        utterances = self._wrap(self.cutter.feed(tail), now)
        utterances += self._wrap(self.cutter.flush(), now)
        self.marks.clear()
        return utterances

    def _wrap(self, cuts: list[Cut], now: float) -> list[Utterance]:
        out = []
        for cut in cuts:
            covering = [m for m in self.marks if m.end > cut.start]
            derived = [m.event_id for m in covering if m.end - 1 >= cut.start][:9_000]
            ended = next((m.arrived for m in self.marks if m.end >= cut.speech_end), now)
            out.append(Utterance(cut, self.index, self.role, set(self.flags), derived, ended))
            self.flags.clear()
        while self.marks and self.marks[0].end <= self.cutter.oldest_needed:
            self.marks.popleft()
        return out

    def floors(self) -> dict[Partition, int]:
        """Lowest input offset per partition this channel still needs after a restart."""
        floors: dict[Partition, int] = {}
        for m in self.marks:
            floors[m.partition] = min(floors.get(m.partition, m.offset), m.offset)
        for w in self.waiting.values():
            key = (w.topic, w.partition)
            floors[key] = min(floors.get(key, w.offset), w.offset)
        return floors


@dataclass
class CallState:
    """A started call: its channels, language, vocabulary and where its start event lies."""

    incoming: Incoming
    started: CallStartedV1
    started_id: str
    started_at: tuple[Partition, int]
    channels: dict[int, ChannelState]
    last_seen: float
    language: str | None
    ending: float | None = None  # monotonic deadline once call-ended came
    last_sequence: dict[int, int] | None = None  # per channel, from the call-ended event

    def audio_complete(self) -> bool:
        """True when call-ended named the last chunks and every channel has them."""
        if self.last_sequence is None:
            return False
        return all(
            ch.next_seq > self.last_sequence.get(index, -1) for index, ch in self.channels.items()
        )

    @classmethod
    def open(
        cls, incoming: Incoming, vad: VadParams, now: float, post_call_max_s: float | None = None
    ) -> CallState:
        """State for a call-started event (post-call mode keeps whole recordings)."""
        event = incoming.event
        assert isinstance(event, CallStartedV1)
        channels: dict[int, ChannelState] = {}
        if event.audio is not None:
            for spec in event.channels:
                channels[spec.index] = ChannelState(
                    spec.index,
                    spec.role,
                    event.audio.sample_rate_hz,
                    event.audio.encoding,
                    vad,
                    post_call_max_s,
                )
        language = event.language_hint.split("-")[0].lower() if event.language_hint else None
        return cls(
            incoming=incoming,
            started=event,
            started_id=incoming.envelope.id,
            started_at=((incoming.topic, incoming.partition), incoming.offset),
            channels=channels,
            last_seen=now,
            language=language,
        )


class SequenceOutcome:
    """What to do with a chunk given the channel's next expected sequence number."""

    DUPLICATE = "duplicate"
    LATE = "late"
    WAIT = "wait"
    READY = "ready"


def sequence_outcome(channel: ChannelState, seq: int) -> str:
    """Classify a chunk's sequence number against the channel."""
    if seq < channel.next_seq:
        return SequenceOutcome.LATE if seq in channel.skipped else SequenceOutcome.DUPLICATE
    if seq > channel.next_seq:
        return SequenceOutcome.DUPLICATE if seq in channel.waiting else SequenceOutcome.WAIT
    return SequenceOutcome.READY


def next_in_order(
    channel: ChannelState, window: int, force: bool = False
) -> list[tuple[Incoming, int]]:
    """Chunks now ready in order, each with the number of chunks missing just before it.

    Past the reorder window (or when forced at the end of the call) a gap is declared.
    """
    ready: list[tuple[Incoming, int]] = []
    missing = 0
    while channel.waiting:
        if channel.next_seq in channel.waiting:
            ready.append((channel.waiting.pop(channel.next_seq), missing))
            missing = 0
            channel.next_seq += 1
            continue
        if len(channel.waiting) <= window and not force:
            break
        # The missing chunks are given up on: flag the next segment and move past the hole.
        resume = min(channel.waiting)
        channel.skipped.update(range(channel.next_seq, resume))
        missing = resume - channel.next_seq
        SEQUENCE_ANOMALIES.labels("gap").inc()
        channel.flags.add("audio_gap")
        channel.next_seq = resume
    return ready
