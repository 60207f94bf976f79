"""Pure functions from a review task and its decision to training rows; no Kafka, no disk."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loopwise.events import (
    ComplianceFinding,
    ModelRef,
    ReleasedOutcomeV1,
    ReviewDecisionV1,
    ReviewTaskCreatedV1,
    TaskSegment,
)
from loopwise.redaction import redact

ASR = "asr"
SENTIMENT = "sentiment"
COMPLIANCE = "compliance"
LABEL_STUDIO = "label_studio"
KINDS = (ASR, SENTIMENT, COMPLIANCE, LABEL_STUDIO)

UNKNOWN = "unknown"


@dataclass(frozen=True)
class TrainingRow:
    """One training example of one kind, with where it belongs."""

    kind: str
    tenant_id: str
    row_id: str
    date: str
    model_name: str
    model_version: str
    decided_at: float
    body: dict[str, Any]

    @property
    def model_key(self) -> str:
        """Folder-safe name of the model version this row judges."""
        return model_key(self.model_name, self.model_version)


@dataclass(frozen=True)
class DecisionFact:
    """When a task was opened and decided, for the time-to-decision figures."""

    tenant_id: str
    decision_id: str
    task_id: str
    policy_version: str
    verdict: str
    task_created_at: float
    decided_at: float
    seconds_to_decide: float | None


@dataclass(frozen=True)
class OutcomeFact:
    """How one item was released, for the auto-released versus reviewed share."""

    tenant_id: str
    outcome_id: str
    policy_version: str
    release: str
    scope: str
    occurred_at: float


@dataclass
class DecisionRows:
    """Everything one decision contributes, and what could not be used."""

    rows: list[TrainingRow] = field(default_factory=list)
    fact: DecisionFact | None = None
    skipped: list[str] = field(default_factory=list)


def model_key(name: str, version: str) -> str:
    """`name@version` with every character outside [A-Za-z0-9._@-] replaced, for folder names."""
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", f"{name}@{version}")


def _ref(model: ModelRef | None) -> tuple[str, str]:
    return (model.name, model.version) if model is not None else (UNKNOWN, UNKNOWN)


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


def audio_reference(template: str, tenant_id: str, call_id: str, segment: TaskSegment) -> str:
    """The audio file a segment was cut from, per the configured template."""
    return template.format(
        tenant_id=tenant_id,
        call_id=call_id,
        segment_id=segment.segment_id,
        speaker=segment.speaker,
    )


def decision_rows(
    task: ReviewTaskCreatedV1,
    decision: ReviewDecisionV1,
    event_id: str,
    *,
    audio_path_template: str,
) -> DecisionRows:
    """The ASR, sentiment, compliance and Label Studio rows one decision makes from its task."""
    out = DecisionRows()
    decided = _utc(decision.occurred_at)
    date = decided.date().isoformat()
    at = decided.timestamp()
    common: dict[str, Any] = {
        "tenant_id": decision.tenant_id,
        "call_id": decision.call_id,
        "task_id": decision.task_id,
        "decision_id": decision.decision_id,
        "reviewer_id": decision.reviewer_id,
        "event_id": event_id,
        "decided_at": decided.isoformat(),
    }
    segments = {s.segment_id: s for s in task.segments}
    # Reviewers type corrections by hand: redact them again, so a number typed into the console
    # never reaches a training set.
    corrections = {c.segment_id: redact(c.text).text for c in decision.transcript_corrections}
    relabels = {r.segment_id: r.label for r in decision.sentiment_labels}
    for unknown in sorted((set(corrections) | set(relabels)) - set(segments)):
        out.skipped.append(f"segment {unknown!r} is not in task {task.task_id!r}")

    def row(kind: str, row_id: str, model: tuple[str, str], body: dict[str, Any]) -> TrainingRow:
        return TrainingRow(
            kind=kind,
            tenant_id=decision.tenant_id,
            row_id=row_id,
            date=date,
            model_name=model[0],
            model_version=model[1],
            decided_at=at,
            body=body,
        )

    for segment in task.segments:
        sid = segment.segment_id
        row_id = f"{decision.decision_id}/{sid}"
        corrected_text = corrections.get(sid)
        # Approving a task confirms the segments the reviewer left alone; a rejection does not.
        reference = corrected_text
        if reference is None and decision.verdict == "approve":
            reference = segment.text
        asr_model = _ref(segment.asr_model)
        audio = audio_reference(audio_path_template, decision.tenant_id, decision.call_id, segment)
        base = {
            **common,
            "segment_id": sid,
            "speaker": segment.speaker,
        }
        if reference is not None:
            out.rows.append(
                row(
                    ASR,
                    row_id,
                    asr_model,
                    {
                        "audio_filepath": audio,
                        "offset": segment.start_s,
                        "duration": round(max(segment.end_s - segment.start_s, 0.0), 6),
                        "text": reference,
                        "pred_text": segment.text,
                        "corrected": corrected_text is not None and corrected_text != segment.text,
                        "lang": task.language,
                        "model_name": asr_model[0],
                        "model_version": asr_model[1],
                        "transcript_confidence": segment.transcript_confidence,
                        **base,
                        "row_id": row_id,
                    },
                )
            )
        label = relabels.get(sid)
        sentiment_model = _ref(segment.sentiment_model)
        if label is not None:
            out.rows.append(
                row(
                    SENTIMENT,
                    row_id,
                    sentiment_model,
                    {
                        **base,
                        "row_id": row_id,
                        "text": reference if reference is not None else segment.text,
                        "label": label,
                        "model_label": segment.sentiment_label,
                        "model_score": segment.sentiment_score,
                        "model_confidence": segment.sentiment_confidence,
                        "agree": segment.sentiment_label == label,
                        "model_name": sentiment_model[0],
                        "model_version": sentiment_model[1],
                    },
                )
            )
        if reference is not None or label is not None:
            out.rows.append(
                row(
                    LABEL_STUDIO,
                    row_id,
                    ("", ""),
                    label_studio_task(
                        segment,
                        audio=audio,
                        row_id=row_id,
                        reference=reference,
                        label=label,
                        asr_model=asr_model,
                        sentiment_model=sentiment_model,
                        common=common,
                    ),
                )
            )

    findings: dict[str, ComplianceFinding] = {f.finding_id: f for f in task.call_findings}
    for segment in task.segments:
        findings.update({f.finding_id: f for f in segment.findings})
    pack = _ref(task.compliance_pack)
    for verdict in decision.finding_verdicts:
        finding = findings.get(verdict.finding_id)
        row_id = f"{decision.decision_id}/{verdict.finding_id}"
        out.rows.append(
            row(
                COMPLIANCE,
                row_id,
                pack,
                {
                    **common,
                    "row_id": row_id,
                    "finding_id": verdict.finding_id,
                    "rule_id": verdict.rule_id,
                    "true_positive": verdict.verdict == "confirmed",
                    "verdict": verdict.verdict,
                    "segment_id": finding.segment_id if finding else None,
                    "category": finding.category if finding else None,
                    "severity": finding.severity if finding else None,
                    "score": finding.score if finding else None,
                    "evidence": finding.evidence.text if finding else None,
                    "pack_name": pack[0],
                    "pack_version": pack[1],
                },
            )
        )
        if finding is None:
            out.skipped.append(f"finding {verdict.finding_id!r} is not in task {task.task_id!r}")

    out.fact = DecisionFact(
        tenant_id=decision.tenant_id,
        decision_id=decision.decision_id,
        task_id=decision.task_id,
        policy_version=task.policy_version,
        verdict=decision.verdict,
        task_created_at=_utc(task.occurred_at).timestamp(),
        decided_at=at,
        seconds_to_decide=decision.seconds_to_decide,
    )
    return out


def _sentiment_choice(label: str) -> dict[str, Any]:
    return {
        "from_name": "sentiment",
        "to_name": "text",
        "type": "choices",
        "value": {"choices": [label.capitalize()]},
    }


def _transcription(text: str) -> dict[str, Any]:
    return {
        "from_name": "transcription",
        "to_name": "audio",
        "type": "textarea",
        "value": {"text": [text]},
    }


def label_studio_task(
    segment: TaskSegment,
    *,
    audio: str,
    row_id: str,
    reference: str | None,
    label: str | None,
    asr_model: tuple[str, str],
    sentiment_model: tuple[str, str],
    common: dict[str, Any],
) -> dict[str, Any]:
    """A Label Studio import task: model output as predictions, the reviewer's as annotation."""
    predictions: list[dict[str, Any]] = [
        {
            "model_version": f"{asr_model[0]}@{asr_model[1]}",
            "result": [_transcription(segment.text)],
        }
    ]
    if segment.sentiment_label is not None:
        prediction: dict[str, Any] = {
            "model_version": f"{sentiment_model[0]}@{sentiment_model[1]}",
            "result": [_sentiment_choice(segment.sentiment_label)],
        }
        if segment.sentiment_confidence is not None:
            prediction["score"] = segment.sentiment_confidence
        predictions.append(prediction)
    result: list[dict[str, Any]] = []
    if reference is not None:
        result.append(_transcription(reference))
    if label is not None:
        result.append(_sentiment_choice(label))
    return {
        "data": {
            "audio": audio,
            "text": segment.text,
            "start_s": segment.start_s,
            "end_s": segment.end_s,
            "speaker": segment.speaker,
            "segment_id": segment.segment_id,
            "call_id": common["call_id"],
            "tenant_id": common["tenant_id"],
            "row_id": row_id,
        },
        "predictions": predictions,
        "annotations": [
            {
                "result": result,
                "completed_by": common["reviewer_id"],
                "created_at": common["decided_at"],
                "meta": {"decision_id": common["decision_id"], "task_id": common["task_id"]},
            }
        ],
    }


def outcome_fact(outcome: ReleasedOutcomeV1) -> OutcomeFact:
    """How an outcome was released, under which policy version."""
    return OutcomeFact(
        tenant_id=outcome.tenant_id,
        outcome_id=outcome.outcome_id,
        policy_version=outcome.policy_version,
        release=outcome.release,
        scope=outcome.scope,
        occurred_at=_utc(outcome.occurred_at).timestamp(),
    )
