"""Builders of review tasks, decisions and outcomes (variations of loopwise.events.examples)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType

import pytest

from loopwise.events import (
    ComplianceFinding,
    Evidence,
    FindingVerdict,
    ModelRef,
    ReleasedOutcomeV1,
    ReleasedSegment,
    ReviewDecisionV1,
    ReviewTaskCreatedV1,
    SentimentRelabel,
    TaskSegment,
    TranscriptCorrection,
)
from loopwise.events.examples import example_events

ASR_V1 = ModelRef(name="faster-whisper/whisper-tiny", version="ct2-int8")
ASR_V2 = ModelRef(name="faster-whisper/whisper-tiny", version="ct2-int8-v2")
VADER = ModelRef(name="vader", version="3.3.2")
PACK = ModelRef(name="default-pack", version="1")
POLICY = "sha256:ab12"
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def example(kind: type, call_id: str) -> object:
    """The example event of one type for a call."""
    return next(e for e in example_events(call_id=call_id, at=T0) if isinstance(e, kind))


@dataclass
class Seg:
    """One segment of a case: machine output and what the reviewer said."""

    machine: str
    corrected: str | None = None
    model_label: str | None = "neutral"
    human_label: str | None = None
    asr: ModelRef | None = ASR_V1


@dataclass
class Case:
    """A review task, its decision and its released outcome."""

    task: ReviewTaskCreatedV1
    decision: ReviewDecisionV1
    outcome: ReleasedOutcomeV1
    segs: list[Seg] = field(default_factory=list)


def make_case(
    n: int,
    segs: list[Seg],
    *,
    verdicts: tuple[tuple[str, bool], ...] = (),
    decide_after_s: float = 600.0,
    verdict: str = "approve",
    task_at: datetime | None = None,
    tenant_id: str = "acme",
) -> Case:
    """A case numbered n: a task over segs, the reviewer's decision and the reviewed outcome."""
    call_id = f"call-{n:04d}"
    base_task = example(ReviewTaskCreatedV1, call_id)
    opened = task_at or T0 + timedelta(minutes=n)
    segments, findings = [], []
    for i, seg in enumerate(segs):
        sid = f"seg-{i + 1:04d}"
        segments.append(
            TaskSegment(
                segment_id=sid,
                speaker="customer" if i % 2 == 0 else "agent",
                start_s=3.0 + 10 * i,
                end_s=7.5 + 10 * i,
                text=seg.machine,
                transcript_confidence=0.8,
                sentiment_label=seg.model_label,  # type: ignore[arg-type]
                sentiment_score=-0.5 if seg.model_label == "negative" else 0.1,
                sentiment_confidence=0.7,
                findings=[],
                asr_model=seg.asr,
                sentiment_model=VADER,
            )
        )
    for j, (rule_id, _) in enumerate(verdicts):
        findings.append(
            ComplianceFinding(
                finding_id=f"{call_id}/f{j}/{rule_id}",
                rule_id=rule_id,
                category=rule_id.split(".")[0],
                severity="high",
                score=0.9,
                evidence=Evidence(segment_id="seg-0001", text="[CARD_NUMBER]"),
                segment_id="seg-0001",
            )
        )
    segments[0] = segments[0].model_copy(update={"findings": findings})
    task = base_task.model_copy(  # type: ignore[attr-defined]
        update={
            "tenant_id": tenant_id,
            "occurred_at": opened,
            "task_id": f"task-{call_id}",
            "segments": segments,
            "compliance_pack": PACK,
            "policy_version": POLICY,
        }
    )
    decided = opened + timedelta(seconds=decide_after_s)
    decision = ReviewDecisionV1(
        tenant_id=tenant_id,
        call_id=call_id,
        occurred_at=decided,
        producer=ModelRef(name="review-console", version="0.1.0"),
        decision_id=f"dec-{call_id}",
        task_id=task.task_id,
        reviewer_id="rev-7",
        verdict=verdict,  # type: ignore[arg-type]
        transcript_corrections=[
            TranscriptCorrection(segment_id=f"seg-{i + 1:04d}", text=s.corrected)
            for i, s in enumerate(segs)
            if s.corrected is not None
        ],
        sentiment_labels=[
            SentimentRelabel(segment_id=f"seg-{i + 1:04d}", label=s.human_label)  # type: ignore[arg-type]
            for i, s in enumerate(segs)
            if s.human_label is not None
        ],
        finding_verdicts=[
            FindingVerdict(
                finding_id=f.finding_id,
                rule_id=f.rule_id,
                verdict="confirmed" if ok else "dismissed",
            )
            for f, (_, ok) in zip(findings, verdicts, strict=True)
        ],
        seconds_to_decide=30.0,
    )
    outcome = ReleasedOutcomeV1(
        tenant_id=tenant_id,
        call_id=call_id,
        occurred_at=decided,
        producer=ModelRef(name="routing-policy", version=POLICY),
        outcome_id=f"{call_id}/reviewed",
        scope="segment",
        release="reviewed",
        verdict=verdict,  # type: ignore[arg-type]
        task_id=task.task_id,
        decision_id=decision.decision_id,
        policy_version=POLICY,
        segments=[
            ReleasedSegment(
                segment_id=s.segment_id,
                speaker=s.speaker,
                start_s=s.start_s,
                end_s=s.end_s,
                text=s.text,
            )
            for s in segments
        ],
    )
    return Case(task, decision, outcome, segs)


def auto_outcome(n: int, release: str = "auto") -> ReleasedOutcomeV1:
    """An outcome released without review."""
    call_id = f"call-auto-{n:04d}"
    return ReleasedOutcomeV1(
        tenant_id="acme",
        call_id=call_id,
        occurred_at=T0 + timedelta(minutes=n),
        producer=ModelRef(name="routing-policy", version=POLICY),
        outcome_id=f"{call_id}/seg-0001",
        scope="segment",
        release=release,  # type: ignore[arg-type]
        policy_version=POLICY,
    )


@pytest.fixture(scope="session")
def fb() -> ModuleType:
    """These builders (a conftest cannot be imported by name under --import-mode=importlib)."""
    return sys.modules[__name__]
