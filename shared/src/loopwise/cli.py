"""`loopwise`: topic catalogue, schemas and docs commands for platform teams."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from loopwise.config_files import ConfigFileError
from loopwise.settings import ConfigurationError, KafkaSettings, load_settings


def _topics_apply(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AdminClient

    from loopwise.topics import apply_catalogue, load_catalogue

    cat = load_catalogue(args.catalogue)
    kafka = load_settings(KafkaSettings)
    errors_seen: list[Any] = []
    conf: dict[str, Any] = {
        **kafka.librdkafka(),
        "error_cb": errors_seen.append,
        "logger": _quiet_librdkafka(),
    }
    admin = AdminClient(conf)
    problem = _unreachable(admin, errors_seen, timeout_s=args.timeout)
    if problem is not None:
        print(
            f"error: Kafka at {kafka.bootstrap_servers} ({kafka.security_protocol}): {problem}",
            file=sys.stderr,
        )
        return 2
    actions = apply_catalogue(
        admin, cat, dry_run=args.dry_run, strict_replication=args.strict_replication
    )
    verb = "would" if args.dry_run else "did"
    for action in actions:
        print(f"{action.action:15} {action.topic}  {action.detail}")
    errors = [a for a in actions if a.action == "error"]
    changed = [a for a in actions if a.action in ("create", "add_partitions", "alter_config")]
    print(
        f"{len(cat.topics)} topics on {kafka.bootstrap_servers}: {verb} change {len(changed)}, "
        f"{len(errors)} error(s)"
    )
    return 1 if errors else 0


def _quiet_librdkafka() -> logging.Logger:
    """librdkafka's own retry lines stay out of the CLI's output; its errors are summarised."""
    logger = logging.getLogger("librdkafka.topics")
    logger.setLevel(logging.CRITICAL)
    return logger


def _unreachable(admin: Any, errors_seen: list[Any], *, timeout_s: float) -> str | None:
    """None once the cluster answers a metadata request; else why not (failed login at once)."""
    from confluent_kafka import KafkaError, KafkaException

    deadline = time.monotonic() + timeout_s
    while True:
        admin.poll(0)  # serves error_cb
        for err in errors_seen:
            if err.code() == KafkaError._AUTHENTICATION:
                return f"authentication failed: {err.str()}"
        try:
            admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            return None
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                last = errors_seen[-1] if errors_seen else exc.args[0]  # both KafkaError
                return f"no answer within {timeout_s:g} s: {last.str()}"


def _topics_list(args: argparse.Namespace) -> int:
    from loopwise.topics import load_catalogue

    cat = load_catalogue(args.catalogue)
    for spec in cat.topics:
        print(f"{spec.label:28} {spec.name:42} partitions={cat.partitions(spec)} key={spec.key}")
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from loopwise.schemas import schema_drift, write_schemas

    if args.check:
        problems = schema_drift(args.dir)
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    for path in write_schemas(args.dir):
        print(path)
    return 0


def _docs_events(args: argparse.Namespace) -> int:
    from loopwise.schemas import render_events_doc

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_events_doc(), encoding="utf-8")
    print(args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `loopwise`."""
    parser = argparse.ArgumentParser(prog="loopwise", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    topics = sub.add_parser("topics", help="the topic catalogue")
    tsub = topics.add_subparsers(dest="topics_command", required=True)
    apply = tsub.add_parser("apply", help="create or update every topic (KAFKA_* settings)")
    apply.add_argument(
        "--catalogue", type=Path, default=None, help="catalogue file (default: shipped)"
    )
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.add_argument(
        "--strict-replication",
        action="store_true",
        help="fail instead of capping replication to the broker count",
    )
    apply.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the cluster to answer (a failed login stops at once)",
    )
    apply.set_defaults(func=_topics_apply)
    listing = tsub.add_parser("list", help="print the catalogue")
    listing.add_argument("--catalogue", type=Path, default=None)
    listing.set_defaults(func=_topics_list)

    schemas = sub.add_parser("schemas", help="write (or --check) the JSON Schemas of every event")
    schemas.add_argument("dir", type=Path, nargs="?", default=Path("shared/schemas"))
    schemas.add_argument("--check", action="store_true", help="exit 1 if the files drifted")
    schemas.set_defaults(func=_schemas)

    docs = sub.add_parser("docs", help="generate documentation")
    dsub = docs.add_subparsers(dest="docs_command", required=True)
    events = dsub.add_parser("events", help="write the topic and event catalogue page")
    events.add_argument("--out", type=Path, default=Path("docs/events.md"))
    events.set_defaults(func=_docs_events)
    return parser


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Run the sub-command's `func`; a configuration error exits 2 with file, line and rule."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        return int(exc.code or 2)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `loopwise`."""
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
