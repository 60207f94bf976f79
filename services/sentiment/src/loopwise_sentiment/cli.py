"""`loopwise-sentiment`: run the service, score JSON lines offline, or check the configuration."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from loopwise.config_files import ConfigFileError
from loopwise.logging import configure_logging, get_logger
from loopwise.settings import ConfigurationError, load_settings
from loopwise_sentiment.batch import LineError, annotate_lines
from loopwise_sentiment.config import SERVICE, AggregationSettings, SentimentSettings
from loopwise_sentiment.models import ModelLoadError, load_model


@contextmanager
def _open_input(name: str) -> Iterator[TextIO]:
    if name == "-":
        yield sys.stdin
    else:
        with Path(name).open(encoding="utf-8") as handle:
            yield handle


def _batch(args: argparse.Namespace) -> int:
    name = args.model or ("vader-calibrated" if args.calibration else "vader-ngram")
    model = load_model(name, {"calibration": args.calibration} if args.calibration else {})
    settings = AggregationSettings(speakers=args.speakers, window=args.window)
    errors = 0
    with _open_input(args.input) as source:
        for out in annotate_lines(source, model, settings):
            if isinstance(out, LineError):
                errors += 1
                print(f"{args.input}:{out.number}: {out.reason}", file=sys.stderr)
            else:
                sys.stdout.write(out + "\n")
    sys.stdout.flush()
    return 1 if errors else 0


def _calibrate(args: argparse.Namespace) -> int:
    import json

    from loopwise_sentiment.evaluation import Example, cross_validate, fit_examples
    from loopwise_sentiment.models.calibration import write_calibration

    truth: dict[object, bool] = {"positive": True, "negative": False, 1: True, 0: False}
    examples: list[Example] = []
    skipped = 0
    with _open_input(args.input) as source:
        for number, raw in enumerate(source, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                text, label = row["text"], row[args.label_field]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                print(f"{args.input}:{number}: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 2
            if not isinstance(text, str) or label not in truth:  # neutral: not binary
                skipped += 1
                continue
            examples.append(Example(text, truth[label]))
    if len(examples) < 20 or len({e.positive for e in examples}) < 2:
        print(f"error: need >= 20 rows of both classes, got {len(examples)}", file=sys.stderr)
        return 2
    fitted = fit_examples(examples, version=args.version, fitted_on={"data": Path(args.input).name})
    write_calibration(fitted, args.out)
    cv = cross_validate(examples, folds=args.folds)
    print(f"fitted {args.version} on {len(examples)} rows ({skipped} neutral/other skipped)")
    print(
        f"{args.folds}-fold CV of this fitting: accuracy {cv['accuracy']:.1%}, rest accuracy "
        f"{cv['rest_accuracy_10']:.1%} / {cv['rest_accuracy_20']:.1%} when the least-confident "
        f"10% / 20% go to people, error ratio {cv['error_ratio_20']:.2f}"
    )
    print(f"wrote {args.out}; use it with LOOPWISE_SENTIMENT_MODEL=vader-calibrated and")
    print(f'LOOPWISE_SENTIMENT_MODEL_OPTIONS=\'{{"calibration": "{args.out}"}}\'')
    return 0


def _settings() -> SentimentSettings:
    return load_settings(SentimentSettings)  # type: ignore[call-arg]


def _run(args: argparse.Namespace) -> int:
    from loopwise.kafka import serve
    from loopwise_sentiment.worker import build_worker

    settings = _settings()
    obs = settings.observability
    configure_logging(SERVICE, log_format=obs.log_format, level=obs.log_level)
    worker, store = build_worker(settings)
    model = worker.handler.model  # type: ignore[attr-defined]
    get_logger(__name__).info(
        "sentiment_model", model=model.name, version=model.version, state=str(settings.state_path)
    )
    try:
        serve(worker)
    finally:
        store.close()
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from loopwise_sentiment.state import SqliteStateStore

    settings = _settings()
    model = load_model(settings.model, settings.model_options)
    probe = model.score("thank you, that was really helpful")
    store = SqliteStateStore(settings.state_path, settings.retain_ended_calls)
    calls = store.call_count()
    store.close()
    print(f"model: {model.name} {model.version} (probe: {probe.label} {probe.confidence:.2f})")
    print(f"inputs: {', '.join(settings.input_topics)} -> {settings.output_topic}")
    print(f"dead letters: {settings.dead_letter_topic}; group: {settings.group_id}")
    print(f"state: {settings.state_path} ({calls} calls held)")
    print("configuration OK")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `loopwise-sentiment`."""
    parser = argparse.ArgumentParser(prog="loopwise-sentiment", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    batch = sub.add_parser("batch", help="add sentiment to JSON lines (segments or dialogues)")
    batch.add_argument("input", nargs="?", default="-", help="JSON-lines file, or - for stdin")
    batch.add_argument(
        "--model",
        default=None,
        help="entry-point name or package.module:factory "
        "(default vader-ngram; vader-calibrated with --calibration)",
    )
    batch.add_argument("--calibration", default=None, help="calibration file (vader-calibrated)")
    batch.add_argument(
        "--speakers", nargs="+", default=["customer"], help="sides aggregated per call"
    )
    batch.add_argument("--window", type=int, default=3, help="turns in the rolling window")
    batch.set_defaults(func=_batch)
    cal = sub.add_parser(
        "calibrate", help="fit a vader-calibrated file from labelled text (e.g. reviewer relabels)"
    )
    cal.add_argument("input", help="JSON lines with text and a positive/negative (or 1/0) label")
    cal.add_argument("--out", type=Path, required=True, help="calibration file to write")
    cal.add_argument("--version", required=True, help="calibration version, e.g. cal-2026-12")
    cal.add_argument("--label-field", default="label", help="field holding the label")
    cal.add_argument("--folds", type=int, default=5, help="cross-validation folds to report")
    cal.set_defaults(func=_calibrate)
    run = sub.add_parser("run", help="run the Kafka service (LOOPWISE_SENTIMENT_* settings)")
    run.set_defaults(func=_run)
    check = sub.add_parser("check-config", help="validate settings, model and state store")
    check.set_defaults(func=_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `loopwise-sentiment`."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigFileError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        return int(exc.code or 2)


if __name__ == "__main__":
    sys.exit(main())
