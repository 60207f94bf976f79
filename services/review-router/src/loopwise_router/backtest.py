"""Backtest: replay scored calls (the batch commands' JSON lines) through the router's own code.

Each call becomes a `CallState` exactly as the streaming join would build it,
with every score in and the call ended; `Router.tick` then decides its
segments and the call, so a backtest figure comes from the live decision code.
A call counts as reviewed when the call or any of its segments is held or
sampled. Input shapes are those of `/tmp/loopwise-batch-contract.md`: segment
lines grouped by `call_id`, dialogue lines with `turns`, and call-level lines
carrying only `call_findings`.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from loopwise.events import RoutingDecisionV1
from loopwise_router.handler import JoinSettings, OutputTopics, Router
from loopwise_router.policy import SEVERITIES, Policy
from loopwise_router.risk import call_risk
from loopwise_router.state import CallSentimentFacts, CallState, SegmentState, SentimentFacts

BACKTEST_CLOCK = 1.0e9
"""Replay time: far past every join window, so nothing waits for a score that will not come."""


BUDGETS: tuple[float, ...] = (0.05, 0.10, 0.15, 0.20)
"""Review budgets of the risk curve: the riskiest 5%, 10%, ... of calls."""


class BacktestInputError(ValueError):
    """An input line is not JSON or not a segment, dialogue or call line."""


@dataclass
class BacktestCall:
    """One call to replay and its label (None when unlabelled)."""

    state: CallState
    label: bool | None


@dataclass(frozen=True)
class CallResult:
    """What the policy did with one call."""

    call_id: str
    queue: str | None
    label: bool | None
    reviewed: bool
    outcome: str
    risk: float | None


def budget_curve(
    results: list[CallResult], budgets: tuple[float, ...] = BUDGETS
) -> list[dict[str, Any]]:
    """Labelled calls caught when the riskiest share of calls is reviewed, next to random sampling.

    Random sampling of the same share catches that share of the positives on average,
    so `lift_over_random` is recall / budget. Ties in risk are broken by call id.
    """
    ranked = sorted(
        (r for r in results if r.label is not None and r.risk is not None),
        key=lambda r: (-(r.risk or 0.0), r.call_id),
    )
    positives = sum(1 for r in ranked if r.label)
    out: list[dict[str, Any]] = []
    for budget in budgets:
        k = round(budget * len(ranked))
        if not ranked or not positives or k == 0:
            continue
        caught = sum(1 for r in ranked[:k] if r.label)
        share = k / len(ranked)
        out.append(
            {
                "budget": budget,
                "reviewed": k,
                "caught": caught,
                "positives": positives,
                "recall": round(caught / positives, 4),
                "random_expected": round(share * positives, 2),
                "lift_over_random": round(caught / positives / share, 2),
            }
        )
    return out


@dataclass
class BacktestReport:
    """What the policy would have done to the input."""

    policy: str
    policy_version: str
    items: int = 0
    segments: int = 0
    held: int = 0
    sampled: int = 0
    auto: int = 0
    segments_held: int = 0
    segments_sampled: int = 0
    segments_auto: int = 0
    per_rule: dict[str, dict[str, int]] = field(default_factory=dict)
    labelled: int = 0
    positives: int = 0
    caught: int = 0
    flagged_labelled: int = 0
    calls: list[CallResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as one JSON-able object."""
        reviewed = self.held + self.sampled
        rate = reviewed / self.items if self.items else 0.0
        out: dict[str, Any] = {
            "policy": self.policy,
            "policy_version": self.policy_version,
            "items": self.items,
            "segments": self.segments,
            "held": self.held,
            "sampled": self.sampled,
            "auto": self.auto,
            "review_rate": round(rate, 4),
            "segments_held": self.segments_held,
            "segments_sampled": self.segments_sampled,
            "segments_auto": self.segments_auto,
            "per_rule": dict(sorted(self.per_rule.items())),
            "labelled": self.labelled,
        }
        if self.labelled:
            recall = self.caught / self.positives if self.positives else None
            precision = self.caught / self.flagged_labelled if self.flagged_labelled else None
            out.update(
                {
                    "positives": self.positives,
                    "caught": self.caught,
                    "recall": round(recall, 4) if recall is not None else None,
                    "precision": round(precision, 4) if precision is not None else None,
                    "random_sampling_recall": round(rate, 4),
                    "lift_over_random": round(recall / rate, 2) if recall and rate else None,
                }
            )
            curve = budget_curve(self.calls)
            if curve:
                out["risk_budget_curve"] = curve
        return out


def read_lines(source: str | Path, stdin: TextIO | None = None) -> Iterator[dict[str, Any]]:
    """JSON objects from a file or `-` (stdin), one per non-empty line."""
    if str(source) != "-":
        with Path(source).open(encoding="utf-8") as handle:
            yield from _parse(handle, str(source))
        return
    yield from _parse(stdin or sys.stdin, "<stdin>")


def _parse(handle: TextIO, source: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BacktestInputError(f"{source}:{number}: not JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise BacktestInputError(f"{source}:{number}: a line must be a JSON object")
        yield obj


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _prob(value: Any) -> float | None:
    number = _num(value)
    return None if number is None else min(1.0, max(0.0, number))


def _category(value: Any) -> str:
    text = re.sub(r"[^a-z0-9_]", "_", str(value or "other").lower())[:64]
    return text if text[:1].isalpha() else f"x{text}"[:64]


def normalise_finding(raw: Any, call_id: str, segment_id: str | None, index: int) -> dict[str, Any]:
    """A batch finding as ComplianceFinding JSON (ids filled in where the batch gives none)."""
    f = raw if isinstance(raw, dict) else {}
    evidence = f.get("evidence") if isinstance(f.get("evidence"), dict) else {}
    assert isinstance(evidence, dict)
    rule_id = str(f.get("rule_id") or "unknown")[:128]
    seg = f.get("segment_id") or segment_id
    start, end = evidence.get("start"), evidence.get("end")
    severity = f.get("severity")
    return {
        "finding_id": str(f.get("finding_id") or f"{call_id}/{seg or 'call'}/{rule_id}/{index}")[
            :200
        ],
        "rule_id": rule_id,
        "category": _category(f.get("category")),
        "severity": severity if severity in SEVERITIES else "medium",
        "score": _prob(f.get("score")) if _prob(f.get("score")) is not None else 1.0,
        "evidence": {
            "segment_id": str(seg)[:160] if seg else None,
            "start": start if isinstance(start, int) and not isinstance(start, bool) else None,
            "end": end if isinstance(end, int) and not isinstance(end, bool) else None,
            "text": str(evidence.get("text") or "")[:2000],
        },
        "segment_id": str(seg)[:160] if seg else None,
    }


def _sentiment(raw: Any) -> SentimentFacts | None:
    if not isinstance(raw, dict) or _num(raw.get("score")) is None:
        return None
    label = (
        raw.get("label") if raw.get("label") in ("negative", "neutral", "positive") else "neutral"
    )
    return SentimentFacts(
        label=str(label),
        score=max(-1.0, min(1.0, float(raw["score"]))),
        confidence=_prob(raw.get("confidence")) or 0.0,
    )


def _call_sentiment(raw: Any) -> CallSentimentFacts | None:
    if not isinstance(raw, dict):
        return None
    label = raw.get("label")
    return CallSentimentFacts(
        final=_num(raw.get("final")),
        worst=_num(raw.get("worst")),
        trend=_num(raw.get("trend")),
        label=label if isinstance(label, str) else None,
        confidence=_prob(raw.get("confidence")),
        at_end=True,
    )


def _add_segment(state: CallState, obj: dict[str, Any], index: int) -> None:
    seg_id = str(obj.get("segment_id") or f"{state.call_id}-s{index:04d}")[:160]
    start = _num(obj.get("start", obj.get("start_s")))
    start = float(index) if start is None else start
    end = _num(obj.get("end", obj.get("end_s")))
    if end is not None and end < start:
        raise BacktestInputError(f"`end` ({end}) is before `start` ({start})")
    text = str(obj.get("text") or "")
    seg = SegmentState(
        segment_id=seg_id,
        speaker=str(obj.get("speaker") or "unknown"),
        start_s=max(0.0, start),
        end_s=max(0.0, end if end is not None else start + 1.0),
        text=text,
        confidence=_prob(obj.get("confidence")),
        language=obj.get("language") if isinstance(obj.get("language"), str) else None,
        words=len(text.split()),
        sentiment=_sentiment(obj.get("sentiment")),
        findings=[
            normalise_finding(f, state.call_id, seg_id, i)
            for i, f in enumerate(obj.get("findings") or [])
        ]
        if "findings" in obj
        else None,
        seen_at=0.0,
    )
    state.segments[seg_id] = seg


def _new_state(obj: dict[str, Any], call_id: str, tenant: str) -> CallState:
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    queue = obj.get("queue", obj.get("domain"))
    return CallState(
        tenant_id=str(obj.get("tenant_id") or tenant),
        call_id=call_id,
        started=True,
        queue=str(queue) if queue is not None else None,
        region=str(obj["region"]) if obj.get("region") is not None else None,
        language=obj.get("language") if isinstance(obj.get("language"), str) else None,
        metadata=dict(metadata or {}),
        ended_at=0.0,
        end_reason="completed",
    )


def group_calls(
    records: Iterable[dict[str, Any]], label_field: str = "label", tenant: str = "default"
) -> list[BacktestCall]:
    """Turn input lines into calls: dialogues as they are, segment lines grouped by call id."""
    states: dict[str, CallState] = {}
    labels: dict[str, bool | None] = defaultdict(lambda: None)
    counts: Counter[str] = Counter()
    for number, obj in enumerate(records, start=1):
        call_id = obj.get("call_id", obj.get("id"))
        if not isinstance(call_id, str) or not call_id:
            raise BacktestInputError(f"line {number}: no call_id (or id)")
        state = states.get(call_id)
        if state is None:
            state = states[call_id] = _new_state(obj, call_id, tenant)
        label = obj.get(label_field)
        if isinstance(label, bool):
            labels[call_id] = bool(labels[call_id]) or label
        if isinstance(obj.get("turns"), list):
            for index, turn in enumerate(obj["turns"]):
                if isinstance(turn, dict):
                    try:
                        _add_segment(state, turn, counts[call_id])
                    except BacktestInputError as exc:
                        raise BacktestInputError(f"line {number}: turn {index}: {exc}") from None
                    counts[call_id] += 1
        elif "text" in obj:
            try:
                _add_segment(state, obj, counts[call_id])
            except BacktestInputError as exc:
                raise BacktestInputError(f"line {number}: {exc}") from None
            counts[call_id] += 1
        if "call_findings" in obj:
            state.call_findings = [
                normalise_finding(f, call_id, None, i)
                for i, f in enumerate(obj.get("call_findings") or [])
            ]
        if obj.get("call_sentiment") is not None:
            state.call_sentiment = _call_sentiment(obj["call_sentiment"])
    return [BacktestCall(state, labels[c]) for c, state in states.items()]


def run_backtest(policy: Policy, calls: Iterable[BacktestCall]) -> BacktestReport:
    """Route every call with the router's own code and count what it did."""
    # History is taken as scored: an absent score is not "missing" (no fail-closed holds)
    join = JoinSettings(needs_sentiment=False, needs_compliance=False)
    router = Router(lambda: policy, OutputTopics("routing", "tasks", "outcomes"), join)
    report = BacktestReport(policy=policy.name, policy_version=policy.version)
    for call in calls:
        # Routing changes the state (segments decided, tasks opened): route a copy, so the
        # same calls can be replayed against another policy.
        state = call.state.model_copy(deep=True)
        emits = router.tick(state, BACKTEST_CLOCK)
        decisions = [e.event for e in emits if isinstance(e.event, RoutingDecisionV1)]
        outcomes = Counter[str]()
        for decision in decisions:
            outcomes[decision.outcome] += 1
            if decision.scope == "segment":
                report.segments += 1
                if decision.outcome == "hold":
                    report.segments_held += 1
                elif decision.outcome == "sample":
                    report.segments_sampled += 1
                else:
                    report.segments_auto += 1
            for rule_id in {f.rule_id for f in decision.fired}:
                entry = report.per_rule.setdefault(rule_id, {"fired": 0, "decided": 0})
                entry["fired"] += 1
            if decision.rule_id is not None:
                entry = report.per_rule.setdefault(decision.rule_id, {"fired": 0, "decided": 0})
                entry["decided"] += 1
        report.items += 1
        if outcomes["hold"]:
            report.held += 1
        elif outcomes["sample"]:
            report.sampled += 1
        else:
            report.auto += 1
        reviewed = bool(outcomes["hold"] or outcomes["sample"])
        outcome = "hold" if outcomes["hold"] else "sample" if outcomes["sample"] else "auto"
        report.calls.append(
            CallResult(
                state.call_id,
                state.queue,
                call.label,
                reviewed,
                outcome,
                call_risk(policy, state),
            )
        )
        if call.label is not None:
            report.labelled += 1
            report.positives += int(call.label)
            report.caught += int(call.label and reviewed)
            report.flagged_labelled += int(reviewed)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as readable lines."""
    lines = [
        f"policy           {report['policy']} ({report['policy_version']})",
        f"items (calls)    {report['items']}  segments {report['segments']}",
        f"held / sampled / auto   {report['held']} / {report['sampled']} / {report['auto']}",
        f"review rate      {report['review_rate']:.1%}",
        f"segments held / sampled / auto   {report['segments_held']} / "
        f"{report['segments_sampled']} / {report['segments_auto']}",
        "per rule (items where it fired / decided):",
    ]
    for rule_id, entry in report["per_rule"].items():
        lines.append(f"  {rule_id:40} {entry['fired']:6} {entry['decided']:6}")
    if report["labelled"]:
        recall = report["recall"]
        precision = report["precision"]
        lines.append(
            f"labelled {report['labelled']}: {report['caught']} of {report['positives']} positives "
            f"go to review; recall {recall if recall is not None else 'n/a'}, "
            f"precision {precision if precision is not None else 'n/a'}; "
            f"random sampling at the same rate catches {report['random_sampling_recall']:.1%}"
        )
    for row in report.get("risk_budget_curve", []):
        lines.append(
            f"riskiest {row['budget']:.0%} of calls ({row['reviewed']}): {row['caught']} of "
            f"{row['positives']} positives (random: {row['random_expected']}), "
            f"{row['lift_over_random']}x random"
        )
    return "\n".join(lines)
