"""Sentiment and routing quality, out-of-sample: chosen and fitted on one part, shown on another.

    uv run python bench/quality.py [--budget 0.10] [--print-risk]

Splits (fixed by sha256 of the row or dialogue id, so they never change):

* Sentiment, `sentiment/uci_amazon_yelp.jsonl`: `dev` (even hash) and `test` (odd).
  Regularisation is chosen by 5-fold cross-validation on `dev`, the model is fitted
  on `dev` and reported on `test`. A second view by source: fitted on every amazon
  review, reported on every yelp review, and the other way round (another domain,
  the closest thing here to text the project has never seen).
* Routing, `dialogues/star_dev_100.jsonl`, scored by the shipped sentiment model
  (`vader-ngram`; fitted on review text, never on STAR) and the shipped rule pack:
  `train` (even hash) and `test` (odd). On `train`, repeated 5-fold cross-validation
  chooses the regularisation of the risk model, the model is fitted, and the risk
  threshold is set so the whole policy (its holds, alerts and random share together
  with the risk rule) reviews at most the budget of the `train` calls. Reported on
  `test`. A second view: the same procedure in 5-fold cross-validation over all 100
  dialogues (every dialogue scored by a policy fitted without it).

Nothing is reported on rows that chose or fitted it. `--print-risk` prints the
`risk:` section fitted the same way on all 100 dialogues (what
deploy/policies/default.yaml ships; figures for it on STAR would be in-sample and
are not printed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loopwise_router.backtest import BacktestCall, budget_curve, group_calls, run_backtest
from loopwise_router.policy import Policy, RiskBudget, RiskModel, RiskPolicy, load_policy
from loopwise_router.risk import budget_threshold, fit_risk_model, risk_inputs, risk_probability
from loopwise_sentiment.evaluation import Example, fit_examples, review_figures
from loopwise_sentiment.models import SentimentModel
from loopwise_sentiment.models.calibrated import CalibratedVaderModel
from loopwise_sentiment.models.ngram import NgramModel, fit_ngram
from loopwise_sentiment.models.vader import VaderModel

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
UCI = DATA / "sentiment" / "uci_amazon_yelp.jsonl"
STAR = DATA / "dialogues" / "star_dev_100.jsonl"
POLICY = ROOT / "deploy" / "policies" / "default.yaml"
LABEL = "user_aggressive_or_annoyed"
SENTIMENT_C = (0.03, 0.1, 0.3, 1.0)
RISK_C = (0.03, 0.1, 0.3, 1.0)
CV_REPEATS = 10

Row = dict[str, Any]


def odd_hash(key: str) -> bool:
    """True for the held-out half: odd sha256 of the id (the split of sentiment_eval.py)."""
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 2 == 1


def folds(n: int, k: int, seed: int = 0) -> list[list[int]]:
    """k folds of range(n), shuffled by a fixed seed."""
    import random

    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i::k] for i in range(k)]


# --- sentiment ---------------------------------------------------------------------------------


def sentiment_figures(model: SentimentModel, rows: Sequence[Row]) -> dict[str, float]:
    """Accuracy and the review figures of a model on labelled rows."""
    right, confidence = [], []
    for row in rows:
        result = model.score(str(row["text"]))
        right.append((result.score >= 0) == (row["label"] == 1))
        confidence.append(result.confidence)
    return review_figures(right, confidence)


def fit_ngram_rows(rows: Sequence[Row], c: float) -> NgramModel:
    """A vader-ngram model fitted on these rows only."""
    weights = fit_ngram(
        [str(r["text"]) for r in rows],
        [r["label"] == 1 for r in rows],
        version="eval",
        fitted_on={},
        c=c,
    )
    return NgramModel(weights)


def fit_calibrated_rows(rows: Sequence[Row]) -> CalibratedVaderModel:
    """A vader-calibrated model fitted on these rows only."""
    examples = [Example(str(r["text"]), r["label"] == 1) for r in rows]
    return CalibratedVaderModel(fit_examples(examples, version="eval", fitted_on={}))


def choose_sentiment_c(rows: Sequence[Row]) -> tuple[float, dict[float, float]]:
    """The C whose 5-fold CV on these rows keeps the most right after 20% review."""
    scores: dict[float, float] = {}
    parts = folds(len(rows), 5)
    for c in SENTIMENT_C:
        right: list[bool] = []
        confidence: list[float] = []
        for held in parts:
            held_set = set(held)
            model = fit_ngram_rows([r for i, r in enumerate(rows) if i not in held_set], c)
            for i in held:
                result = model.score(str(rows[i]["text"]))
                right.append((result.score >= 0) == (rows[i]["label"] == 1))
                confidence.append(result.confidence)
        scores[c] = review_figures(right, confidence)["rest_accuracy_20"]
    best = max(SENTIMENT_C, key=lambda c: (round(scores[c], 4), -c))
    return best, scores


def sentiment_line(name: str, fitted: str, reported: str, f: dict[str, float]) -> str:
    """One row of the sentiment table."""
    return (
        f"| {name} | {fitted} | {reported} | {int(f['n'])} | {f['accuracy']:.1%} | "
        f"{f['rest_accuracy_10']:.1%} | {f['rest_accuracy_20']:.1%} | "
        f"{f['low20_error']:.1%} vs {f['rest_error']:.1%} | {f['error_ratio_20']:.2f} |"
    )


def sentiment_section() -> None:
    """Print the sentiment table."""
    if not UCI.exists():
        print(f"sentiment: skipped ({UCI} not found)")
        return
    rows: list[Row] = [json.loads(x) for x in UCI.read_text(encoding="utf-8").splitlines() if x]
    dev = [r for r in rows if not odd_hash(str(r["id"]))]
    test = [r for r in rows if odd_hash(str(r["id"]))]
    print(
        f"## Sentiment: {UCI.name}, {len(rows)} rows; "
        f"dev {len(dev)} (choose, fit), test {len(test)}"
    )
    print(
        "| model | chosen and fitted on | reported on | n | accuracy | rest acc., 10% reviewed | "
        "rest acc., 20% reviewed | error, least-confident 20% vs rest | ratio |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|---:|")
    print(sentiment_line("vader (no fitting)", "-", "test", sentiment_figures(VaderModel(), test)))
    print(
        sentiment_line(
            "vader-calibrated", "dev", "test", sentiment_figures(fit_calibrated_rows(dev), test)
        )
    )
    c, cv = choose_sentiment_c(dev)
    print(
        sentiment_line(
            f"vader-ngram (C={c})", "dev", "test", sentiment_figures(fit_ngram_rows(dev, c), test)
        )
    )
    chosen = {"dev": (c, cv)}
    sources = sorted({str(r["source"]) for r in rows})
    for fit_source in sources:
        fit_rows = [r for r in rows if r["source"] == fit_source]
        for report_source in sources:
            if report_source == fit_source:
                continue
            report_rows = [r for r in rows if r["source"] == report_source]
            print(
                sentiment_line(
                    "vader-calibrated",
                    f"all {fit_source}",
                    f"all {report_source}",
                    sentiment_figures(fit_calibrated_rows(fit_rows), report_rows),
                )
            )
            c_src, cv_src = choose_sentiment_c(fit_rows)
            chosen[fit_source] = (c_src, cv_src)
            print(
                sentiment_line(
                    f"vader-ngram (C={c_src})",
                    f"all {fit_source}",
                    f"all {report_source}",
                    sentiment_figures(fit_ngram_rows(fit_rows, c_src), report_rows),
                )
            )
    for name, (best, scores) in chosen.items():
        grid = ", ".join(f"C={k}: {v:.1%}" for k, v in scores.items())
        print(f"C chosen on {name} by 5-fold CV (rest accuracy after 20% review): {grid} -> {best}")


# --- routing -----------------------------------------------------------------------------------


def score_star(model: str) -> list[str]:
    """STAR dialogues through the sentiment and compliance batch commands (the batch contract)."""
    bins = Path(sys.executable).parent
    sentiment = subprocess.run(
        [str(bins / "loopwise-sentiment"), "batch", "--model", model, str(STAR)],
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
    return [x for x in compliance.stdout.decode("utf-8").splitlines() if x.strip()]


def with_risk(base: Policy, risk: RiskPolicy) -> Policy:
    """The base policy with another risk section (same rules)."""
    spec = base.spec.model_copy(update={"risk": risk})
    return Policy(spec, f"{base.version}+{risk.model.version}", base.source)


def lift_at(risks: Sequence[float], labels: Sequence[bool], share: float) -> float:
    """Recall of the riskiest `share` of calls divided by `share`."""
    k = max(1, round(share * len(risks)))
    order = sorted(range(len(risks)), key=lambda i: -risks[i])[:k]
    positives = sum(labels)
    return (sum(labels[i] for i in order) / positives) / (k / len(risks)) if positives else 0.0


def choose_risk_c(
    inputs: Sequence[dict[str, float]], labels: Sequence[bool], share: float
) -> tuple[float, dict[float, float]]:
    """The C with the best mean lift at `share` in repeated 5-fold CV on these calls."""
    scores: dict[float, float] = {}
    for c in RISK_C:
        lifts = []
        for seed in range(CV_REPEATS):
            risks = [0.0] * len(labels)
            for held in folds(len(labels), 5, seed):
                held_set = set(held)
                train = [i for i in range(len(labels)) if i not in held_set]
                if len({labels[i] for i in train}) < 2:
                    continue
                model = fit_risk_model(
                    [inputs[i] for i in train],
                    [labels[i] for i in train],
                    version="cv",
                    fitted_on={},
                    c=c,
                )
                for i in held:
                    risks[i] = risk_probability(model, inputs[i])
            lifts.append(lift_at(risks, labels, share))
        scores[c] = statistics.mean(lifts)
    best = max(RISK_C, key=lambda c: (round(scores[c], 3), -c))
    return best, scores


def fit_policy(
    base: Policy, calls: Sequence[BacktestCall], budget: float, version: str, fitted_on: str
) -> tuple[Policy, dict[str, Any]]:
    """Choose C, fit the risk model and the budget threshold on these calls only."""
    labelled = [c for c in calls if c.label is not None]
    inputs = [risk_inputs(c.state) for c in labelled]
    labels = [bool(c.label) for c in labelled]
    c, cv = choose_risk_c(inputs, labels, budget)
    model = fit_risk_model(inputs, labels, version=version, fitted_on={"data": fitted_on}, c=c)
    never = RiskPolicy(model=model, budgets={"default": RiskBudget(share=budget, threshold=1.0)})
    others = run_backtest(with_risk(base, never), labelled).calls
    risks = [risk_probability(model, x) for x in inputs]
    threshold = budget_threshold(risks, budget, [r.reviewed for r in others])
    risk = RiskPolicy(
        model=model,
        budgets={"default": RiskBudget(share=budget, threshold=round(threshold, 6))},
    )
    return with_risk(base, risk), {"C": c, "cv_lift": cv, "threshold": threshold}


def policy_line(name: str, fitted: str, reported: str, report: dict[str, Any]) -> str:
    """One row of the routing table."""
    rate = report["review_rate"]
    recall = report.get("recall") or 0.0
    return (
        f"| {name} | {fitted} | {reported} | {report['items']} | {rate:.1%} | "
        f"{report['caught']} of {report['positives']} | {recall:.1%} | "
        f"{(recall / rate if rate else 0):.2f}x |"
    )


def routing_section(budget: float, print_risk: bool) -> None:
    """Print the routing table (and the shipped risk section with --print-risk)."""
    if not STAR.exists():
        print(f"routing: skipped ({STAR} not found)")
        return
    base = load_policy(POLICY)
    lines = score_star("vader-ngram")
    calls = group_calls((json.loads(x) for x in lines), LABEL)
    train = [c for c in calls if not odd_hash(c.state.call_id)]
    test = [c for c in calls if odd_hash(c.state.call_id)]
    pos = sum(bool(c.label) for c in calls)
    print(
        f"\n## Routing: {STAR.name}, {len(calls)} dialogues ({pos} annoyed); "
        f"train {len(train)} ({sum(bool(c.label) for c in train)} annoyed), "
        f"test {len(test)} ({sum(bool(c.label) for c in test)} annoyed); budget {budget:.0%}"
    )
    policy, info = fit_policy(base, train, budget, "risk-train", "STAR train half")
    grid = ", ".join(f"C={k}: {v:.2f}x" for k, v in info["cv_lift"].items())
    print(
        f"chosen on train: C by 10x repeated 5-fold CV (lift at {budget:.0%}): {grid} -> "
        f"{info['C']}; threshold {info['threshold']:.4f}"
    )
    print(
        "| policy | fitted on | reported on | calls | review rate | annoyed caught | recall "
        "| vs random |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    held = run_backtest(policy, test)
    print(policy_line("default + risk", "train", "test", held.as_dict()))
    without = base.spec.model_copy(
        update={"rules": [r for r in base.spec.rules if r.id != "risk-budget"]}
    )
    no_risk = Policy(without, base.version + "-norisk", base.source)
    print(
        policy_line(
            "default without the risk rule", "-", "test", run_backtest(no_risk, test).as_dict()
        )
    )
    # The whole procedure in 5-fold CV over all dialogues.
    reviewed = caught = n = positives = 0
    pooled: list[Any] = []
    for held_idx in folds(len(calls), 5, seed=1):
        held_set = set(held_idx)
        fit_calls = [c for i, c in enumerate(calls) if i not in held_set]
        fold_calls = [calls[i] for i in held_idx]
        fold_policy, _ = fit_policy(base, fit_calls, budget, "risk-cv", "cv")
        report = run_backtest(fold_policy, fold_calls)
        reviewed += report.held + report.sampled
        caught += report.caught
        positives += report.positives
        n += report.items
        pooled.extend(report.calls)
    cv_report = {
        "items": n,
        "review_rate": reviewed / n,
        "caught": caught,
        "positives": positives,
        "recall": caught / positives,
    }
    print(policy_line("default + risk, 5-fold CV", "4/5", "other 1/5", cv_report))
    print("\nRiskiest share of calls by risk score alone (risk model fitted on train, on test):")
    print("| budget | calls reviewed | annoyed caught | random expected | vs random |")
    print("|---:|---:|---:|---:|---:|")
    for row in budget_curve(held.calls):
        print(
            f"| {row['budget']:.0%} | {row['reviewed']} | {row['caught']} of {row['positives']} | "
            f"{row['random_expected']} | {row['lift_over_random']:.2f}x |"
        )
    print("\nSame, 5-fold CV over all 100 (each fold ranked by a model fitted without it):")
    print("| budget | calls reviewed | annoyed caught | random expected | vs random |")
    print("|---:|---:|---:|---:|---:|")
    # Pooling out-of-fold risks across folds compares numbers from different fits; it is
    # a ranking of calibrated probabilities, which is what a budget threshold uses too.
    for row in budget_curve(pooled):
        print(
            f"| {row['budget']:.0%} | {row['reviewed']} | {row['caught']} of {row['positives']} | "
            f"{row['random_expected']} | {row['lift_over_random']:.2f}x |"
        )
    if print_risk:
        shipped, info = fit_policy(base, calls, budget, "risk-v1", "STAR dev 100 (all)")
        assert shipped.spec.risk is not None
        print(f"\n# risk section fitted on all {len(calls)} dialogues (C={info['C']}):")
        print(risk_yaml(shipped.spec.risk))


def risk_yaml(risk: RiskPolicy) -> str:
    """The risk section as YAML for the policy file."""
    model: RiskModel = risk.model
    lines = ["risk:", "  model:", f"    version: {model.version}"]
    lines.append(f"    intercept: {model.intercept}")
    lines.append("    weights:")
    lines.extend(f"      {k}: {v}" for k, v in model.weights.items())
    lines.append("    fitted_on:")
    lines.extend(f"      {k}: {json.dumps(v)}" for k, v in model.fitted_on.items())
    lines.append("  budgets:")
    for queue, b in risk.budgets.items():
        lines.append(f"    {queue}: {{share: {b.share}, threshold: {b.threshold}}}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print every quality figure."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.10, help="review budget (share)")
    parser.add_argument("--print-risk", action="store_true", help="print the shipped risk block")
    parser.add_argument("--only", choices=("sentiment", "routing"), default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sections: dict[str, Callable[[], None]] = {
        "sentiment": sentiment_section,
        "routing": lambda: routing_section(args.budget, args.print_risk),
    }
    for name, section in sections.items():
        if args.only in (None, name):
            section()
    print(f"\nelapsed {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
