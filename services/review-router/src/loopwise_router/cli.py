"""`loopwise-router`: run the router, check a policy, backtest a policy on scored calls."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from loopwise.cli import dispatch


def _check_config(args: argparse.Namespace) -> int:
    from loopwise_router.policy import load_policy

    policy = load_policy(args.policy)
    tenants = sorted(policy.spec.tenants)
    _, rules = policy.for_tenant("")
    print(
        f"{args.policy}: ok, policy {policy.name} version {policy.version}, "
        f"{len(rules)} shared rule(s), tenants: {', '.join(tenants) or 'none'}"
    )
    for tenant in tenants:
        _, own = policy.for_tenant(tenant)
        print(f"  tenant {tenant}: {len(own)} rule(s)")
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from loopwise_router.backtest import (
        BacktestInputError,
        format_report,
        group_calls,
        read_lines,
        run_backtest,
    )
    from loopwise_router.policy import load_policy

    policy = load_policy(args.policy)
    try:
        calls = group_calls(read_lines(args.input), args.label_field, args.tenant)
    except (BacktestInputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = run_backtest(policy, calls).as_dict()
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def _run(args: argparse.Namespace) -> int:
    from loopwise.settings import load_settings
    from loopwise_router.app import run
    from loopwise_router.config import RouterSettings

    overrides = {"policy_path": args.policy} if args.policy else {}
    run(load_settings(RouterSettings, **overrides))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `loopwise-router`."""
    parser = argparse.ArgumentParser(prog="loopwise-router", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the streaming router (LOOPWISE_ROUTER_* settings)")
    run.add_argument("--policy", type=Path, default=None, help="policy file (overrides setting)")
    run.set_defaults(func=_run)
    check = sub.add_parser("check-config", help="validate a routing policy file")
    check.add_argument("policy", type=Path)
    check.set_defaults(func=_check_config)
    back = sub.add_parser("backtest", help="replay scored calls against a policy")
    back.add_argument("--policy", type=Path, required=True, help="policy file")
    back.add_argument("--input", required=True, help="scored JSON lines, or - for stdin")
    back.add_argument("--json", action="store_true", help="print one JSON object")
    back.add_argument(
        "--label-field",
        default="label",
        help="boolean field meaning a person should look (default: label)",
    )
    back.add_argument("--tenant", default="default", help="tenant for lines without tenant_id")
    back.set_defaults(func=_backtest)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `loopwise-router`."""
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
