"""The per-call risk score: inputs, budget threshold, policy fields, the backtest curve."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from loopwise.config_files import ConfigFileError
from loopwise_router.backtest import budget_curve, group_calls, run_backtest
from loopwise_router.policy import RISK_INPUTS, RiskModel, load_policy
from loopwise_router.risk import (
    budget_threshold,
    call_risk,
    fit_risk_model,
    risk_inputs,
    risk_probability,
)
from loopwise_router.routing import route_call

ROOT = Path(__file__).resolve().parents[3]

POLICY = """
version: 1
name: risky
rules:
  - id: risk-budget
    scope: call
    when: "call.risk_budget == true"
    outcome: sample
    rate: 1.0
risk:
  model:
    version: t1
    intercept: -3.0
    weights: {escalation_findings: 2.0, sentiment_final_negative: 2.0, positive_share: -1.0}
  budgets:
    default: {share: 0.1, threshold: 0.5}
    billing: {share: 0.2, threshold: 0.2}
"""

ESCALATION = {"rule_id": "escalation-frustration", "category": "escalation", "severity": "low"}


def turn(speaker: str, label: str, score: float, findings: list[Any] | None = None) -> Any:
    return {
        "speaker": speaker,
        "text": "words words words",
        "confidence": 0.7,
        "sentiment": {"label": label, "score": score, "confidence": 0.8},
        "findings": findings or [],
    }


def dialogue(
    call_id: str, *, final: float, escalations: int, queue: str = "q", label: bool = False
) -> dict[str, Any]:
    turns = [turn("agent", "neutral", 0.0), turn("customer", "positive", 0.6)]
    turns += [turn("customer", "negative", -0.7, [ESCALATION]) for _ in range(escalations)]
    return {
        "id": call_id,
        "queue": queue,
        "label": label,
        "turns": turns,
        "call_sentiment": {"final": final, "worst": final, "trend": -0.5, "confidence": 0.8},
    }


def test_inputs_come_from_the_call_state() -> None:
    (call,) = group_calls([dialogue("c1", final=-0.4, escalations=2)])
    inputs = risk_inputs(call.state)
    assert set(inputs) == set(RISK_INPUTS)
    assert inputs["escalation_findings"] == 2.0
    assert inputs["vulnerable_findings"] == 0.0
    assert inputs["sentiment_final_negative"] == pytest.approx(0.4)
    assert inputs["sentiment_falling"] == pytest.approx(0.5)
    assert inputs["negative_share"] == pytest.approx(2 / 3)
    assert inputs["positive_share"] == pytest.approx(1 / 3)
    assert inputs["sentiment_confidence"] == pytest.approx(0.8)
    assert inputs["asr_doubt"] == pytest.approx(0.3)


def test_missing_scores_add_no_risk() -> None:
    (call,) = group_calls([{"id": "c0", "turns": [{"speaker": "customer", "text": "hi"}]}])
    inputs = risk_inputs(call.state)
    assert inputs["sentiment_final_negative"] == 0.0 and inputs["negative_share"] == 0.0
    assert inputs["asr_doubt"] == 0.0


def test_probability_is_the_logistic_of_the_weighted_inputs() -> None:
    model = RiskModel(version="m", intercept=-1.0, weights={"escalation_findings": 1.5})
    assert risk_probability(model, {"escalation_findings": 2.0}) == pytest.approx(
        1 / (1 + math.exp(-2.0))
    )
    assert risk_probability(model, {}) == pytest.approx(1 / (1 + math.e))


def test_budget_rule_fires_by_queue_threshold_and_records_the_risk(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY, encoding="utf-8")
    policy = load_policy(path)
    calm, angry, billing = group_calls(
        [
            dialogue("calm", final=0.3, escalations=0),
            dialogue("angry", final=-0.8, escalations=2),
            dialogue("bill", final=-0.2, escalations=0, queue="billing"),
        ]
    )
    # calm: -3 - 1*0.5 -> 0.03; angry: -3 + 4 + 1.6 - 0.33 -> 0.9; billing: -3 + 0.4 - 0.5 -> 0.05
    verdicts = {c.state.call_id: route_call(policy, c.state) for c in (calm, angry, billing)}
    assert verdicts["calm"].outcome == "auto" and verdicts["calm"].risk is not None
    assert verdicts["calm"].risk < 0.1
    assert verdicts["angry"].outcome == "sample" and verdicts["angry"].rule_id == "risk-budget"
    assert verdicts["angry"].risk == pytest.approx(call_risk(policy, angry.state))
    assert any(f.condition == "call.risk_budget == true" for f in verdicts["angry"].fired)
    # billing has a lower threshold, but this call is still under it
    assert verdicts["bill"].outcome == "auto"
    assert policy.spec.risk is not None and policy.spec.risk.threshold("billing") == 0.2
    assert policy.spec.risk.threshold("other") == 0.5


def test_without_a_risk_section_the_verdict_has_no_risk() -> None:
    policy = load_policy(ROOT / "deploy/policies/default.yaml")
    spec = policy.spec.model_copy(update={"risk": None, "rules": policy.spec.rules[:2]})
    from loopwise_router.policy import Policy

    plain = Policy(spec, "v", "x")
    (call,) = group_calls([dialogue("c", final=-0.9, escalations=3)])
    assert route_call(plain, call.state).risk is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (POLICY.split("risk:\n  model")[0], "uses call.risk_budget but the policy has no `risk`"),
        (POLICY.replace("escalation_findings: 2.0", "shouting: 2.0"), "unknown risk input"),
        (POLICY.replace("    default: {share: 0.1, threshold: 0.5}\n", ""), "`default` entry"),
        (POLICY.replace("threshold: 0.5", "threshold: 1.5"), "threshold"),
    ],
)
def test_risk_configuration_errors_stop_the_load(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigFileError, match=message):
        load_policy(path)


def test_budget_threshold_counts_calls_other_rules_review() -> None:
    risks = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    assert budget_threshold(risks, 0.3) == 0.7
    # one low-risk call is reviewed anyway: it uses a place of the budget
    other = [False] * 9 + [True]
    assert budget_threshold(risks, 0.3, other) == 0.8
    assert budget_threshold(risks, 0.05) == 1.0


def test_fitted_model_ranks_the_separable_signal_first() -> None:
    inputs = [{"escalation_findings": float(i % 2), "positive_share": 0.5} for i in range(40)]
    labels = [i % 2 == 1 for i in range(40)]
    model = fit_risk_model(inputs, labels, version="f", fitted_on={"data": "toy"}, c=1.0)
    assert model.weights["escalation_findings"] > 1.0
    assert model.weights["positive_share"] == 0.0  # constant input: no weight
    assert model.fitted_on["calls"] == 40 and model.fitted_on["positives"] == 20
    high = risk_probability(model, inputs[1])
    low = risk_probability(model, inputs[0])
    assert high > 0.8 > 0.2 > low
    with pytest.raises(ValueError, match="both kinds"):
        fit_risk_model(inputs[:1], labels[:1], version="f", fitted_on={})


def test_backtest_reports_catches_per_budget_next_to_random(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY, encoding="utf-8")
    policy = load_policy(path)
    lines = [dialogue(f"a{i}", final=-0.8, escalations=2, label=i < 4) for i in range(5)] + [
        dialogue(f"c{i}", final=0.5, escalations=0, label=i < 1) for i in range(15)
    ]
    report = run_backtest(policy, group_calls(lines))
    out = report.as_dict()
    curve = {row["budget"]: row for row in out["risk_budget_curve"]}
    # the riskiest 20% (4 calls) are angry ones (ties by call id: a0..a3, all labelled);
    # 4 of the 5 positives, where random sampling of 4 calls expects 1: 0.8 / 0.2 = 4x
    assert curve[0.2]["reviewed"] == 4 and curve[0.2]["caught"] == 4
    assert curve[0.2]["random_expected"] == pytest.approx(1.0)
    assert curve[0.2]["lift_over_random"] == pytest.approx(4.0)
    assert out["caught"] == 4 and out["sampled"] == 5
    # the backtest routes copies: the same calls replay the same way
    again = run_backtest(policy, group_calls(lines))
    assert again.as_dict()["sampled"] == 5
    assert budget_curve([]) == []
