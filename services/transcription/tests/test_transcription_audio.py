"""Audio decoding: G.711 tables against the ITU values, resampling, files and raw input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loopwise_transcription.audio import (
    ALAW_TO_PCM,
    MULAW_TO_PCM,
    AudioFormatError,
    StreamResampler,
    decode_chunk,
    encode_g711,
    looks_like_text,
    read_audio_file,
    to_pcm16,
)


def test_g711_tables_match_the_itu_code_words() -> None:
    # G.711 u-law: 0xFF and 0x7F are the two zeros, 0x80 / 0x00 the extremes.
    assert MULAW_TO_PCM[0xFF] == 0 and MULAW_TO_PCM[0x7F] == 0
    assert MULAW_TO_PCM[0x80] == 32124 and MULAW_TO_PCM[0x00] == -32124
    # G.711 A-law: 0xD5 / 0x55 are the smallest steps, 0xAA / 0x2A the extremes.
    assert ALAW_TO_PCM[0xD5] == 8 and ALAW_TO_PCM[0x55] == -8
    assert ALAW_TO_PCM[0xAA] == 32256 and ALAW_TO_PCM[0x2A] == -32256
    # Both expansions are odd-symmetric and monotonic over magnitude.
    assert sorted(set(np.abs(MULAW_TO_PCM.astype(int)))) == sorted(
        set(np.abs(MULAW_TO_PCM[:128].astype(int)))
    )
    assert len(set(ALAW_TO_PCM.tolist())) == 256


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
def test_g711_round_trip_keeps_a_tone(encoding: str) -> None:
    t = np.arange(8000) / 8000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    decoded = to_pcm16(encode_g711(tone, encoding), encoding)  # type: ignore[arg-type]
    error = np.abs(decoded.astype(int) - tone.astype(int))
    # Companding error grows with amplitude: under 4% of the value (plus the smallest step).
    assert np.all(error <= 0.04 * np.abs(tone.astype(int)) + 16)


def test_pcm_chunk_decodes_and_torn_samples_are_refused() -> None:
    pcm = np.array([0, 16384, -16384, 32767], dtype="<i2").tobytes()
    assert decode_chunk(pcm, "pcm_s16le", 16000).tolist() == pytest.approx(
        [0.0, 0.5, -0.5, 32767 / 32768]
    )
    with pytest.raises(AudioFormatError, match="even byte count"):
        decode_chunk(pcm[:-1], "pcm_s16le", 16000)
    with pytest.raises(AudioFormatError, match="unknown audio encoding"):
        decode_chunk(pcm, "g729", 8000)
    with pytest.raises(AudioFormatError, match="unsupported sample rate"):
        decode_chunk(pcm, "pcm_s16le", 44100)


def test_streamed_resampling_keeps_pitch_and_length() -> None:
    rate = 8000
    t = np.arange(rate * 2) / rate
    tone = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    resampler = StreamResampler(rate)
    pieces = [resampler.push(tone[i : i + 160]) for i in range(0, tone.size, 160)]
    pieces.append(resampler.push(np.zeros(0, dtype=np.float32), last=True))
    out = np.concatenate(pieces)
    assert abs(out.size - 32000) <= 64
    spectrum = np.abs(np.fft.rfft(out[4000:20000]))
    peak_hz = np.argmax(spectrum) * 16000 / 16000
    assert abs(peak_hz - 300) <= 2


def test_text_in_place_of_audio_is_recognised() -> None:
    assert looks_like_text(b'{"hello": "this is json, not audio samples"}' * 4)
    noise = np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    assert not looks_like_text(noise)
    assert not looks_like_text(b"\xff" * 1600)  # u-law silence
    assert not looks_like_text(b"U" * 1600)  # A-law, a constant small negative value


def test_stereo_file_gives_one_channel_per_party(asr_data: Path) -> None:
    channels = read_audio_file(asr_data / "fasterwhisper_stereo_diarization.wav")
    assert [c.index for c in channels] == [0, 1]
    assert all(c.samples.size == 80000 for c in channels)
    assert not np.allclose(channels[0].samples, channels[1].samples)


def test_raw_mulaw_file_reads_like_the_wav(asr_data: Path, tmp_path: Path) -> None:
    import soundfile  # type: ignore[import-untyped]

    pcm, _ = soundfile.read(str(asr_data / "asterisk_8k_agent-pass.wav"), dtype="int16")
    raw = tmp_path / "prompt.ulaw"
    raw.write_bytes(encode_g711(pcm, "mulaw"))
    (from_raw,) = read_audio_file(raw, raw_encoding="mulaw", raw_rate=8000)
    (from_wav,) = read_audio_file(asr_data / "asterisk_8k_agent-pass.wav")
    assert from_raw.samples.size == from_wav.samples.size == pcm.size * 2
    assert np.corrcoef(from_raw.samples, from_wav.samples)[0, 1] > 0.99
    with pytest.raises(AudioFormatError):
        read_audio_file(tmp_path / "prompt.ulaw")  # headerless bytes need the raw flags
