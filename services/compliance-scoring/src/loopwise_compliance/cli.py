"""`loopwise-compliance`: run the service, score JSON lines in batch, or check a rule pack."""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from loopwise.cli import dispatch
from loopwise.settings import load_settings
from loopwise_compliance.rules import PackIndex, load_packs

DEFAULT_PACKS = Path("deploy/rule-packs/index.yaml")
PACKS_ENV = "LOOPWISE_COMPLIANCE_RULE_PACKS"


def _packs_path(given: Path | None) -> Path:
    if given is not None:
        return given
    return Path(os.environ.get(PACKS_ENV) or DEFAULT_PACKS)


def describe(index: PackIndex) -> list[str]:
    """One line per pack (name, version, hash, rules per category), then the tenant map."""
    lines = []
    for pack in index.packs():
        categories = Counter(rule.category for rule in pack.rules)
        per = ", ".join(f"{c}={n}" for c, n in sorted(categories.items()))
        lines.append(
            f"ok {pack.source}: {pack.name} {pack.version} sha256:{pack.content_hash[:12]} "
            f"{len(pack.rules)} rules ({per})"
        )
    for tenant, pack in sorted(index.tenants.items()):
        lines.append(f"tenant {tenant} -> {pack.name} {pack.version}")
    if index.tenants:
        lines.append(f"every other tenant -> {index.default.name} {index.default.version}")
    return lines


def _check_config(args: argparse.Namespace) -> int:
    index = load_packs(args.pack)
    for line in describe(index):
        print(line)
    return 0


def _batch(args: argparse.Namespace) -> int:
    from loopwise_compliance.batch import main_batch
    from loopwise_compliance.handler import ComplianceScorer

    index = load_packs(_packs_path(args.rule_packs))
    return main_batch(ComplianceScorer(index), args.input)


def _run(args: argparse.Namespace) -> int:
    from loopwise_compliance.app import run
    from loopwise_compliance.config import ComplianceSettings

    settings = load_settings(ComplianceSettings)
    if args.rule_packs is not None:
        settings = settings.model_copy(update={"rule_packs": args.rule_packs})
    index = load_packs(settings.rule_packs)  # a broken pack stops start-up here
    run(settings, index)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `loopwise-compliance`."""
    parser = argparse.ArgumentParser(prog="loopwise-compliance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the Kafka service (LOOPWISE_COMPLIANCE_* settings)")
    run.add_argument("--rule-packs", type=Path, default=None, help=f"overrides {PACKS_ENV}")
    run.set_defaults(func=_run)

    batch = sub.add_parser("batch", help="add findings to JSON lines (segments or dialogues)")
    batch.add_argument("input", nargs="?", default="-", help="JSON-lines file, or - for stdin")
    batch.add_argument(
        "--rule-packs",
        type=Path,
        default=None,
        help=f"pack file, index file or directory (default: ${PACKS_ENV} or {DEFAULT_PACKS})",
    )
    batch.set_defaults(func=_batch)

    check = sub.add_parser("check-config", help="validate a rule pack, index file or directory")
    check.add_argument("pack", type=Path)
    check.set_defaults(func=_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `loopwise-compliance`."""
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
