"""Policy evaluation: facts of a segment or call, conditions, the deterministic sampling draw.

Pure functions shared by the streaming app and the backtest, so a backtest
figure and a live decision come from the same code.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loopwise_router.policy import (
    SEVERITIES,
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    FindingCondition,
    FindingSpec,
    Mode,
    NotOf,
    Outcome,
    Policy,
    Priority,
    ResolvedRule,
    Scope,
    field_kind,
)
from loopwise_router.risk import risk_facts
from loopwise_router.state import CallState, SegmentState

Facts = dict[str, Any]
Observed = str | float | bool | None
_STRENGTH: dict[str, int] = {"auto": 0, "sample": 1, "hold": 2}
_PRIORITY_RANK: dict[str, int] = {"p1": 1, "p2": 2, "p3": 3, "p4": 4}


@dataclass(frozen=True)
class Fired:
    """A condition that held, with the value it saw."""

    rule_id: str
    condition: str
    observed: Observed


@dataclass(frozen=True)
class Verdict:
    """What the policy says for one segment or call."""

    outcome: Outcome
    policy_version: str
    rule: ResolvedRule | None = None
    fired: list[Fired] = field(default_factory=list)
    sampling_draw: float | None = None
    sample_rate: float | None = None
    review_rules: list[ResolvedRule] = field(default_factory=list)
    fired_rules: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    risk: float | None = None
    """The call's risk score (call verdicts of a policy with a `risk` section; else None)."""

    @property
    def rule_id(self) -> str | None:
        """Id of the deciding rule; None when no rule fired (the default, auto)."""
        return self.rule.rule.id if self.rule else None

    @property
    def priority(self) -> Priority | None:
        """The most urgent priority among the rules that asked for review."""
        if not self.review_rules:
            return None
        return min((r.priority for r in self.review_rules), key=_PRIORITY_RANK.__getitem__)

    @property
    def sla_s(self) -> int | None:
        """The shortest SLA among the rules that asked for review."""
        return min((r.sla_s for r in self.review_rules), default=None)

    @property
    def mode(self) -> Mode | None:
        """realtime if any reviewing rule wants an alert during the call."""
        if not self.review_rules:
            return None
        return "realtime" if any(r.mode == "realtime" for r in self.review_rules) else "post_call"


def sampling_draw(call_id: str, rule_id: str, segment_id: str | None = None) -> float:
    """A uniform draw in [0, 1) from SHA-256 of call id, rule id (and segment id): re-derivable."""
    key = f"{call_id}\x1f{rule_id}" + (f"\x1f{segment_id}" if segment_id is not None else "")
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _severity_max(findings: Iterable[Mapping[str, Any]]) -> str | None:
    best: str | None = None
    for finding in findings:
        sev = str(finding.get("severity"))
        if sev in SEVERITIES and (best is None or SEVERITIES[sev] > SEVERITIES[best]):
            best = sev
    return best


def _common_facts(call: CallState, language: str | None) -> Facts:
    facts: Facts = {
        "language": language or call.language,
        "queue": call.queue,
        "region": call.region,
        "direction": call.direction,
        "agent_id": call.agent_id,
    }
    for key, value in call.metadata.items():
        facts[f"metadata.{key}"] = value
    return facts


def segment_facts(call: CallState, seg: SegmentState) -> Facts:
    """The fact fields a segment rule can compare."""
    findings = seg.findings or []
    facts = _common_facts(call, seg.language)
    facts.update(
        {
            "transcript.confidence": seg.confidence,
            "segment.speaker": seg.speaker,
            "segment.duration_s": seg.end_s - seg.start_s,
            "segment.words": seg.words,
            "sentiment.label": seg.sentiment.label if seg.sentiment else None,
            "sentiment.score": seg.sentiment.score if seg.sentiment else None,
            "sentiment.confidence": seg.sentiment.confidence if seg.sentiment else None,
            "findings.count": len(findings) if seg.findings is not None else None,
            "findings.max_severity": _severity_max(findings),
            "findings.max_score": max((float(f["score"]) for f in findings), default=None),
        }
    )
    return facts


def call_findings(call: CallState) -> list[dict[str, Any]]:
    """Every finding of the call: call-level ones and those of its segments."""
    found = list(call.call_findings or [])
    for seg in call.segments.values():
        found.extend(seg.findings or [])
    return found


def call_facts(call: CallState) -> Facts:
    """The fact fields a call rule can compare."""
    segs = call.ordered_segments()
    languages = [s.language for s in segs if s.language]
    language = call.language or (max(set(languages), key=languages.count) if languages else None)
    facts = _common_facts(call, language)
    confidences = [s.confidence for s in segs if s.confidence is not None]
    customer = [s.sentiment.score for s in segs if s.sentiment and s.speaker == "customer"]
    negatives = sum(
        1
        for s in segs
        if s.sentiment and s.speaker == "customer" and s.sentiment.label == "negative"
    )
    findings = call_findings(call)
    cs = call.call_sentiment
    duration = call.duration_s
    if duration is None and segs:
        duration = max(s.end_s for s in segs)
    facts.update(
        {
            "call.segments": len(segs),
            "call.duration_s": duration,
            "call.end_reason": call.end_reason,
            "call.transcript_confidence.min": min(confidences, default=None),
            "call.transcript_confidence.mean": (
                sum(confidences) / len(confidences) if confidences else None
            ),
            "call.customer_sentiment.min": min(customer, default=None),
            "call.customer_sentiment.mean": sum(customer) / len(customer) if customer else None,
            "call.negative_segments": negatives,
            "call.sentiment.final": cs.final if cs else None,
            "call.sentiment.worst": cs.worst if cs else None,
            "call.sentiment.trend": cs.trend if cs else None,
            "call.sentiment.label": cs.label if cs else None,
            "call.sentiment.confidence": cs.confidence if cs else None,
            "call.findings.count": len(findings),
            "call.findings.max_severity": _severity_max(findings),
            "call.findings.max_score": max((float(f["score"]) for f in findings), default=None),
            "call.segments_held": sum(1 for s in segs if s.outcome == "hold"),
            "call.segments_sampled": sum(1 for s in segs if s.outcome == "sample"),
        }
    )
    return facts


def _observed(value: Any) -> Observed:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return str(value)


def _compare(cmp: Comparison, value: Any, scope: Scope) -> bool:
    op = cmp.op
    if op == "exists":
        return value is not None
    if op == "missing":
        return value is None
    if value is None:
        return False
    if field_kind(cmp.field, scope) == "severity":
        value = SEVERITIES.get(str(value), 0)
        target: Any = (
            [SEVERITIES[v] for v in cmp.value]
            if isinstance(cmp.value, list)
            else SEVERITIES[cmp.value]
        )
    else:
        target = cmp.value
    if op == "in":
        return bool(value in target)
    if op == "not in":
        return bool(value not in target)
    if op == "==":
        return bool(value == target)
    if op == "!=":
        return bool(value != target)
    numeric = (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric) or not isinstance(target, numeric):
        return False
    if op == "<":
        return bool(value < target)
    if op == "<=":
        return bool(value <= target)
    if op == ">":
        return bool(value > target)
    return bool(value >= target)


def _finding_matches(spec: FindingSpec, finding: Mapping[str, Any]) -> bool:
    if spec.category is not None:
        cats = [spec.category] if isinstance(spec.category, str) else spec.category
        if finding.get("category") not in cats:
            return False
    if spec.rule_id is not None:
        ids = [spec.rule_id] if isinstance(spec.rule_id, str) else spec.rule_id
        if finding.get("rule_id") not in ids:
            return False
    if (
        spec.min_severity is not None
        and SEVERITIES.get(str(finding.get("severity")), 0) < SEVERITIES[spec.min_severity]
    ):
        return False
    return not (spec.min_score is not None and float(finding.get("score", 0.0)) < spec.min_score)


def evaluate(
    condition: Condition,
    facts: Facts,
    findings: list[dict[str, Any]],
    scope: Scope,
    rule_id: str,
) -> tuple[bool, list[Fired]]:
    """Whether a condition holds, and the leaf conditions that made it hold."""
    if isinstance(condition, Comparison):
        value = facts.get(condition.field)
        if _compare(condition, value, scope):
            return True, [Fired(rule_id, condition.text, _observed(value))]
        return False, []
    if isinstance(condition, FindingCondition):
        for finding in findings:
            if _finding_matches(condition.finding, finding):
                observed = f"{finding.get('rule_id')} ({finding.get('severity')})"
                return True, [Fired(rule_id, condition.finding.describe(), observed)]
        return False, []
    if isinstance(condition, AllOf):
        fired: list[Fired] = []
        for child in condition.all:
            ok, why = evaluate(child, facts, findings, scope, rule_id)
            if not ok:
                return False, []
            fired.extend(why)
        return True, fired
    if isinstance(condition, AnyOf):
        fired = []
        for child in condition.any:
            ok, why = evaluate(child, facts, findings, scope, rule_id)
            if ok:
                fired.extend(why)
        return bool(fired), fired
    if isinstance(condition, NotOf):
        ok, _ = evaluate(condition.not_, facts, findings, scope, rule_id)
        return (
            (False, [])
            if ok
            else (True, [Fired(rule_id, f"not {_describe(condition.not_)}", None)])
        )
    raise TypeError(f"unknown condition {condition!r}")


def _describe(condition: Condition) -> str:
    if isinstance(condition, Comparison):
        return condition.text
    if isinstance(condition, FindingCondition):
        return condition.finding.describe()
    if isinstance(condition, AllOf):
        return "all(" + "; ".join(_describe(c) for c in condition.all) + ")"
    if isinstance(condition, AnyOf):
        return "any(" + "; ".join(_describe(c) for c in condition.any) + ")"
    return f"not {_describe(condition.not_)}"


def _better(candidate: ResolvedRule, best: ResolvedRule) -> bool:
    a, b = _STRENGTH[candidate.rule.outcome], _STRENGTH[best.rule.outcome]
    if a != b:
        return a > b
    return _PRIORITY_RANK[candidate.priority] < _PRIORITY_RANK[best.priority]


def decide(
    policy: Policy,
    tenant_id: str,
    scope: Scope,
    facts: Facts,
    findings: list[dict[str, Any]],
    call_id: str,
    segment_id: str | None = None,
    missing: Iterable[str] = (),
) -> Verdict:
    """Apply every rule of the scope; the strongest outcome wins (hold > sample > auto).

    A sample rule counts only when its draw falls under its rate; ties go to the
    most urgent priority, then to the rule written first. A rule that reads an input in
    `missing` does what its `on_missing` says: hold or sample the item without looking
    at the condition (fail closed), evaluate the condition with the input absent, or skip.
    """
    gaps = frozenset(missing)
    _, rules = policy.for_tenant(tenant_id)
    fired: list[Fired] = []
    fired_rules: list[str] = []
    best: ResolvedRule | None = None
    review: list[ResolvedRule] = []
    draws: dict[str, tuple[float, float]] = {}
    first_draw: tuple[float, float] | None = None
    for resolved in rules:
        if resolved.rule.scope != scope:
            continue
        action = resolved.missing_action(gaps) if gaps else None
        if action == "skip":
            continue
        if action in ("hold", "sample"):
            resolved = resolved.forced(action)
            absent = ", ".join(sorted(i for i in resolved.reads if i in gaps))
            ok, why = True, [Fired(resolved.rule.id, f"input missing: {absent}", None)]
        else:
            ok, why = evaluate(resolved.rule.when, facts, findings, scope, resolved.rule.id)
        rule = resolved.rule
        if not ok:
            continue
        fired.extend(why)
        fired_rules.append(rule.id)
        if rule.outcome == "sample":
            assert rule.rate is not None
            drawn = (sampling_draw(call_id, rule.id, segment_id), rule.rate)
            first_draw = first_draw or drawn
            if drawn[0] >= drawn[1]:
                continue  # fired, but this item is not in the sample
            draws[rule.id] = drawn
        if rule.outcome != "auto":
            review.append(resolved)
        if best is None or _better(resolved, best):
            best = resolved
    best_outcome: Outcome = best.rule.outcome if best else "auto"
    chosen = draws.get(best.rule.id) if best is not None else None
    recorded = chosen or first_draw
    draw = recorded[0] if recorded else None
    rate = recorded[1] if recorded else None
    if best_outcome == "hold":
        review = [r for r in review if r.rule.outcome == "hold"]
    return Verdict(
        outcome=best_outcome,
        policy_version=policy.version,
        rule=best,
        fired=fired,
        sampling_draw=draw,
        sample_rate=rate,
        review_rules=review,
        fired_rules=fired_rules,
        missing=sorted(gaps),
    )


def route_segment(
    policy: Policy, call: CallState, seg: SegmentState, missing: Iterable[str] = ()
) -> Verdict:
    """The policy's verdict on one segment of a call (`missing`: inputs not arrived)."""
    return decide(
        policy,
        call.tenant_id,
        "segment",
        segment_facts(call, seg),
        list(seg.findings or []),
        call.call_id,
        seg.segment_id,
        missing,
    )


def route_call(policy: Policy, call: CallState, missing: Iterable[str] = ()) -> Verdict:
    """The verdict on a finished call; a segment held for post-call review holds the call."""
    facts = call_facts(call)
    risk = risk_facts(policy, call)
    facts.update(risk)
    verdict = decide(
        policy, call.tenant_id, "call", facts, call_findings(call), call.call_id, missing=missing
    )
    verdict = dataclasses.replace(verdict, risk=_number(risk["call.risk"]))
    if not call.waiting_rules or verdict.outcome == "hold":
        return verdict
    _, rules = policy.for_tenant(call.tenant_id)
    by_id = {r.rule.id: r for r in rules}
    forced = [by_id[r] for r in call.waiting_rules if r in by_id]
    waiting = [s.segment_id for s in call.segments.values() if s.status == "awaiting_call"]
    fired = [
        *verdict.fired,
        *(
            Fired(r.rule.id, "segment held for post-call review", ", ".join(waiting))
            for r in forced
        ),
    ]
    return Verdict(
        outcome="hold",
        policy_version=policy.version,
        rule=forced[0] if forced else None,
        fired=fired,
        sampling_draw=verdict.sampling_draw,
        sample_rate=verdict.sample_rate,
        review_rules=forced,
        fired_rules=[*verdict.fired_rules, *(r.rule.id for r in forced)],
        missing=verdict.missing,
        risk=verdict.risk,
    )


def _number(value: float | bool | None) -> float | None:
    return None if value is None or isinstance(value, bool) else float(value)
