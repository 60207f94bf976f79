"""`loopwise-transcription batch` and `check-config`, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loopwise_transcription.audio import encode_g711
from services.transcription.tests.transcription_helpers import PROMPTS, pcm8k, word_errors
from tests.support.card_numbers import holds_test_card

STEREO = "fasterwhisper_stereo_diarization.wav"
LINE_FIELDS = {"file", "text", "start", "end", "speaker", "confidence", "language", "redactions"}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loopwise_transcription", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_batch_transcribes_stereo_as_two_parties_and_raw_mulaw(
    asr_data: Path, tmp_path: Path
) -> None:
    raw = tmp_path / "call.ulaw"
    raw.write_bytes(encode_g711(pcm8k("phone"), "mulaw"))
    result = cli("batch", str(asr_data / STEREO), "--no-progress", "--words")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(set(line) >= LINE_FIELDS for line in lines)
    assert all(line["words"] and line["words"][0]["start_s"] >= line["start"] for line in lines)
    speakers = {line["speaker"]: line["text"] for line in lines}
    assert set(speakers) == {"agent", "customer"}
    assert word_errors("the horizon seems extremely distant", speakers["customer"]) < 0.3
    assert (
        word_errors(
            "he began a confused complaint against the wizard who had vanished behind the "
            "curtain on the left",
            speakers["agent"],
        )
        < 0.3
    )

    raw_result = cli(
        "batch", str(raw), "--raw-encoding", "mulaw", "--raw-rate", "8000", "--roles", "customer"
    )
    assert raw_result.returncode == 0, raw_result.stderr[-2000:]
    (line,) = [json.loads(x) for x in raw_result.stdout.splitlines()]
    assert line["speaker"] == "customer" and line["language"] == "en"
    assert word_errors(PROMPTS["phone"][1], line["text"]) < 0.3
    assert 0 < line["confidence"] <= 1 and line["end"] > line["start"]
    assert line["words"] == []  # word timings only with --words


def write_mp3(path: Path, pcm: np.ndarray, rate: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp3", rate=rate)
        stream.layout = "mono"  # type: ignore[union-attr]
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:  # type: ignore[union-attr]
            container.mux(packet)


def test_batch_reads_mp3_reports_unreadable_files_and_goes_on(
    asr_data: Path, tmp_path: Path
) -> None:
    junk = tmp_path / "notes.wav"
    junk.write_text("not audio at all")
    mp3 = tmp_path / "prompt.mp3"
    write_mp3(mp3, pcm8k("hold"), 8000)
    result = cli("batch", str(junk), str(mp3))
    assert result.returncode == 1
    assert "notes.wav" in result.stderr
    (line,) = [json.loads(x) for x in result.stdout.splitlines()]
    assert line["file"] == str(mp3) and line["speaker"] == "mixed"
    assert word_errors(PROMPTS["hold"][1], line["text"]) < 0.3


def test_batch_text_redacts_external_segments_and_passes_other_fields(tmp_path: Path) -> None:
    source = tmp_path / "external.jsonl"
    rows = [
        {
            "call_id": "c1",
            "speaker": "customer",
            "start_s": 1.5,
            "text": "card 4111-1111-1111-1111",
        },
        {
            "call_id": "c1",
            "speaker": "customer",
            "text": "my social is 123-45-6789",
            "words": [
                {"word": w, "start_s": i * 0.5}
                for i, w in enumerate(["my", "social", "is", "123-45-6789"])
            ],
            "queue": "billing",
        },
        {"call_id": "c1", "speaker": "agent", "text": "we open at 9 and it costs 40 dollars"},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("batch", "--text", str(source))
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["text"] for o in out] == [
        "card [CARD_NUMBER]",
        "my social is [SSN]",
        "we open at 9 and it costs 40 dollars",
    ]
    assert out[0]["start_s"] == 1.5 and out[1]["queue"] == "billing"
    assert [w["word"] for w in out[1]["words"]] == ["my", "social", "is", "[SSN]"]
    assert out[1]["redactions"][0]["type"] == "US_SSN"
    assert not holds_test_card(result.stdout) and "6789" not in result.stdout

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 5, "secret": "4111 1111 1111 1111"}\n')
    result = cli("batch", "--text", str(bad))
    assert result.returncode == 1
    assert "line 2" in result.stderr and not holds_test_card(result.stderr)


def test_check_config_accepts_defaults_and_names_the_broken_vocabulary_line(
    tmp_path: Path,
) -> None:
    good = tmp_path / "vocabulary.yaml"
    good.write_text("default: [Loopwise]\nacme:\n  - Acme Platinum\n  - AutoPay\n")
    result = cli(
        "check-config", "--no-kafka", env={"LOOPWISE_TRANSCRIPTION_VOCABULARY_FILE": str(good)}
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["vocabulary_tenants"] == ["acme", "default"]
    assert summary["model"]["name"].startswith("whisper-tiny")

    bad = tmp_path / "broken.yaml"
    bad.write_text("acme:\n  - AutoPay\n  - ''\n")
    result = cli(
        "check-config", "--no-kafka", env={"LOOPWISE_TRANSCRIPTION_VOCABULARY_FILE": str(bad)}
    )
    assert result.returncode == 2
    assert f"{bad}:3" in result.stderr

    result = cli(
        "check-config", "--no-kafka", env={"LOOPWISE_TRANSCRIPTION_MODEL_DIR": str(tmp_path)}
    )
    assert result.returncode == 2
    assert "LOOPWISE_TRANSCRIPTION_MODEL_DIR" in result.stderr and "model.bin" in result.stderr

    result = cli("check-config", "--no-kafka", env={"LOOPWISE_TRANSCRIPTION_BEAM_SIZE": "0"})
    assert result.returncode == 2
    assert "LOOPWISE_TRANSCRIPTION_BEAM_SIZE" in result.stderr


@pytest.mark.parametrize("flags", [["--raw-encoding", "mulaw"]])
def test_raw_input_needs_a_rate(flags: list[str], tmp_path: Path) -> None:
    result = cli("batch", str(tmp_path / "x.raw"), *flags)
    assert result.returncode == 2 and "--raw-rate" in result.stderr
