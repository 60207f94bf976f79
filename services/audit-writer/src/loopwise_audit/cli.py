"""`loopwise-audit`: run the writer, check its settings, verify, export and tell a call's story.

Settings come from `LOOPWISE_AUDIT_*` variables (see docs/audit.md); the
database URL and checkpoint directory can be given as options too.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopwise.logging import configure_logging
from loopwise.settings import ConfigurationError, load_settings
from loopwise_audit.config import AuditWorkerSettings, TrailSettings
from loopwise_audit.handler import utc_text

EXIT_FAULT = 1


def _trail(args: argparse.Namespace) -> TrailSettings:
    overrides: dict[str, Any] = {}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    if getattr(args, "checkpoint_dir", None):
        overrides["checkpoint_dir"] = args.checkpoint_dir
    return load_settings(TrailSettings, **overrides)


def _open_store(settings: TrailSettings, *, create: bool = False) -> Any:
    """The store; read-only commands do not create (or alter) anything."""
    from loopwise_audit.store import AuditStore

    return AuditStore(settings.database_url, create=create)


def _no_table(store: Any) -> bool:
    if store.exists():
        return False
    url = store.engine.url.render_as_string(hide_password=True)
    print(f"no audit table at {url}", file=sys.stderr)
    return True


def _moment(text: str | None) -> str | None:
    """An RFC 3339 date or timestamp as the store's UTC text."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return utc_text(moment)


def _run(args: argparse.Namespace) -> int:
    from loopwise_audit.worker import AuditService

    settings = load_settings(AuditWorkerSettings)
    obs = settings.observability
    configure_logging("audit-writer", log_format=obs.log_format, level=obs.log_level)
    AuditService(settings).run(as_service=True)
    return 0


def _batch(args: argparse.Namespace) -> int:
    from loopwise_audit.worker import AuditService

    settings = load_settings(AuditWorkerSettings)
    obs = settings.observability
    configure_logging("audit-writer", log_format=obs.log_format, level=obs.log_level)
    consumed = AuditService(settings).run_until_idle(args.idle_s, args.timeout_s)
    print(f"consumed {consumed} events; stopped after {args.idle_s:g} s without input")
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings(AuditWorkerSettings)
    settings.keyring()
    store = _open_store(settings, create=True)
    try:
        with store.reader() as conn:
            tenants = store.tenants(conn)
            records = store.count(conn)
    finally:
        store.close()
    settings.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    probe = settings.checkpoint_dir / ".write-test"
    probe.write_text("ok", encoding="utf-8")
    probe.unlink()
    print(f"database:        {store.engine.url.render_as_string(hide_password=True)}")
    print(f"                 {records} records, {len(tenants)} tenant chain(s)")
    print(
        f"checkpoints:     {settings.checkpoint_dir} (writable), topic {settings.checkpoint_topic}"
    )
    print(
        f"checkpoint every {settings.checkpoint_every_records} records "
        f"or {settings.checkpoint_every_s:g} s; signing key {settings.key_id!r}"
    )
    print(f"consumes:        {', '.join(settings.input_topics)}")
    print(f"group:           {settings.group_id}; dead letters to {settings.dead_letter_topic}")
    print("configuration OK")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from loopwise_audit.checkpoints import load_checkpoints
    from loopwise_audit.evidence import verify_export
    from loopwise_audit.verify import verify_store

    settings = _trail(args)
    keys = settings.keyring()
    if args.export is not None:
        chain, problems = verify_export(args.export, keys)
        if chain.fault is not None:
            problems.insert(0, chain.fault.describe())
        for problem in problems:
            print(f"FAULT {problem}")
        print(
            f"export {args.export}: records {chain.records}, checkpoints matched "
            f"{chain.checkpoints}: {'FAULT' if problems else 'OK'}"
        )
        return EXIT_FAULT if problems else 0
    checkpoints = load_checkpoints(settings.checkpoint_dir)
    print(f"checkpoints: {checkpoints.count()} in {settings.checkpoint_dir}")
    if args.topic:
        from loopwise.settings import KafkaSettings
        from loopwise_audit.worker import read_checkpoint_topic

        on_topic = read_checkpoint_topic(load_settings(KafkaSettings), settings.checkpoint_topic)
        print(f"checkpoints: {on_topic.count()} on topic {settings.checkpoint_topic}")
        checkpoints = checkpoints.merged(on_topic)
    store = _open_store(settings)
    try:
        report = verify_store(
            store,
            checkpoints,
            keys,
            tenants=[args.tenant] if args.tenant else None,
        )
    finally:
        store.close()
    for chain in report.chains:
        state = "OK" if chain.ok else "FAULT"
        print(
            f"{chain.tenant_id}: {chain.records} records verified, up to seq {chain.head_seq}, "
            f"{chain.checkpoints} checkpoint(s) matched: {state}"
        )
        if chain.fault is not None:
            print(f"  first bad record: {chain.fault.describe()}")
    if not report.chains:
        print("no audit records and no checkpoints found")
    return 0 if report.ok else EXIT_FAULT


def _export(args: argparse.Namespace) -> int:
    from loopwise_audit.evidence import export_tenant

    settings = _trail(args)
    store = _open_store(settings)
    try:
        if _no_table(store):
            return EXIT_FAULT
        since, until = _moment(args.since), _moment(args.until)
        summary = export_tenant(
            store, settings.checkpoint_dir, args.tenant, args.out, since=since, until=until
        )
        details = {"since": since, "until": until, "records": summary.records}
        _record_access(args, store, [args.tenant], "audit.export", None, details)
    finally:
        store.close()
    span = f"seq {summary.first_seq}..{summary.last_seq}" if summary.records else "no records"
    print(
        f"exported {summary.records} records ({span}) and {summary.checkpoints} checkpoints "
        f"of {args.tenant} to {summary.directory}"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    from loopwise_audit.evidence import call_story

    settings = _trail(args)
    store = _open_store(settings)
    try:
        if _no_table(store):
            return EXIT_FAULT
        story = call_story(store, args.call_id, args.tenant)
        if story.lines:
            _record_access(args, store, story.tenants, "audit.show", args.call_id, {})
    finally:
        store.close()
    if not story.lines:
        print(f"no audit records for call {args.call_id}", file=sys.stderr)
        return EXIT_FAULT
    print("\n".join(story.lines))
    return 0


def _record_access(
    args: argparse.Namespace,
    store: Any,
    tenants: list[str],
    action: str,
    call_id: str | None,
    details: dict[str, Any],
) -> None:
    """Append who read what to the trail itself, unless told not to (read-only replicas)."""
    from loopwise_audit.evidence import access_entry

    if args.no_access_record:
        print(f"note: this {action} was not recorded in the trail", file=sys.stderr)
        return
    actor = args.actor or os.environ.get("LOOPWISE_AUDIT_ACTOR") or getpass.getuser()
    store.append(
        [access_entry(t, action, actor, call_id=call_id, details=details) for t in tenants]
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `loopwise-audit`."""
    parser = argparse.ArgumentParser(prog="loopwise-audit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def trail_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--database-url", help="override LOOPWISE_AUDIT_DATABASE_URL")
        p.add_argument("--checkpoint-dir", type=Path, help="override LOOPWISE_AUDIT_CHECKPOINT_DIR")

    def access_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--actor", help="who reads (default: LOOPWISE_AUDIT_ACTOR or the OS user)")
        p.add_argument(
            "--no-access-record",
            action="store_true",
            help="do not append this read to the trail (for read-only replicas)",
        )

    sub.add_parser("run", help="consume every pipeline topic and write the trail").set_defaults(
        func=_run
    )
    batch = sub.add_parser(
        "batch", help="like run, but exit once no input arrived for --idle-s seconds"
    )
    batch.add_argument("--idle-s", type=float, default=10.0, help="quiet time that ends the run")
    batch.add_argument("--timeout-s", type=float, default=None, help="stop after this long anyway")
    batch.set_defaults(func=_batch)
    sub.add_parser("check-config", help="validate settings, database and checkpoint directory")
    sub.choices["check-config"].set_defaults(func=_check_config)

    verify = sub.add_parser("verify", help="walk the chains against the checkpoints")
    trail_options(verify)
    verify.add_argument("--tenant", help="only this tenant's chain")
    verify.add_argument("--export", type=Path, help="verify an export directory instead")
    verify.add_argument(
        "--topic",
        action="store_true",
        help="also read the checkpoints published to the checkpoint topic (KAFKA_* settings)",
    )
    verify.set_defaults(func=_verify)

    export = sub.add_parser(
        "export", help="write a tenant's records and checkpoints for an auditor"
    )
    trail_options(export)
    access_options(export)
    export.add_argument("--tenant", required=True, help="tenant whose chain is exported")
    export.add_argument("--since", help="recorded at or after (RFC 3339 date or time, UTC)")
    export.add_argument("--until", help="recorded before (RFC 3339 date or time, UTC)")
    export.add_argument("--out", type=Path, required=True, help="directory to write")
    export.set_defaults(func=_export)

    show = sub.add_parser("show", help="tell the story of one call, check by check")
    trail_options(show)
    access_options(show)
    show.add_argument("call_id", help="the call")
    show.add_argument("--tenant", help="tenant of the call (default: search every tenant)")
    show.set_defaults(func=_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `loopwise-audit`."""
    from sqlalchemy.exc import OperationalError

    from loopwise_audit.store import UnguardedStore

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigurationError as exc:
        return int(exc.code or 2)
    except UnguardedStore as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:
        print(f"error: the audit database cannot be used: {exc.orig}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
