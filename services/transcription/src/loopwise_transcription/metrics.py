"""Transcription metrics (`loopwise_transcription_*`); redactions by type are counted by
`loopwise.redaction` itself (`loopwise_redactions_total`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

AUDIO_SECONDS = Counter(
    "loopwise_transcription_audio_seconds_total",
    "Seconds of audio transcribed, by mode (realtime or post_call)",
    ["mode"],
)
ASR_SECONDS = Counter(
    "loopwise_transcription_asr_seconds_total",
    "Seconds of compute spent recognising audio, by mode; divide by audio seconds for the RTF",
    ["mode"],
)
REAL_TIME_FACTOR = Histogram(
    "loopwise_transcription_real_time_factor",
    "Compute time over audio time of each recognised utterance or file",
    ["mode"],
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0),
)
UTTERANCE_LATENCY = Histogram(
    "loopwise_transcription_utterance_latency_seconds",
    "From the arrival of the audio where an utterance's speech ended to its segment being "
    "handed to the producer (includes the silence the VAD waits for)",
    buckets=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 60.0),
)
SEGMENTS = Counter(
    "loopwise_transcription_segments_total",
    "Transcript segments published, by source and language",
    ["source", "language"],
)
CHUNKS = Counter(
    "loopwise_transcription_audio_chunks_total",
    "Audio chunks by outcome: accepted, held (call not started yet), duplicate, rejected",
    ["outcome"],
)
SEQUENCE_ANOMALIES = Counter(
    "loopwise_transcription_sequence_anomalies_total",
    "Audio chunk sequence problems: gap (chunks never came) or reordered (came late, repaired)",
    ["kind"],
)
OPEN_CALLS = Gauge("loopwise_transcription_open_calls", "Calls with state in this instance")
HELD_CHUNKS = Gauge(
    "loopwise_transcription_held_chunks", "Audio chunks held for calls not started yet"
)

for _mode in ("realtime", "post_call"):
    AUDIO_SECONDS.labels(_mode)
    ASR_SECONDS.labels(_mode)
    REAL_TIME_FACTOR.labels(_mode)
for _outcome in ("accepted", "held", "duplicate", "rejected"):
    CHUNKS.labels(_outcome)
for _kind in ("gap", "reordered"):
    SEQUENCE_ANOMALIES.labels(_kind)
