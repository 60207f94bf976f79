"""`loopwise-transcription`: `run` (the Kafka service), `batch` (files) and `check-config`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, cast

from loopwise.config_files import ConfigFileError
from loopwise.events.base import PartyRole
from loopwise.settings import ConfigurationError, load_settings
from loopwise_transcription.audio import ENCODINGS, AudioFormatError
from loopwise_transcription.config import AsrSettings, TranscriptionSettings, Vocabulary
from loopwise_transcription.engine import ModelNotFound

ROLES = ("agent", "customer", "ivr", "supervisor", "mixed", "unknown")


def _run(args: argparse.Namespace) -> int:
    from loopwise.kafka.worker import serve
    from loopwise.logging import configure_logging
    from loopwise_transcription.engine import Engine
    from loopwise_transcription.handler import TranscriptionHandler
    from loopwise_transcription.worker import TranscriptionWorker

    settings = load_settings(TranscriptionSettings)
    asr = load_settings(AsrSettings)
    obs = settings.observability
    configure_logging("transcription", log_format=obs.log_format, level=obs.log_level)
    vocabulary = Vocabulary.load(asr.vocabulary_file)
    engine = Engine(asr)
    handler = TranscriptionHandler(settings, asr, engine, vocabulary)
    serve(
        TranscriptionWorker(
            handler=handler, settings=settings, output_topics=[settings.output_topic]
        )
    )
    return 0


def _batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # type: ignore[import-untyped]

    if args.text:
        return _batch_text(args.files)
    from loopwise_transcription.batch import segment_line, transcribe_recording
    from loopwise_transcription.engine import Engine

    asr = load_settings(AsrSettings)
    if args.words:
        asr = asr.model_copy(update={"batch_word_timestamps": True})
    vocabulary = Vocabulary.load(asr.vocabulary_file).for_tenant(args.tenant)
    roles = cast(list[PartyRole], args.roles.split(",")) if args.roles else None
    if roles and any(r not in ROLES for r in roles):
        print(f"--roles takes {', '.join(ROLES)}", file=sys.stderr)
        return 2
    raw = (
        {
            "raw_encoding": args.raw_encoding,
            "raw_rate": args.raw_rate,
            "raw_channels": args.raw_channels,
        }
        if args.raw_encoding
        else None
    )
    engine = Engine(asr)
    failed = 0
    disable = None if args.progress is None else not args.progress
    with tqdm(args.files, unit="file", file=sys.stderr, disable=disable) as bar:
        for name in bar:
            path = Path(name)
            try:
                segments, _, _ = transcribe_recording(
                    engine,
                    path,
                    tenant_id=args.tenant,
                    roles=roles,
                    language=args.language,
                    vocabulary=vocabulary,
                    raw=raw,
                )
            except (AudioFormatError, OSError, ValueError) as exc:
                failed += 1
                bar.write(f"{path}: {exc}", file=sys.stderr)
                continue
            for segment in segments:
                print(json.dumps(segment_line(path, segment), ensure_ascii=False), flush=True)
    return 1 if failed else 0


def _batch_text(files: list[str]) -> int:
    from loopwise_transcription.batch import BadLine, redact_external_lines

    failed = 0
    for name in files:
        path = Path(name)
        try:
            with path.open(encoding="utf-8") as lines:
                for record in redact_external_lines(lines):
                    print(json.dumps({"file": str(path), **record}, ensure_ascii=False))
        except (BadLine, OSError, UnicodeDecodeError) as exc:
            failed += 1
            # The reason names the line, never its content (it may hold PII).
            print(f"{path}: {type(exc).__name__}: {_safe(exc)}", file=sys.stderr)
    return 1 if failed else 0


def _safe(exc: Exception) -> str:
    from loopwise_transcription.batch import BadLine

    return str(exc) if isinstance(exc, BadLine | OSError) else "not UTF-8 text"


def _check_config(args: argparse.Namespace) -> int:
    from loopwise_transcription.engine import Engine, bundled_model_dir

    asr = load_settings(AsrSettings)
    vocabulary = Vocabulary.load(asr.vocabulary_file)
    summary: dict[str, Any] = {
        "model_dir": str(asr.model_dir or bundled_model_dir()),
        "device": asr.device,
        "compute_type": asr.compute_type,
        "beam_size": asr.beam_size,
        "language": asr.language,
        "vocabulary_tenants": sorted(vocabulary.terms),
    }
    if not args.no_kafka:
        settings = load_settings(TranscriptionSettings)
        summary.update(
            inputs=settings.input_topics,
            output=settings.output_topic,
            dead_letters=settings.dead_letter_topic,
            group_id=settings.group_id,
        )
    engine = Engine(asr)
    summary["model"] = engine.ref.model_dump()
    print(json.dumps(summary, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="loopwise-transcription", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the Kafka service")
    run.set_defaults(func=_run)
    batch = sub.add_parser("batch", help="transcribe files; print one JSON line per segment")
    batch.add_argument("files", nargs="+", help="wav, flac, mp3, ... or raw (see --raw-*)")
    batch.add_argument(
        "--text", action="store_true", help="files are external transcript JSON lines: redact"
    )
    batch.add_argument("--raw-encoding", choices=ENCODINGS, help="headerless samples")
    batch.add_argument("--raw-rate", type=int, choices=(8000, 16000), help="raw sample rate")
    batch.add_argument("--raw-channels", type=int, choices=(1, 2), default=1)
    batch.add_argument("--roles", help="speaker role per channel, e.g. agent,customer")
    batch.add_argument("--tenant", default="batch", help="tenant (for its vocabulary)")
    batch.add_argument("--language", help="force a language code (default: settings)")
    batch.add_argument(
        "--words", action="store_true", help="word timings and probabilities (~15%% slower)"
    )
    batch.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    batch.set_defaults(func=_batch)
    check = sub.add_parser("check-config", help="validate settings, vocabulary and model")
    check.add_argument(
        "--no-kafka", action="store_true", help="check only what batch needs (no Kafka settings)"
    )
    check.set_defaults(func=_check_config)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = parser().parse_args(argv)
    if getattr(args, "raw_encoding", None) and not args.raw_rate:
        print("--raw-encoding needs --raw-rate", file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except (ConfigFileError, ModelNotFound) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2


if __name__ == "__main__":
    sys.exit(main())
