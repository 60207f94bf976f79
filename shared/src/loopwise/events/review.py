"""Routing decisions, review tasks, reviewer decisions and released outcomes."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from loopwise.events.base import (
    ContractModel,
    DerivedCallEvent,
    ModelRef,
    PartyRole,
    Probability,
    TenantEvent,
)
from loopwise.events.scores import ComplianceFinding, SentimentLabel

RoutingOutcome = Literal["auto", "sample", "hold"]
ReviewMode = Literal["realtime", "post_call"]
Scope = Literal["segment", "call"]
Priority = Literal["p1", "p2", "p3", "p4"]


class FiredCondition(ContractModel):
    """One policy condition that held, with the value it saw."""

    rule_id: str = Field(max_length=128, description="Policy rule the condition belongs to")
    condition: str = Field(max_length=500, description="The condition as written in the policy")
    observed: str | float | bool | None = Field(description="The value the condition compared")


class RoutingDecisionV1(DerivedCallEvent):
    """What the policy decided for a segment or a finished call, even when nobody reviews it."""

    event_type = "io.loopwise.routing.decision.v1"

    decision_id: str = Field(
        min_length=1, max_length=200, description="Decision id, stable on replay"
    )
    scope: Scope = Field(description="Whether a segment or a whole call was routed")
    segment_id: str | None = Field(default=None, max_length=160, description="Routed segment")
    outcome: RoutingOutcome = Field(
        description="auto: released; sample: released and reviewed; hold"
    )
    rule_id: str | None = Field(
        default=None, max_length=128, description="Rule that decided; none = default"
    )
    fired: list[FiredCondition] = Field(
        default_factory=list, max_length=200, description="Conditions that held, to re-derive it"
    )
    policy_version: str = Field(
        min_length=1, max_length=128, description="Content hash of the policy"
    )
    sampling_draw: float | None = Field(
        default=None, ge=0, le=1, description="Deterministic draw compared with the sample rate"
    )
    sample_rate: float | None = Field(default=None, ge=0, le=1, description="Rate the draw met")
    priority: Priority | None = Field(default=None, description="Review priority, when reviewed")
    sla_s: int | None = Field(
        default=None, ge=0, description="Seconds a reviewer has, when reviewed"
    )
    mode: ReviewMode | None = Field(default=None, description="realtime alert or post-call review")
    task_id: str | None = Field(
        default=None, max_length=200, description="Review task opened, if any"
    )
    missing_inputs: list[Literal["transcript", "sentiment", "compliance"]] = Field(
        default_factory=list,
        max_length=3,
        description="Inputs still missing when the join window closed and the item was decided",
    )
    redecision_of: str | None = Field(
        default=None,
        max_length=200,
        description=(
            "Set on a re-decision: the decision id of the earlier call decision that an input "
            "arriving after the call was decided (a late segment, a compliance or sentiment "
            "revision) made stronger; the outcome released then is not released again"
        ),
    )
    risk_score: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "Call decisions of a policy with a risk section: the call's calibrated risk "
            "(call.risk), so the budget decision can be re-derived; absent otherwise"
        ),
    )


class TaskSegment(ContractModel):
    """A segment as the reviewer sees it, with its scores."""

    segment_id: str = Field(max_length=160, description="Segment id")
    speaker: PartyRole = Field(description="Who spoke")
    start_s: float = Field(ge=0, description="Start, seconds from call start")
    end_s: float = Field(ge=0, description="End, seconds from call start")
    text: str = Field(max_length=20_000, description="Redacted transcript text")
    transcript_confidence: Probability | None = Field(default=None, description="ASR confidence")
    sentiment_label: SentimentLabel | None = Field(default=None, description="Model sentiment")
    sentiment_score: float | None = Field(default=None, ge=-1, le=1, description="Model score")
    sentiment_confidence: Probability | None = Field(default=None, description="Model confidence")
    findings: list[ComplianceFinding] = Field(
        default_factory=list, max_length=200, description="Compliance findings on this segment"
    )
    asr_model: ModelRef | None = Field(
        default=None, description="ASR model and version that made the text, when known"
    )
    sentiment_model: ModelRef | None = Field(
        default=None, description="Sentiment model and version that scored it, when known"
    )


class ReviewTaskCreatedV1(DerivedCallEvent):
    """A person must look at a segment or call."""

    event_type = "io.loopwise.review.task.created.v1"

    task_id: str = Field(min_length=1, max_length=200, description="Task id, stable on replay")
    scope: Scope = Field(description="Segment or whole call")
    kind: Literal["hold", "sample"] = Field(description="hold blocks release; sample does not")
    mode: ReviewMode = Field(description="realtime alert during the call or post-call review")
    priority: Priority = Field(description="p1 is the most urgent")
    due_at: AwareDatetime = Field(description="When the SLA is breached")
    rule_ids: list[str] = Field(
        min_length=1, max_length=50, description="Rules that asked for review"
    )
    reasons: list[str] = Field(
        default_factory=list, max_length=50, description="Readable reasons shown to the reviewer"
    )
    policy_version: str = Field(min_length=1, max_length=128, description="Policy content hash")
    queue: str | None = Field(default=None, max_length=200, description="Call's queue")
    language: str | None = Field(default=None, max_length=16, description="Call language")
    segments: list[TaskSegment] = Field(
        default_factory=list, max_length=5_000, description="What the reviewer reviews"
    )
    call_findings: list[ComplianceFinding] = Field(
        default_factory=list,
        max_length=500,
        description="Call-level findings to confirm or dismiss",
    )
    compliance_pack: ModelRef | None = Field(
        default=None, description="Rule pack and version that made the findings, when known"
    )


class ReviewTaskEscalatedV1(DerivedCallEvent):
    """A task's SLA passed without a decision; it is raised to a supervisor."""

    event_type = "io.loopwise.review.task.escalated.v1"

    task_id: str = Field(min_length=1, max_length=200, description="Escalated task")
    level: int = Field(ge=1, le=10, description="Escalation level, 1 for the first breach")
    priority: Priority = Field(description="Priority after escalation")
    due_at: AwareDatetime = Field(description="New deadline")
    reason: str = Field(max_length=500, description="Why it was escalated")


class ReviewTaskExpiredV1(DerivedCallEvent):
    """A task can no longer be decided (past its final deadline or withdrawn)."""

    event_type = "io.loopwise.review.task.expired.v1"

    task_id: str = Field(min_length=1, max_length=200, description="Expired task")
    reason: str = Field(max_length=500, description="Why it expired")
    action: Literal["released_unreviewed", "kept_held", "withdrawn"] = Field(
        description="What happened to the held item"
    )


class TranscriptCorrection(ContractModel):
    """A reviewer's corrected text for a segment."""

    segment_id: str = Field(max_length=160, description="Corrected segment")
    text: str = Field(max_length=20_000, description="Corrected text (redaction tokens kept)")


class SentimentRelabel(ContractModel):
    """A reviewer's sentiment label for a segment."""

    segment_id: str = Field(max_length=160, description="Relabelled segment")
    label: SentimentLabel = Field(description="The label the reviewer gives")


class FindingVerdict(ContractModel):
    """A reviewer's verdict on one compliance finding."""

    finding_id: str = Field(max_length=200, description="Judged finding")
    rule_id: str = Field(max_length=128, description="Rule of the finding")
    verdict: Literal["confirmed", "dismissed"] = Field(description="True or false positive")
    note: str | None = Field(default=None, max_length=2_000, description="Reviewer's note")


class ReviewDecisionV1(DerivedCallEvent):
    """A person's decision on a review task."""

    event_type = "io.loopwise.review.decision.v1"

    decision_id: str = Field(min_length=1, max_length=200, description="Decision id")
    task_id: str = Field(min_length=1, max_length=200, description="Decided task")
    reviewer_id: str = Field(min_length=1, max_length=128, description="Pseudonymous reviewer id")
    verdict: Literal["approve", "reject"] = Field(
        description="approve: release (with corrections); reject: the item must not be released"
    )
    transcript_corrections: list[TranscriptCorrection] = Field(
        default_factory=list, max_length=5_000, description="Corrected segment texts"
    )
    sentiment_labels: list[SentimentRelabel] = Field(
        default_factory=list, max_length=5_000, description="Sentiment labels given"
    )
    finding_verdicts: list[FindingVerdict] = Field(
        default_factory=list, max_length=1_000, description="Findings confirmed or dismissed"
    )
    comment: str | None = Field(default=None, max_length=5_000, description="Free comment")
    seconds_to_decide: float | None = Field(
        default=None, ge=0, description="From claiming the task to deciding"
    )


class ReleasedSegment(ContractModel):
    """A segment as released to the CX platform."""

    segment_id: str = Field(max_length=160, description="Segment id")
    speaker: PartyRole = Field(description="Who spoke")
    start_s: float = Field(ge=0, description="Start, seconds from call start")
    end_s: float = Field(ge=0, description="End, seconds from call start")
    text: str = Field(max_length=20_000, description="Redacted text, corrected where a person did")
    corrected: bool = Field(default=False, description="Whether a person corrected the text")
    sentiment_label: SentimentLabel | None = Field(
        default=None, description="Final sentiment label"
    )


class ReleasedOutcomeV1(DerivedCallEvent):
    """A segment or call released to the CX platform, and how it was validated."""

    event_type = "io.loopwise.outcome.released.v1"

    outcome_id: str = Field(
        min_length=1, max_length=200, description="Outcome id, stable on replay"
    )
    scope: Literal["segment", "call"] = Field(description="Segment or whole call")
    release: Literal["auto", "sampled", "reviewed", "expired"] = Field(
        description="Released at once, released and sampled, validated by a person, or SLA expiry"
    )
    verdict: Literal["approve", "reject"] | None = Field(
        default=None, description="The reviewer's verdict, when reviewed"
    )
    task_id: str | None = Field(default=None, max_length=200, description="Review task, if any")
    decision_id: str | None = Field(default=None, max_length=200, description="Decision applied")
    policy_version: str = Field(min_length=1, max_length=128, description="Policy content hash")
    segments: list[ReleasedSegment] = Field(
        default_factory=list, max_length=5_000, description="Released segments"
    )
    findings: list[ComplianceFinding] = Field(
        default_factory=list, max_length=500, description="Findings standing after review"
    )


class ConsoleAuditV1(TenantEvent):
    """A review-console request that was denied, or a decision a person made there.

    Keyed by tenant id (a denial may name no call). Denials of callers who did not
    authenticate are recorded under the console's configured audit tenant.
    """

    event_type = "io.loopwise.console.audit.v1"

    audit_id: str = Field(min_length=1, max_length=200, description="Audit event id")
    action: str = Field(
        min_length=1,
        max_length=64,
        description="What was asked: task.claim, task.decide, task.view, tokens.create, ...",
    )
    outcome: Literal["allowed", "denied"] = Field(description="Whether the console allowed it")
    status: int = Field(ge=100, le=599, description="HTTP status the console answered")
    actor_id: str | None = Field(
        default=None, max_length=128, description="Pseudonymous caller id; none if unknown"
    )
    actor_role: str | None = Field(default=None, max_length=32, description="Caller's role")
    auth: Literal["token", "oidc", "none"] = Field(description="How the caller authenticated")
    method: str = Field(max_length=10, description="HTTP method")
    route: str = Field(max_length=200, description="Route template, e.g. /api/v1/tasks/{task_id}")
    task_id: str | None = Field(default=None, max_length=200, description="Task concerned")
    task_call_id: str | None = Field(
        default=None, max_length=128, description="Call of the task concerned"
    )
    decision_id: str | None = Field(default=None, max_length=200, description="Decision made")
    reason: str | None = Field(default=None, max_length=500, description="Why it was denied")
