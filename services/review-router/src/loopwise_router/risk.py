"""Per-call risk: one calibrated probability from the signals the router already has.

Pure functions of a call's state and the policy's `risk` section, shared by the
live router (through `routing.route_call`) and the backtest, so a backtest
figure and a live decision come from the same numbers. The inputs:

| input | what |
|---|---|
| escalation_findings | escalation findings (complaint, cancel, frustration, ...), capped at 3 |
| vulnerable_findings | vulnerable-customer findings, capped at 2 |
| sentiment_final_negative | how negative the customer's rolling sentiment is at the end (0..1) |
| sentiment_falling | how fast it fell, per minute, clipped to 0..1 |
| negative_share | share of the customer's scored turns labelled negative |
| positive_share | share of them labelled positive |
| sentiment_confidence | mean confidence of the customer's sentiment |
| asr_doubt | 1 - mean transcript confidence of the customer's turns (0 when unknown) |

A missing score makes its input 0 (the call is not made riskier by a score that
never came; the join's `missing_inputs` says so). The weights are fitted by
`fit_risk_model` (logistic regression, scikit-learn) on labelled, scored calls,
and the budget threshold by `budget_threshold`; `bench/quality.py` does both on
a training split and reports the held-out split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from loopwise_router.policy import RISK_INPUTS, Policy, RiskModel, RiskPolicy
from loopwise_router.state import CallState

RiskInputs = dict[str, float]


def _clip(value: float, low: float = 0.0, high: float = 1.0) -> float:
    return max(low, min(high, value))


def risk_inputs(call: CallState) -> RiskInputs:
    """The inputs of the risk score for a call, as it stands."""
    findings: list[Mapping[str, Any]] = list(call.call_findings or [])
    for seg in call.segments.values():
        findings.extend(seg.findings or [])
    categories = [str(f.get("category")) for f in findings]
    customer = [s for s in call.ordered_segments() if s.speaker == "customer"]
    scored = [s.sentiment for s in customer if s.sentiment is not None]
    asr = [s.confidence for s in customer if s.confidence is not None]
    cs = call.call_sentiment
    final = cs.final if cs is not None and cs.final is not None else None
    trend = cs.trend if cs is not None and cs.trend is not None else None
    confidence = (
        cs.confidence
        if cs is not None and cs.confidence is not None
        else (sum(s.confidence for s in scored) / len(scored) if scored else 0.0)
    )
    return {
        "escalation_findings": float(min(categories.count("escalation"), 3)),
        "vulnerable_findings": float(min(categories.count("vulnerable_customer"), 2)),
        "sentiment_final_negative": _clip(-final) if final is not None else 0.0,
        "sentiment_falling": _clip(-trend) if trend is not None else 0.0,
        "negative_share": (
            sum(s.label == "negative" for s in scored) / len(scored) if scored else 0.0
        ),
        "positive_share": (
            sum(s.label == "positive" for s in scored) / len(scored) if scored else 0.0
        ),
        "sentiment_confidence": _clip(confidence),
        "asr_doubt": _clip(1.0 - sum(asr) / len(asr)) if asr else 0.0,
    }


def risk_probability(model: RiskModel, inputs: Mapping[str, float]) -> float:
    """The calibrated risk of a call with these inputs."""
    z = model.intercept + sum(w * inputs.get(name, 0.0) for name, w in model.weights.items())
    return 1.0 / (1.0 + math.exp(-_clip(z, -60.0, 60.0)))


def call_risk(policy: Policy, call: CallState) -> float | None:
    """The risk of a call under a policy (None when the policy has no risk section)."""
    if policy.spec.risk is None:
        return None
    return round(risk_probability(policy.spec.risk.model, risk_inputs(call)), 6)


def risk_facts(policy: Policy, call: CallState) -> dict[str, float | bool | None]:
    """The `call.risk` and `call.risk_budget` facts of a call (None without a risk section)."""
    spec: RiskPolicy | None = policy.spec.risk
    risk = call_risk(policy, call)
    if spec is None or risk is None:
        return {"call.risk": None, "call.risk_budget": None}
    return {"call.risk": risk, "call.risk_budget": risk >= spec.threshold(call.queue)}


def fit_risk_model(
    inputs: Sequence[Mapping[str, float]],
    labels: Sequence[bool],
    *,
    version: str,
    fitted_on: Mapping[str, str | int | float],
    c: float = 0.3,
    names: Sequence[str] = RISK_INPUTS,
) -> RiskModel:
    """Fit L2 logistic regression on standardised inputs; weights are written on the raw scale."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    x = np.asarray([[row.get(n, 0.0) for n in names] for row in inputs], dtype=float)
    y = np.asarray(labels, dtype=int)
    if len(set(y.tolist())) < 2:
        raise ValueError("fitting a risk model needs labelled calls of both kinds")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    constant = scale == 0
    scale[constant] = 1.0
    model = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / scale, y)
    coef = model.coef_[0] / scale
    coef[constant] = 0.0
    intercept = float(model.intercept_[0]) - float((coef * mean).sum())
    return RiskModel(
        version=version,
        intercept=round(intercept, 6),
        weights={n: round(float(w), 6) for n, w in zip(names, coef, strict=True)},
        fitted_on={**fitted_on, "calls": len(y), "positives": int(y.sum()), "C": c},
    )


def budget_threshold(
    risks: Sequence[float], share: float, already_reviewed: Sequence[bool] | None = None
) -> float:
    """The lowest risk threshold that keeps the reviewed share of these calls within `share`.

    `already_reviewed` marks calls other rules send to review anyway (they use the
    budget whatever their risk). Returns 1.0 when not even the riskiest call fits.
    """
    n = len(risks)
    if n == 0:
        raise ValueError("no calls to fit a budget threshold on")
    other = list(already_reviewed) if already_reviewed is not None else [False] * n
    best = 1.0
    for threshold in sorted(set(risks), reverse=True):
        reviewed = sum(1 for r, o in zip(risks, other, strict=True) if o or r >= threshold)
        if reviewed / n > share:
            break
        best = threshold
    return best
