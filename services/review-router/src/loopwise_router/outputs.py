"""The router's output events, with ids derived from the routed item, not from the input.

Whichever input or clock tick releases an item, its outcome (and its CloudEvents id)
is the same, so a repeat after a crash is recognisably the same event.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from loopwise.events import (
    ComplianceFinding,
    FiredCondition,
    ModelRef,
    ReleasedOutcomeV1,
    ReleasedSegment,
    ReviewDecisionV1,
    ReviewTaskCreatedV1,
    ReviewTaskEscalatedV1,
    ReviewTaskExpiredV1,
    RoutingDecisionV1,
    TaskSegment,
)
from loopwise.events.base import PartyRole
from loopwise.kafka.intake import Emit
from loopwise_router.policy import Policy
from loopwise_router.routing import Verdict
from loopwise_router.state import CallState, SegmentState, TaskState

ID_NAMESPACE = uuid.UUID("3b7f2f0e-8f7e-4a43-9d0b-52f1d1a7c6aa")
PARTY_ROLES = frozenset({"agent", "customer", "ivr", "supervisor", "mixed", "unknown"})
MAX_DERIVED = 2_000


def item_id(kind: str, call_id: str, *parts: str) -> str:
    """A stable id for a routed item: the same on every replay and from every code path."""
    return f"{kind}-{uuid.uuid5(ID_NAMESPACE, '/'.join((call_id, *parts)))}"


@dataclass(frozen=True)
class OutputTopics:
    """Where the router's outputs go."""

    routing: str
    tasks: str
    outcomes: str


class OutputEvents:
    """Builds the router's output events under the running policy's name and version."""

    def __init__(self, policy: Callable[[], Policy], topics: OutputTopics) -> None:
        self.policy = policy
        self.topics = topics

    def escalated(self, state: CallState, task: TaskState, now: float) -> Emit:
        """A task whose SLA passed, raised one level."""
        event = ReviewTaskEscalatedV1(
            tenant_id=state.tenant_id,
            call_id=state.call_id,
            occurred_at=_at(now),
            producer=self.producer(),
            task_id=task.task_id,
            level=task.level,
            priority=task.priority,
            due_at=_at(task.due_at),
            reason=f"SLA of {task.sla_s}s passed without a decision (breach {task.level})",
        )
        return Emit(self.topics.tasks, event, item_id("ev", task.task_id, f"esc{task.level}"))

    def expired(self, state: CallState, task: TaskState, action: str, now: float) -> Emit:
        """A task that can no longer be decided."""
        event = ReviewTaskExpiredV1(
            tenant_id=state.tenant_id,
            call_id=state.call_id,
            occurred_at=_at(now),
            producer=self.producer(),
            task_id=task.task_id,
            reason=f"no decision after {task.level} escalation(s)",
            action=cast(Any, action),
        )
        return Emit(self.topics.tasks, event, item_id("ev", task.task_id, "expired"))

    def producer(self) -> ModelRef:
        """The policy that decided, as the events' producer."""
        policy = self.policy()
        return ModelRef(name=f"routing-policy/{policy.name}", version=policy.version)

    def decision(
        self,
        state: CallState,
        verdict: Verdict,
        scope: str,
        seg: SegmentState | None,
        task: TaskState | None,
        now: float,
        missing: list[Any],
        *,
        redecision_of: str | None = None,
    ) -> Emit:
        """The routing decision of a segment or call (or a call's re-decision, by outcome)."""
        item = seg.segment_id if seg is not None else "call"
        decision_id = item_id("rd", state.call_id, item)
        if redecision_of is not None:
            decision_id = item_id("rd", state.call_id, item, "late", verdict.outcome)
        reviewed = verdict.outcome != "auto"
        event = RoutingDecisionV1(
            tenant_id=state.tenant_id,
            call_id=state.call_id,
            occurred_at=_at(now),
            producer=self.producer(),
            derived_from=_sources(state, [seg] if seg is not None else state.ordered_segments()),
            decision_id=decision_id,
            scope=cast(Any, scope),
            segment_id=seg.segment_id if seg is not None else None,
            outcome=verdict.outcome,
            rule_id=verdict.rule_id,
            fired=[
                FiredCondition(rule_id=f.rule_id, condition=f.condition[:500], observed=f.observed)
                for f in verdict.fired[:200]
            ],
            policy_version=verdict.policy_version,
            sampling_draw=verdict.sampling_draw,
            sample_rate=verdict.sample_rate,
            priority=verdict.priority if reviewed else None,
            sla_s=verdict.sla_s if reviewed else None,
            mode=verdict.mode if reviewed else None,
            task_id=task.task_id if task is not None else None,
            missing_inputs=missing,
            redecision_of=redecision_of,
            risk_score=verdict.risk if scope == "call" else None,
        )
        return Emit(self.topics.routing, event, decision_id)

    def task_created(
        self,
        state: CallState,
        task: TaskState,
        verdict: Verdict,
        segs: list[SegmentState],
        now: float,
        *,
        note: str | None = None,
    ) -> Emit:
        """A new review task; `note` goes first among its reasons."""
        reasons = ([note] if note else []) + [
            f"{f.rule_id}: {f.condition}"
            + (f" (saw {f.observed})" if f.observed is not None else "")
            for f in verdict.fired
        ]
        reasons = reasons[:50]
        event = ReviewTaskCreatedV1(
            tenant_id=state.tenant_id,
            call_id=state.call_id,
            occurred_at=_at(now),
            producer=self.producer(),
            derived_from=_sources(state, segs),
            task_id=task.task_id,
            scope=task.scope,
            kind=task.kind,
            mode=task.mode,
            priority=task.priority,
            due_at=_at(task.due_at),
            rule_ids=task.rule_ids[:50],
            reasons=[r[:500] for r in reasons],
            policy_version=verdict.policy_version,
            queue=state.queue,
            language=_language(state, segs),
            segments=[_task_segment(s) for s in segs],
            call_findings=(
                [ComplianceFinding.model_validate(f) for f in state.call_findings or []]
                if task.scope == "call"
                else []
            ),
            compliance_pack=next(
                (ModelRef.model_validate(s.compliance_pack) for s in segs if s.compliance_pack),
                None,
            ),
        )
        return Emit(self.topics.tasks, event, item_id("ev", task.task_id, "created"))

    def outcome(
        self,
        state: CallState,
        scope: str,
        segs: list[SegmentState],
        release: str,
        now: float,
        *,
        task: TaskState | None = None,
        seg_id: str | None = None,
        decision: ReviewDecisionV1 | None = None,
        dismissed: Iterable[str] = (),
        suffix: tuple[str, ...] = (),
    ) -> Emit:
        item = seg_id if scope == "segment" and seg_id is not None else "call"
        outcome_id = item_id("out", state.call_id, item, *suffix)
        gone = set(dismissed)
        findings = [f for s in segs for f in s.findings or []]
        if scope == "call":
            findings = list(state.call_findings or []) + findings
        event = ReleasedOutcomeV1(
            tenant_id=state.tenant_id,
            call_id=state.call_id,
            occurred_at=_at(now),
            producer=self.producer(),
            derived_from=_sources(state, segs) + ([decision.decision_id] if decision else []),
            outcome_id=outcome_id,
            scope=cast(Any, scope),
            release=cast(Any, release),
            verdict=decision.verdict if decision else None,
            task_id=task.task_id if task is not None else None,
            decision_id=decision.decision_id if decision else None,
            policy_version=state.policy_version or self.policy().version,
            segments=[_released_segment(s) for s in segs],
            findings=[
                ComplianceFinding.model_validate(f) for f in findings if f["finding_id"] not in gone
            ][:500],
        )
        return Emit(self.topics.outcomes, event, outcome_id)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _language(state: CallState, segs: list[SegmentState]) -> str | None:
    language = state.language or next((s.language for s in segs if s.language), None)
    return language[:16] if language else None  # a long BCP 47 tag keeps its leading subtags


def _role(speaker: str) -> PartyRole:
    return cast(PartyRole, speaker if speaker in PARTY_ROLES else "unknown")


def _sources(state: CallState, segs: list[SegmentState]) -> list[str]:
    ids = [i for s in segs for i in s.sources]
    if len(segs) != 1:
        call_sentiment = [state.call_sentiment_source] if state.call_sentiment_source else []
        ids = state.sources + call_sentiment + ids
    return ids[:MAX_DERIVED]


def _task_segment(seg: SegmentState) -> TaskSegment:
    return TaskSegment(
        segment_id=seg.segment_id,
        speaker=_role(seg.speaker),
        start_s=seg.start_s,
        end_s=seg.end_s,
        text=seg.text or "",
        transcript_confidence=seg.confidence,
        sentiment_label=cast(Any, seg.sentiment.label) if seg.sentiment else None,
        sentiment_score=seg.sentiment.score if seg.sentiment else None,
        sentiment_confidence=seg.sentiment.confidence if seg.sentiment else None,
        findings=[ComplianceFinding.model_validate(f) for f in seg.findings or []],
        asr_model=ModelRef.model_validate(seg.asr_model) if seg.asr_model else None,
        sentiment_model=(
            ModelRef.model_validate(seg.sentiment_model) if seg.sentiment_model else None
        ),
    )


def _released_segment(seg: SegmentState) -> ReleasedSegment:
    label = seg.relabel or (seg.sentiment.label if seg.sentiment else None)
    return ReleasedSegment(
        segment_id=seg.segment_id,
        speaker=_role(seg.speaker),
        start_s=seg.start_s,
        end_s=seg.end_s,
        text=seg.corrected_text if seg.corrected_text is not None else seg.text or "",
        corrected=seg.corrected_text is not None,
        sentiment_label=cast(Any, label),
    )
