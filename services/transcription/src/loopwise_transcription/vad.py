"""Streaming voice activity detection: cuts one channel's audio into utterances as it arrives.

Speech probabilities come from the Silero VAD model that faster-whisper ships (ONNX); the
state machine follows faster-whisper's offline `get_speech_timestamps`, made incremental.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loopwise_transcription.audio import MODEL_RATE, Samples

WINDOW = 512  # samples per Silero window at 16 kHz (32 ms)
_CONTEXT = 64
_SHORT_PAUSE = 3 * WINDOW  # ~100 ms of non-speech: a pause where long speech may be cut


@dataclass(frozen=True)
class VadParams:
    """When speech starts and ends, in samples at 16 kHz."""

    threshold: float = 0.5
    min_silence: int = 8_000
    pad: int = 3_200
    min_speech: int = 4_000
    max_utterance: int = 240_000

    @classmethod
    def from_ms(
        cls,
        *,
        threshold: float,
        min_silence_ms: int,
        speech_pad_ms: int,
        min_speech_ms: int,
        max_utterance_s: float,
    ) -> VadParams:
        """Parameters from settings in milliseconds and seconds."""
        per_ms = MODEL_RATE // 1000
        return cls(
            threshold=threshold,
            min_silence=min_silence_ms * per_ms,
            pad=speech_pad_ms * per_ms,
            min_speech=min_speech_ms * per_ms,
            max_utterance=int(max_utterance_s * MODEL_RATE),
        )


@dataclass(frozen=True)
class Cut:
    """An utterance: its samples and where they lie in the channel (sample indexes)."""

    start: int
    end: int
    samples: Samples
    speech_end: int
    reason: str  # "silence", "max_length" or "flush"


def _vad_model() -> Any:
    from faster_whisper.vad import get_vad_model  # type: ignore[import-untyped]

    return get_vad_model()


def speech_probabilities(audio: Samples, previous: Samples) -> Samples:
    """Silero speech probability of each 512-sample window of `audio` (a multiple of 512).

    `previous` is the window before the first (zeros at the start of a stream); the
    model sees each window with the 64 samples before it, as in offline use.
    """
    model = _vad_model()
    joined = np.concatenate([previous, audio]).astype(np.float32)
    probs = model(joined, num_samples=WINDOW, context_size_samples=_CONTEXT)
    return np.asarray(probs, dtype=np.float32).reshape(-1)[1:]


@dataclass
class UtteranceCutter:
    """Feeds 16 kHz samples of one channel; returns utterances as their ends are seen."""

    params: VadParams
    buffer: Samples = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    buffer_start: int = 0  # channel sample index of buffer[0]
    vad_pos: int = 0  # channel sample index up to which windows were scored
    triggered: bool = False
    speech_start: int = 0
    temp_end: int = 0
    pause_at: int = 0  # middle of the longest pause in the open utterance (where to cut it)
    pause_len: int = 0
    _previous: Samples = field(default_factory=lambda: np.zeros(WINDOW, dtype=np.float32))

    @property
    def position(self) -> int:
        """Channel sample index just after the last sample fed."""
        return self.buffer_start + self.buffer.size

    @property
    def oldest_needed(self) -> int:
        """Earliest channel sample still needed for an utterance not yet published."""
        return self.buffer_start

    def feed(self, samples: Samples) -> list[Cut]:
        """Add samples; return utterances that ended (by silence or maximum length)."""
        if samples.size:
            self.buffer = np.concatenate([self.buffer, samples.astype(np.float32)])
        cuts: list[Cut] = []
        ready = (self.position - self.vad_pos) // WINDOW * WINDOW
        if ready <= 0:
            return cuts
        lo = self.vad_pos - self.buffer_start
        windows = self.buffer[lo : lo + ready]
        probs = speech_probabilities(windows, self._previous)
        self._previous = windows[-WINDOW:].copy()
        p = self.params
        neg = max(p.threshold - 0.15, 0.01)
        for i, prob in enumerate(probs):
            at = self.vad_pos + i * WINDOW
            if prob >= p.threshold:
                self.temp_end = 0
                if not self.triggered:
                    self.triggered = True
                    self.speech_start = at
            elif prob < neg and self.triggered:
                if not self.temp_end:
                    self.temp_end = at
                run = at + WINDOW - self.temp_end
                if (
                    run >= _SHORT_PAUSE
                    and run >= self.pause_len
                    and self.temp_end > self.speech_start + p.min_speech
                ):
                    self.pause_len, self.pause_at = run, self.temp_end + run // 2
                if at - self.temp_end >= p.min_silence:
                    cut = self._cut(self.temp_end, "silence")
                    if cut is not None:
                        cuts.append(cut)
                    self.triggered = False
                    self.temp_end = self.pause_at = self.pause_len = 0
                    continue
            if self.triggered and at + WINDOW - self.speech_start >= p.max_utterance:
                # Cut long speech in the middle of its longest pause, else where it stands.
                end = self.pause_at if self.pause_at > self.speech_start else at + WINDOW
                cut = self._cut(end, "max_length", pad=False)
                if cut is not None:
                    cuts.append(cut)
                self.speech_start = end
                self.pause_at = self.pause_len = 0
                if self.temp_end <= end:
                    self.temp_end = 0
        self.vad_pos += ready
        if not self.triggered:
            self._trim(self.vad_pos - p.pad)
        return cuts

    def flush(self) -> list[Cut]:
        """End of the channel: publish speech still open."""
        if not self.triggered:
            return []
        end = self.temp_end or self.position
        cut = self._cut(end, "flush")
        self.triggered = False
        self.temp_end = 0
        return [cut] if cut is not None else []

    def skip_to(self, position: int) -> list[Cut]:
        """Audio is missing up to `position`: publish open speech and continue from there."""
        cuts = self.flush()
        self.buffer = np.zeros(0, dtype=np.float32)
        self.buffer_start = self.vad_pos = max(position, self.position)
        self._previous = np.zeros(WINDOW, dtype=np.float32)
        return cuts

    def _cut(self, speech_end: int, reason: str, pad: bool = True) -> Cut | None:
        p = self.params
        start = max(self.buffer_start, self.speech_start - p.pad)
        end = min(self.position, speech_end + (p.pad if pad else 0))
        keep = speech_end - self.speech_start >= p.min_speech or reason == "max_length"
        samples = self.buffer[start - self.buffer_start : end - self.buffer_start].copy()
        self._trim(end if reason == "max_length" else end - p.pad)
        if not keep or samples.size == 0:
            return None
        return Cut(start=start, end=end, samples=samples, speech_end=speech_end, reason=reason)

    def _trim(self, before: int) -> None:
        drop = min(max(0, before - self.buffer_start), self.buffer.size)
        if drop:
            self.buffer = self.buffer[drop:]
            self.buffer_start += drop


@dataclass
class Recorder:
    """Post-call mode: keeps a channel's whole recording and hands it over in one piece.

    Holes in the audio become silence (up to `max_hole` samples) so times stay call
    times; a recording longer than `max_samples` is handed over in parts.
    """

    max_samples: int
    max_hole: int = 60 * MODEL_RATE
    pieces: list[Samples] = field(default_factory=list)
    size: int = 0
    start: int = 0  # channel sample index of the first kept sample

    @property
    def position(self) -> int:
        """Channel sample index just after the last sample kept."""
        return self.start + self.size

    @property
    def oldest_needed(self) -> int:
        """Everything since the last hand-over is still needed."""
        return self.start

    def feed(self, samples: Samples) -> list[Cut]:
        """Keep samples; a part is handed over when the recording reaches its limit."""
        if samples.size:
            self.pieces.append(samples.astype(np.float32))
            self.size += samples.size
        return self._part("recording") if self.size >= self.max_samples else []

    def skip_to(self, position: int) -> list[Cut]:
        """Audio is missing up to `position`: silence in its place (a long hole starts anew)."""
        hole = position - self.position
        if hole <= 0:
            return []
        if hole > self.max_hole:
            cuts = self._part("recording")
            self.start = position
            return cuts
        return self.feed(np.zeros(hole, dtype=np.float32))

    def flush(self) -> list[Cut]:
        """End of the channel: the recording so far."""
        return self._part("recording")

    def _part(self, reason: str) -> list[Cut]:
        if not self.size:
            return []
        samples = np.concatenate(self.pieces)
        cut = Cut(self.start, self.position, samples, self.position, reason)
        self.start, self.pieces, self.size = self.position, [], 0
        return [cut]
