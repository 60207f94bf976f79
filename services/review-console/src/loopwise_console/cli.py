"""`loopwise-console`: the review console (run), tokens (create-token), check-config."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import cast

from loopwise.cli import dispatch
from loopwise.logging import configure_logging
from loopwise.settings import load_settings
from loopwise_console.auth import ROLES, Role
from loopwise_console.config import ConsoleSettings, StoreSettings


def _run(args: argparse.Namespace) -> int:
    from loopwise_console.service import ConsoleService

    settings = load_settings(ConsoleSettings)
    obs = settings.observability
    configure_logging("review-console", log_format=obs.log_format, level=obs.log_level)
    service = ConsoleService(settings)
    print(
        f"review console on http://{settings.http_host}:{settings.http_port}/ "
        f"(store {service.store.describe_url()})",
        flush=True,
    )
    service.run_forever()
    return 0


def _create_token(args: argparse.Namespace) -> int:
    from loopwise_console.auth import create_token
    from loopwise_console.store import ConsoleStore

    settings = load_settings(StoreSettings)
    store = ConsoleStore(settings.db_url())
    try:
        with store.write() as conn:
            token, token_id = create_token(
                conn,
                subject=args.subject or f"{args.role}-{args.tenant[0]}",
                role=cast(Role, args.role),
                tenants=args.tenant,
                label=args.label,
            )
    finally:
        store.close()
    print(
        f"token id {token_id}: {args.role} of {', '.join(args.tenant)} (shown once)",
        file=sys.stderr,
    )
    print(token)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from loopwise_console.store import ConsoleStore

    settings = load_settings(ConsoleSettings)
    store = ConsoleStore(settings.db_url())
    try:
        current, head = store.schema_revision()
        backlog = store.outbox_backlog()
    finally:
        store.close()
    print(f"database:     {store.describe_url()} (schema {current}, newest {head})")
    print(f"outbox:       {backlog} event(s) waiting")
    print(f"web:          http://{settings.http_host}:{settings.http_port}/")
    print(f"consumes:     {', '.join(settings.input_topics)} (group {settings.group_id})")
    print(f"decisions to: {settings.decisions_topic}; audit events to {settings.audit_topic}")
    second = ", ".join(settings.second_opinion) or "none"
    print(f"lease:        {settings.lease_s} s; second opinion on: {second}")
    print(f"blind review: {'on' if settings.blind_review else 'off'}")
    print(f"oidc:         {settings.oidc.issuer or 'off'}")
    print("configuration OK")
    return 0


def _openapi(args: argparse.Namespace) -> int:
    from loopwise.settings import KafkaSettings
    from loopwise_console.api import openapi_document
    from loopwise_console.store import ConsoleStore

    settings = ConsoleSettings(kafka=KafkaSettings(bootstrap_servers="unused:9092"))
    store = ConsoleStore("sqlite://", migrate=False)
    text = json.dumps(openapi_document(settings, store), indent=2, sort_keys=True) + "\n"
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text, encoding="utf-8")
        print(args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `loopwise-console`."""
    parser = argparse.ArgumentParser(prog="loopwise-console", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="serve the console and materialise review tasks").set_defaults(
        func=_run
    )
    token = sub.add_parser("create-token", help="create a bearer token (printed once)")
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--tenant", required=True, action="append", help="repeat for several")
    token.add_argument("--subject", help="pseudonymous user id (default: <role>-<tenant>)")
    token.add_argument("--label", help="what the token is for")
    token.set_defaults(func=_create_token)
    sub.add_parser("check-config", help="validate settings and the database").set_defaults(
        func=_check_config
    )
    openapi = sub.add_parser("openapi", help="print (or --out) the OpenAPI document")
    openapi.add_argument("--out", type=Path)
    openapi.set_defaults(func=_openapi)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `loopwise-console`."""
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
