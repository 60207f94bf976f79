"""Telephone audio for CX-platform producers and the transcription service: G.711 and recordings.

Needs the ``audio`` extra (numpy, soundfile, soxr): ``pip install 'loopwise[audio]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

G711 = Literal["mulaw", "alaw"]


def _mulaw_table() -> npt.NDArray[np.int16]:
    # ITU-T G.711 u-law expansion (bias 0x84), for all 256 code words.
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> npt.NDArray[np.int16]:
    # ITU-T G.711 A-law expansion, for all 256 code words (even bits inverted on the wire).
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


MULAW_TO_PCM = _mulaw_table()
ALAW_TO_PCM = _alaw_table()


def _encode_table(table: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    # The code word whose expansion is nearest to each 16-bit value (ties to the lower code).
    order = np.argsort(table, kind="stable")
    values = table[order].astype(np.int32)
    grid = np.arange(-32768, 32768, dtype=np.int32)
    right = np.clip(np.searchsorted(values, grid), 1, len(values) - 1)
    left = right - 1
    nearer_left = (grid - values[left]) <= (values[right] - grid)
    return order[np.where(nearer_left, left, right)].astype(np.uint8)


_PCM_TO_MULAW = _encode_table(MULAW_TO_PCM)
_PCM_TO_ALAW = _encode_table(ALAW_TO_PCM)


def encode_g711(pcm: npt.NDArray[np.int16], encoding: G711) -> bytes:
    """Encode 16-bit samples as G.711 u-law or A-law bytes (what telephone platforms send)."""
    table = _PCM_TO_MULAW if encoding == "mulaw" else _PCM_TO_ALAW
    return table[pcm.astype(np.int32) + 32768].tobytes()


def encode_samples(pcm: npt.NDArray[np.int16], encoding: str) -> bytes:
    """Encode 16-bit samples of one channel as pcm_s16le, mulaw or alaw bytes."""
    if encoding == "pcm_s16le":
        return pcm.astype("<i2").tobytes()
    if encoding in ("mulaw", "alaw"):
        return encode_g711(pcm, encoding)  # type: ignore[arg-type]
    raise ValueError(f"unknown audio encoding {encoding!r}; known: pcm_s16le, mulaw, alaw")


def read_recording(path: Path, rate: int) -> list[npt.NDArray[np.int16]]:
    """A wav/flac/ogg recording as 16-bit samples at `rate`, one array per channel."""
    import soundfile  # type: ignore[import-untyped]
    import soxr  # type: ignore[import-untyped]

    data, source_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    channels = []
    for ch in range(data.shape[1]):
        samples = np.ascontiguousarray(data[:, ch], dtype=np.float32)
        if int(source_rate) != rate:
            samples = np.asarray(soxr.resample(samples, int(source_rate), rate, quality="HQ"))
        channels.append(np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16))
    return channels
