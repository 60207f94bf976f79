"""The streaming utterance cutter on real speech (Silero VAD, no recogniser)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loopwise_transcription.audio import read_audio_file
from loopwise_transcription.vad import Cut, Recorder, UtteranceCutter, VadParams


def feed_all(cutter: UtteranceCutter, samples: np.ndarray, step: int = 1600) -> list[Cut]:
    cuts: list[Cut] = []
    for at in range(0, samples.size, step):
        cuts += cutter.feed(samples[at : at + step])
    return cuts + cutter.flush()


def prompt(asr_data: Path, name: str) -> np.ndarray:
    return read_audio_file(asr_data / name)[0].samples


def test_an_utterance_between_silences_is_cut_once_with_padding(asr_data: Path) -> None:
    speech = prompt(asr_data, "asterisk_8k_pls-hold-while-try.wav")
    silence = np.zeros(16000, dtype=np.float32)
    cutter = UtteranceCutter(VadParams())
    cuts = feed_all(cutter, np.concatenate([silence, speech, silence, silence]), step=320)
    (cut,) = cuts
    assert cut.reason == "silence"  # ended by the silence, before the stream ended
    assert 16000 - 3200 - 512 <= cut.start <= 16000 + 3200
    assert cut.end - cut.start >= 0.8 * speech.size * 0.8
    assert cut.samples.size == cut.end - cut.start
    # Silence before and after is not kept in the buffer.
    assert cutter.buffer.size <= 3200 + 1600


def test_long_speech_is_split_at_the_maximum_in_a_pause(asr_data: Path) -> None:
    speech = prompt(asr_data, "asterisk_8k_demo-echotest.wav")  # 22 s, only short pauses
    params = VadParams(max_utterance=10 * 16000)
    cuts = feed_all(UtteranceCutter(params), speech)
    assert [c.reason for c in cuts][:2] == ["max_length", "max_length"]
    first = cuts[0]
    assert first.end - first.start <= params.max_utterance
    # The cut lies in a pause: quieter around it than the speech on average.
    around = speech[first.end - 800 : first.end + 800]
    assert np.sqrt(np.mean(around**2)) < 0.5 * np.sqrt(np.mean(speech**2))
    # Consecutive: nothing lost, nothing twice.
    assert cuts[1].start == first.end


def test_a_hole_in_the_audio_publishes_open_speech_and_moves_on(asr_data: Path) -> None:
    speech = prompt(asr_data, "asterisk_8k_agent-pass.wav")
    cutter = UtteranceCutter(VadParams())
    cutter.feed(speech[:24000])
    assert cutter.triggered
    (cut,) = cutter.skip_to(cutter.position + 80000)
    assert cut.reason == "flush" and not cutter.triggered
    assert cutter.position == 24000 + 80000 and cutter.buffer.size == 0


def test_the_post_call_recorder_keeps_everything_and_fills_holes() -> None:
    recorder = Recorder(max_samples=16000 * 60)
    tone = np.ones(8000, dtype=np.float32) * 0.1
    assert recorder.feed(tone) == []
    assert recorder.skip_to(16000) == []
    assert recorder.feed(tone) == []
    (cut,) = recorder.flush()
    assert (cut.start, cut.end, cut.reason) == (0, 24000, "recording")
    assert np.all(cut.samples[8000:16000] == 0) and np.all(cut.samples[16000:] == 0.1)
