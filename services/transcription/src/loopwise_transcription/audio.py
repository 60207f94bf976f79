"""Telephone audio to the 16 kHz mono float32 the recogniser wants: G.711 tables and resampling."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import soxr  # type: ignore[import-untyped]

from loopwise.audio import ALAW_TO_PCM, MULAW_TO_PCM, encode_g711

Encoding = Literal["pcm_s16le", "mulaw", "alaw"]
Samples = npt.NDArray[np.float32]

MODEL_RATE = 16_000
SUPPORTED_RATES = (8_000, 16_000)
ENCODINGS: tuple[Encoding, ...] = ("pcm_s16le", "mulaw", "alaw")

__all__ = ["ALAW_TO_PCM", "MULAW_TO_PCM", "encode_g711"]  # G.711 lives in loopwise.audio


class AudioFormatError(ValueError):
    """Audio bytes or a format that cannot be decoded (unknown codec or rate, torn samples)."""


def to_pcm16(data: bytes, encoding: str) -> npt.NDArray[np.int16]:
    """Decode raw sample bytes of one channel to 16-bit linear PCM."""
    if encoding == "pcm_s16le":
        if len(data) % 2:
            raise AudioFormatError(f"pcm_s16le needs an even byte count, got {len(data)}")
        return np.frombuffer(data, dtype="<i2").astype(np.int16)
    if encoding == "mulaw":
        return MULAW_TO_PCM[np.frombuffer(data, dtype=np.uint8)]
    if encoding == "alaw":
        return ALAW_TO_PCM[np.frombuffer(data, dtype=np.uint8)]
    raise AudioFormatError(f"unknown audio encoding {encoding!r}; known: {', '.join(ENCODINGS)}")


def bytes_per_sample(encoding: str) -> int:
    """Bytes one sample of one channel takes."""
    if encoding not in ENCODINGS:
        raise AudioFormatError(f"unknown audio encoding {encoding!r}")
    return 2 if encoding == "pcm_s16le" else 1


def resample(samples: Samples, rate: int) -> Samples:
    """Resample float samples to the model's 16 kHz (soxr, high quality)."""
    if rate == MODEL_RATE:
        return samples
    if rate not in SUPPORTED_RATES and not 4_000 <= rate <= 192_000:
        raise AudioFormatError(f"unsupported sample rate {rate} Hz")
    return np.asarray(soxr.resample(samples, rate, MODEL_RATE, quality="HQ"), dtype=np.float32)


def decode_chunk(data: bytes, encoding: str, rate: int) -> Samples:
    """Decode one channel's chunk to float32 samples at its own rate (resampling is streamed)."""
    if rate not in SUPPORTED_RATES:
        raise AudioFormatError(f"unsupported sample rate {rate} Hz; supported: 8000, 16000")
    pcm = to_pcm16(data, encoding)
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


class StreamResampler:
    """Resamples one channel chunk by chunk without clicks at chunk borders."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._stream = (
            None
            if rate == MODEL_RATE
            else soxr.ResampleStream(rate, MODEL_RATE, 1, dtype="float32", quality="HQ")
        )

    def push(self, samples: Samples, last: bool = False) -> Samples:
        """Resample the next piece of the channel; `last` flushes what the filter holds."""
        if self._stream is None:
            return samples
        out = self._stream.resample_chunk(samples, last=last)
        return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class ChannelAudio:
    """One channel of a recording at 16 kHz."""

    index: int
    samples: Samples


def looks_like_text(data: bytes) -> bool:
    """True when a chunk is almost all printable ASCII: text, JSON or a header, not samples."""
    head = data[:512]
    if len(head) < 16:
        return False
    printable = sum(1 for b in head if 32 <= b < 127 or b in (9, 10, 13))
    # Text has spaces or markup; a run of one printable byte (A-law 0x55 is "U") is audio.
    worded = b" " in head or head.lstrip()[:1] in (b"{", b"[", b"<")
    return printable / len(head) > 0.95 and worded


def read_audio_file(
    path: Path,
    *,
    raw_encoding: str | None = None,
    raw_rate: int | None = None,
    raw_channels: int = 1,
) -> list[ChannelAudio]:
    """Read wav/flac/ogg (soundfile), mp3 and others (PyAV) or raw bytes; one entry per channel."""
    if raw_encoding is not None:
        if raw_rate is None:
            raise AudioFormatError("raw audio needs a sample rate")
        data = path.read_bytes()
        width = bytes_per_sample(raw_encoding) * raw_channels
        usable = len(data) - len(data) % width
        pcm = to_pcm16(data[:usable], raw_encoding).reshape(-1, raw_channels)
        matrix = pcm.astype(np.float32) / 32768.0
        rate = raw_rate
    else:
        matrix, rate = _read_container(path)
    return [
        ChannelAudio(i, resample(np.ascontiguousarray(matrix[:, i], dtype=np.float32), rate))
        for i in range(matrix.shape[1])
    ]


def _read_container(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    import soundfile  # type: ignore[import-untyped]

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return np.asarray(data, dtype=np.float32), int(rate)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        pass
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            rate = int(stream.rate or MODEL_RATE)
            channels = int(stream.codec_context.channels or 1)
            pieces = []
            for frame in container.decode(stream):
                array = frame.to_ndarray()
                if array.dtype.kind in "iu":
                    scale = float(2 ** (8 * array.dtype.itemsize - 1))
                    array = array.astype(np.float32) / scale
                if frame.format.is_planar:
                    pieces.append(array.T)
                else:
                    pieces.append(array.reshape(-1, channels))
    except (av.FFmpegError, IndexError) as exc:
        raise AudioFormatError(f"{path}: not a readable audio file ({exc})") from None
    if not pieces:
        raise AudioFormatError(f"{path}: no audio frames")
    return np.concatenate(pieces).astype(np.float32), rate
