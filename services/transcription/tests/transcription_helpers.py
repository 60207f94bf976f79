"""Helpers of the transcription tests: real telephone audio made into calls and chunks."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from loopwise.events import AudioChunkV1, AudioFormat, CallEndedV1, CallStartedV1, ChannelSpec
from loopwise.events.base import PartyRole
from loopwise_transcription.audio import encode_g711

ROOT = Path(__file__).resolve().parents[3]
ASR_DATA = ROOT.parent / "shared" / "data" / "asr"
CLIPS = ASR_DATA / "clips"

# Three short telephone prompts (8 kHz, Asterisk core sounds) and what they say.
PROMPTS = {
    "hold": ("asterisk_8k_pls-hold-while-try.wav", "please hold while we try to connect you"),
    "phone": (
        "asterisk_8k_privacy-prompt.wav",
        "please enter your phone number starting with the area code",
    ),
    "password": (
        "asterisk_8k_agent-pass.wav",
        "please enter your password followed by the pound key",
    ),
}


def normalise(text: str) -> str:
    """Lower-case words without punctuation."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def word_errors(reference: str, hypothesis: str) -> float:
    """Word error rate by edit distance (no extra dependency in the tests)."""
    ref, hyp = normalise(reference).split(), normalise(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def pcm8k(name: str) -> np.ndarray:
    """A prompt as 16-bit samples at 8 kHz (as recorded)."""
    import soundfile  # type: ignore[import-untyped]

    data, rate = soundfile.read(str(CLIPS / PROMPTS[name][0]), dtype="int16")
    assert rate == 8000
    return np.asarray(data, dtype=np.int16)


def two_party_call(script: list[tuple[float, int, str]], seconds: float) -> list[np.ndarray]:
    """Two 8 kHz channels with prompts placed at (start second, channel, prompt) in silence."""
    channels = [np.zeros(int(seconds * 8000), dtype=np.int16) for _ in range(2)]
    for start, channel, name in script:
        clip = pcm8k(name)
        at = int(start * 8000)
        channels[channel][at : at + clip.size] = clip[: channels[channel].size - at]
    return channels


def call_started(
    call_id: str,
    *,
    channels: int = 2,
    encoding: str = "mulaw",
    rate: int = 8000,
    roles: tuple[PartyRole, ...] = ("agent", "customer"),
    tenant: str = "acme",
) -> CallStartedV1:
    """A call-started event with an audio layout."""
    return CallStartedV1(
        tenant_id=tenant,
        call_id=call_id,
        occurred_at=datetime.now(UTC),
        queue="billing",
        region="eu-west",
        language_hint="en-US",
        audio=AudioFormat(encoding=encoding, sample_rate_hz=rate, channels=channels),  # type: ignore[arg-type]
        channels=[ChannelSpec(index=i, role=roles[i]) for i in range(channels)],
    )


def call_ended(
    call_id: str, last: dict[str, int] | None = None, tenant: str = "acme"
) -> CallEndedV1:
    """A call-ended event, naming the last chunk of each channel where `last` is given."""
    return CallEndedV1(
        tenant_id=tenant,
        call_id=call_id,
        occurred_at=datetime.now(UTC),
        last_audio_sequence=last,
    )


def mulaw_chunks(
    call_id: str,
    channels: list[np.ndarray],
    chunk_ms: int = 200,
    tenant: str = "acme",
    start_ms: bool = False,
) -> list[AudioChunkV1]:
    """The channels as mu-law chunks, interleaved in time order, sequence numbers per channel.

    With `start_ms`, each chunk says where it starts in the call (as most platforms do).
    """
    step = 8 * chunk_ms
    chunks = []
    for seq, at in enumerate(range(0, max(c.size for c in channels), step)):
        for index, samples in enumerate(channels):
            piece = samples[at : at + step]
            if piece.size == 0:
                continue
            chunks.append(
                AudioChunkV1(
                    tenant_id=tenant,
                    call_id=call_id,
                    occurred_at=datetime.now(UTC),
                    channel=index,
                    sequence=seq,
                    start_ms=at // 8 if start_ms else None,
                    audio=encode_g711(piece, "mulaw"),
                )
            )
    return chunks
