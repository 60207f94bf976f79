"""`loopwise-feedback`: run the exporter, report model-vs-human quality, rewrite training sets."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from loopwise.logging import configure_logging
from loopwise.settings import ConfigurationError, load_settings
from loopwise_feedback.config import SERVICE, FeedbackSettings
from loopwise_feedback.quality import QualityReport, quality_report
from loopwise_feedback.store import count_pending, count_rows

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `24h` or `7d`."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 3600, 15m, 24h, 7d)")
    return float(match.group(1)) * _UNIT[match.group(2)]


def parse_time(text: str) -> float:
    """Unix seconds from an RFC 3339 time with an offset."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError("give a UTC offset, e.g. 2026-11-25T12:00:00+00:00")
    return at.timestamp()


def _open_store(root: Path) -> sqlite3.Connection:
    path = root / "feedback.sqlite"
    if not path.exists():
        raise SystemExit(f"no state store at {path}: has the exporter run with this root?")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return [f"{title}: none in window", ""]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
    out = [title, line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return [*out, ""]


def render_report(report: QualityReport, totals: dict[str, Any]) -> str:
    """The report as readable tables."""
    lines = [
        f"window: {report.window_start or '-'} .. {report.window_end or '-'} "
        f"({report.window_s / 3600:g} h of event time)",
        "training rows (all time): "
        + ", ".join(f"{k}={v}" for k, v in sorted(totals["rows"].items()))
        + f"; decisions waiting for their task: {totals['pending']}",
        "",
    ]
    lines += _table(
        "ASR word error rate (machine vs reviewed text)",
        ["model", "version", "segments", "corrected", "ref_words", "errors", "wer"],
        [
            [
                *(a.model_name, a.model_version, str(a.segments), str(a.corrected)),
                *(str(a.reference_words), str(a.errors), _fmt(a.wer, 4)),
            ]
            for a in report.asr
        ],
    )
    lines += _table(
        "Sentiment agreement (model vs reviewer)",
        ["model", "version", "pairs", "agree", "accuracy", "kappa"],
        [
            [
                *(s.model_name, s.model_version, str(s.pairs), str(s.agree)),
                *(_fmt(s.accuracy), _fmt(s.kappa)),
            ]
            for s in report.sentiment
        ],
    )
    lines += _table(
        "Compliance precision per rule",
        ["pack", "version", "rule", "confirmed", "dismissed", "precision"],
        [
            [
                *(r.pack_name, r.pack_version, r.rule_id, str(r.confirmed), str(r.dismissed)),
                _fmt(r.precision),
            ]
            for r in report.compliance
        ],
    )
    lines += _table(
        "Released items",
        ["policy", "total", "auto", "sampled", "reviewed", "expired", "auto_share"],
        [
            [r.policy_version, str(r.total)]
            + [str(r.counts[k]) for k in ("auto", "sampled", "reviewed", "expired")]
            + [_fmt(r.shares["auto"])]
            for r in report.releases
        ],
    )
    lines += _table(
        "Time to decision (task created -> decided), seconds",
        ["policy", "decisions", "mean", "p50", "p90", "handling_mean"],
        [
            [
                *(d.policy_version, str(d.decisions), _fmt(d.mean_s, 1), _fmt(d.p50_s, 1)),
                *(_fmt(d.p90_s, 1), _fmt(d.mean_handling_s, 1)),
            ]
            for d in report.decisions
        ],
    )
    return "\n".join(lines).rstrip() + "\n"


def _settings() -> FeedbackSettings:
    return load_settings(FeedbackSettings)


def _report(args: argparse.Namespace) -> int:
    root: Path = args.root or _settings().root
    window: float = (
        args.window
        if args.window is not None
        else FeedbackSettings.model_fields["window_s"].get_default()
    )
    conn = _open_store(root)
    try:
        report = quality_report(conn, window, args.until)
        totals = {"rows": count_rows(conn), "pending": count_pending(conn)}
    finally:
        conn.close()
    if args.json:
        print(json.dumps({**report.to_dict(), "totals": totals}, indent=2, sort_keys=True))
    else:
        sys.stdout.write(render_report(report, totals))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from loopwise_feedback.export import publish
    from loopwise_feedback.store import connect

    root: Path = args.root or _settings().root
    if not (root / "feedback.sqlite").exists():
        raise SystemExit(f"no state store at {root / 'feedback.sqlite'}")
    conn = connect(root / "feedback.sqlite")
    try:
        written = publish(conn, root, everything=args.all)
    finally:
        conn.close()
    print(f"rewrote {len(written)} training set(s) under {root}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from loopwise_feedback.batch import build_from_lines
    from loopwise_feedback.export import publish
    from loopwise_feedback.store import FeedbackStore
    from loopwise_feedback.worker import Exporter

    root: Path = args.root
    store = FeedbackStore(root / "feedback.sqlite")
    exporter = Exporter(store, args.audio_path_template)
    try:
        if args.input == "-":
            result = build_from_lines(sys.stdin, exporter)
        else:
            with Path(args.input).open(encoding="utf-8") as fh:
                result = build_from_lines(fh, exporter)
        written = publish(store.conn, root)
    finally:
        store.close()
    for number, reason in result.errors[:20]:
        print(f"{args.input}:{number}: {reason}", file=sys.stderr)
    print(
        f"stored {result.stored} event(s), {result.already_seen} already seen, "
        f"{len(result.errors)} unusable line(s); rewrote {len(written)} set(s) under {root}"
    )
    return 1 if result.errors else 0


def _check_config(_: argparse.Namespace) -> int:
    settings = _settings()
    root = settings.root
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigurationError(
            f"LOOPWISE_FEEDBACK_ROOT: {root} is not a writable folder ({exc})"
        ) from None
    print(f"ok: {SERVICE} reads {', '.join(settings.input_topics)}")
    print(f"    writes training sets and feedback.sqlite under {root.resolve()}")
    print(f"    dead letters to {settings.dead_letter_topic}; group {settings.group_id}")
    print(
        f"    quality window {settings.window_s:g} s;"
        f" publish every {settings.publish_interval_s:g} s"
    )
    return 0


def _run(_: argparse.Namespace) -> int:
    from loopwise_feedback.worker import run_service

    settings = _settings()
    obs = settings.observability
    configure_logging(SERVICE, log_format=obs.log_format, level=obs.log_level)
    run_service(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `loopwise-feedback`."""
    parser = argparse.ArgumentParser(prog="loopwise-feedback", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="consume decisions and outcomes (LOOPWISE_FEEDBACK_* settings)")
    sub.add_parser("check-config", help="validate settings and the data root, then exit")
    report = sub.add_parser("report", help="model-vs-human quality over a sliding window")
    report.add_argument("--root", type=Path, default=None, help="data root (default: settings)")
    report.add_argument(
        "--window", type=parse_duration, default=None, help="window, e.g. 24h or 7d"
    )
    report.add_argument(
        "--until", type=parse_time, default=None, help="window end (default: newest event)"
    )
    report.add_argument("--json", action="store_true", help="print JSON instead of tables")
    build = sub.add_parser("build", help="build training sets from a dump of the input topics")
    build.add_argument(
        "input", help="JSON lines (CloudEvents structured or bare events), - = stdin"
    )
    build.add_argument("--root", type=Path, required=True, help="data root to build into")
    build.add_argument(
        "--audio-path-template",
        default=FeedbackSettings.model_fields["audio_path_template"].get_default(),
        help="audio reference of the NeMo manifest",
    )
    pub = sub.add_parser("publish", help="rewrite training sets from the state store")
    pub.add_argument("--root", type=Path, default=None, help="data root (default: settings)")
    pub.add_argument("--all", action="store_true", help="rewrite every set, not only changed ones")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `loopwise-feedback`."""
    args = build_parser().parse_args(argv)
    commands = {
        "run": _run,
        "report": _report,
        "publish": _publish,
        "build": _build,
        "check-config": _check_config,
    }
    try:
        return commands[args.command](args)
    except ConfigurationError as exc:
        print(str(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
