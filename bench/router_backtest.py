"""Backtest of the shipped routing policy on the STAR dev dialogues, scored by the batch commands.

    uv run python bench/router_backtest.py [--policy deploy/policies/default.yaml]

Runs the pipeline of the batch contract,

    loopwise-sentiment batch star_dev_100.jsonl | loopwise-compliance batch - \
      | loopwise-router backtest --policy P --input - --json \
          --label-field user_aggressive_or_annoyed

and prints how many of the annoyed-customer dialogues go to review, at what review rate,
and how that compares with random sampling at the same rate (which catches, on average,
the same share of them as it reviews).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dialogues" / "star_dev_100.jsonl"
LABEL = "user_aggressive_or_annoyed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, default=ROOT / "deploy/policies/default.yaml")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} is not there (dev data lives beside the repo)")
        return 0
    bins = Path(sys.executable).parent
    sentiment = subprocess.run(
        [str(bins / "loopwise-sentiment"), "batch", str(args.data)],
        capture_output=True,
        check=True,
        cwd=ROOT,
    )
    compliance = subprocess.run(
        [str(bins / "loopwise-compliance"), "batch", "-"],
        input=sentiment.stdout,
        capture_output=True,
        check=True,
        cwd=ROOT,
    )
    backtest = subprocess.run(
        [
            str(bins / "loopwise-router"),
            *("backtest", "--policy", str(args.policy), "--input", "-"),
            *("--label-field", LABEL, "--json"),
        ],
        input=compliance.stdout,
        capture_output=True,
        check=True,
        cwd=ROOT,
    )
    report = json.loads(backtest.stdout)
    print(json.dumps(report, indent=2))
    rate = report["review_rate"]
    recall = report.get("recall") or 0.0
    print(
        f"\n{report['caught']} of {report['positives']} annoyed-customer dialogues go to review "
        f"({recall:.1%}) at a review rate of {rate:.1%} ({report['held']} held, "
        f"{report['sampled']} sampled of {report['items']}); random sampling at that rate "
        f"catches {rate:.1%} of them: the policy catches {recall / rate if rate else 0:.2f}x that"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
