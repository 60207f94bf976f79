"""What people do in the console: queue, claim, decide, second opinion, supervise.

Every operation is one database transaction. A decision and its audit event are
written to the outbox in the same transaction as the task's new state, so
nothing is lost while Kafka is down; the outbox publisher sends them later.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Row, func, insert, select, update

from loopwise.events import (
    Envelope,
    FindingVerdict,
    ModelRef,
    ReviewDecisionV1,
    ReviewTaskCreatedV1,
    SentimentRelabel,
    TenantEvent,
    TranscriptCorrection,
    encode,
)
from loopwise.events.review import ConsoleAuditV1
from loopwise.redaction import redact
from loopwise_console.auth import CAN_REVIEW, CAN_SUPERVISE, Principal
from loopwise_console.config import ConsoleSettings
from loopwise_console.schema import blind_labels, outbox, routing_reasons, submissions, tasks
from loopwise_console.store import OPEN_STATES, ConsoleStore, aware, lease_free, utcnow

SERVICE = "review-console"
PRODUCER = ModelRef(name="loopwise-review-console", version="0.1.0")
SentimentLabel = Literal["negative", "neutral", "positive"]

DECISIONS = Counter(
    "loopwise_review_decisions_total", "Decisions published by the console", ["verdict"]
)
CLAIM_CONFLICTS = Counter(
    "loopwise_review_claim_conflicts_total", "Claims refused because another reviewer holds it"
)
for _verdict in ("approve", "reject"):
    DECISIONS.labels(_verdict)


class ConsoleError(Exception):
    """A request the console refuses, with its HTTP status and a machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def not_found(task_id: str) -> ConsoleError:
    """The same answer for an absent task and another tenant's task."""
    return ConsoleError(404, "not_found", f"no task {task_id!r}")


# -- request bodies (also the OpenAPI schema) ---------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorrectionIn(_Body):
    """A segment's corrected text."""

    segment_id: str = Field(min_length=1, max_length=160)
    text: str = Field(max_length=20_000)


class RelabelIn(_Body):
    """The sentiment label the reviewer gives a segment."""

    segment_id: str = Field(min_length=1, max_length=160)
    label: SentimentLabel


class FindingVerdictIn(_Body):
    """Confirm or dismiss one finding, with a note."""

    finding_id: str = Field(min_length=1, max_length=200)
    verdict: Literal["confirmed", "dismissed"]
    note: str | None = Field(default=None, max_length=2_000)


class DecisionIn(_Body):
    """A reviewer's decision on a claimed task."""

    verdict: Literal["approve", "reject"]
    transcript_corrections: list[CorrectionIn] = Field(default_factory=list, max_length=5_000)
    sentiment_labels: list[RelabelIn] = Field(default_factory=list, max_length=5_000)
    finding_verdicts: list[FindingVerdictIn] = Field(default_factory=list, max_length=1_000)
    comment: str | None = Field(default=None, max_length=5_000)


class BlindLabelsIn(_Body):
    """The reviewer's own sentiment labels, given before the model's are shown."""

    labels: list[RelabelIn] = Field(min_length=1, max_length=5_000)


class NoteIn(_Body):
    """A supervisor's note."""

    note: str = Field(min_length=1, max_length=2_000)


class AssignIn(_Body):
    """Whom a supervisor gives the task to."""

    reviewer_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")


@dataclass(frozen=True)
class Filters:
    """Queue filters."""

    tenant: str | None = None
    queue: str | None = None
    priority: str | None = None
    sla: Literal["ok", "due_soon", "overdue"] | None = None
    rule: str | None = None
    kind: Literal["hold", "sample"] | None = None
    state: Literal["open", "second_opinion", "disputed", "decided", "expired", "all"] | None = None
    mine: bool = False


@dataclass
class Outcome:
    """What a decision did."""

    state: str
    decision_id: str | None = None
    agreed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Console:
    """The console's operations over the store."""

    def __init__(self, store: ConsoleStore, settings: ConsoleSettings) -> None:
        self.store = store
        self.settings = settings

    # -- reading ---------------------------------------------------------------------------

    def _scope(self, principal: Principal, tenant: str | None) -> list[str]:
        if tenant is None:
            return list(principal.tenants)
        return [tenant] if tenant in principal.tenants else []

    def list_tasks(
        self, principal: Principal, filters: Filters, limit: int, offset: int
    ) -> tuple[list[Row[Any]], int]:
        """A page of tasks (most urgent first) and how many match."""
        now = utcnow()
        where: list[Any] = [tasks.c.tenant_id.in_(self._scope(principal, filters.tenant))]
        state = filters.state or "open"
        if state == "open":
            where.append(tasks.c.state.in_(OPEN_STATES))
        elif state != "all":
            where.append(tasks.c.state == state)
        if filters.queue is not None:
            where.append(tasks.c.queue == filters.queue)
        if filters.priority is not None:
            where.append(tasks.c.priority == filters.priority)
        if filters.kind is not None:
            where.append(tasks.c.kind == filters.kind)
        if filters.rule is not None:
            where.append(tasks.c.rule_ids.contains(json.dumps(filters.rule)))
        if filters.mine:
            where.append(tasks.c.claimed_by == principal.subject)
        soon = now + timedelta(seconds=self.settings.lease_s)
        if filters.sla == "overdue":
            where.append(tasks.c.due_at <= now)
        elif filters.sla == "due_soon":
            where.append(tasks.c.due_at > now)
            where.append(tasks.c.due_at <= soon)
        elif filters.sla == "ok":
            where.append(tasks.c.due_at > soon)
        with self.store.read() as conn:
            total = int(
                conn.execute(select(func.count()).select_from(tasks).where(*where)).scalar_one()
            )
            rows = list(
                conn.execute(
                    select(tasks)
                    .where(*where)
                    .order_by(tasks.c.priority, tasks.c.due_at, tasks.c.id)
                    .limit(limit)
                    .offset(offset)
                )
            )
        return rows, total

    def counts(self, principal: Principal, tenant: str | None = None) -> dict[str, dict[str, Any]]:
        """Open tasks per priority with the oldest's age, and how many are overdue."""
        now = utcnow()
        scope = self._scope(principal, tenant)
        with self.store.read() as conn:
            stats = self.store.queue_stats(conn, scope, now)
            overdue: dict[str, int] = dict(
                conn.execute(
                    select(tasks.c.priority, func.count())
                    .where(
                        tasks.c.tenant_id.in_(scope),
                        tasks.c.state.in_(OPEN_STATES),
                        tasks.c.due_at <= now,
                    )
                    .group_by(tasks.c.priority)
                ).all()
            )
        return {
            p: {
                "open": stats.get(p, (0, 0.0))[0],
                "oldest_age_s": round(stats.get(p, (0, 0.0))[1], 1),
                "overdue": int(overdue.get(p, 0)),
            }
            for p in ("p1", "p2", "p3", "p4")
        }

    def get(self, principal: Principal, task_id: str) -> dict[str, Any]:
        """The task view: what the reviewer reviews and why it was held."""
        with self.store.read() as conn:
            row = conn.execute(
                select(tasks).where(
                    tasks.c.task_id == task_id, tasks.c.tenant_id.in_(principal.tenants)
                )
            ).first()
            if row is None:
                raise not_found(task_id)
            reasons = conn.execute(
                select(routing_reasons).where(
                    routing_reasons.c.tenant_id == row.tenant_id,
                    routing_reasons.c.task_id == task_id,
                )
            ).first()
            subs = list(
                conn.execute(
                    select(submissions)
                    .where(
                        submissions.c.tenant_id == row.tenant_id,
                        submissions.c.task_id == task_id,
                        submissions.c.superseded.is_(False),
                    )
                    .order_by(submissions.c.id)
                )
            )
            own_labels = conn.execute(
                select(blind_labels.c.labels).where(
                    blind_labels.c.tenant_id == row.tenant_id,
                    blind_labels.c.task_id == task_id,
                    blind_labels.c.reviewer_id == principal.subject,
                )
            ).scalar()
        event = ReviewTaskCreatedV1.model_validate_json(row.body)
        body = event.model_dump(mode="json")
        hidden = self.settings.blind_review and own_labels is None and principal.role != "auditor"
        hidden = hidden and row.state in OPEN_STATES
        if hidden:
            for segment in body["segments"]:
                for name in ("sentiment_label", "sentiment_score", "sentiment_confidence"):
                    segment[name] = None
        return {
            **task_summary(row),
            "reasons": event.reasons,
            "held_because": {
                "rule_ids": event.rule_ids,
                "reasons": event.reasons,
                "policy_version": event.policy_version,
                "conditions": json.loads(reasons.fired) if reasons is not None else [],
                "routing_decision_id": reasons.decision_id if reasons is not None else None,
                "sampling_draw": reasons.sampling_draw if reasons is not None else None,
                "sample_rate": reasons.sample_rate if reasons is not None else None,
            },
            "segments": body["segments"],
            "call_findings": body["call_findings"],
            "compliance_pack": body["compliance_pack"],
            "blind": {
                "enabled": self.settings.blind_review,
                "model_labels_hidden": hidden,
                "own_labels": json.loads(own_labels) if own_labels else None,
            },
            "opinions": [
                {
                    "reviewer_id": s.reviewer_id,
                    "role": s.role,
                    "verdict": s.verdict,
                    "submitted_at": aware(s.submitted_at),
                }
                for s in subs
            ]
            if principal.role != "reviewer" or row.state != "second_opinion"
            else [{"reviewer_id": "(hidden until the second opinion)"} for _ in subs],
            "note": row.note,
        }

    # -- claiming --------------------------------------------------------------------------

    def claim(self, principal: Principal, task_id: str) -> dict[str, Any]:
        """Take the task for `lease_s` seconds (again: extend the lease)."""
        require(principal, CAN_REVIEW, "claim tasks")
        now = utcnow()
        until = now + timedelta(seconds=self.settings.lease_s)
        with self.store.write() as conn:
            row = self.store.lock_task(conn, principal.tenants, task_id)
            if row is None:
                raise not_found(task_id)
            self._claimable(conn, principal, row)
            mine = row.claimed_by == principal.subject
            done = conn.execute(
                update(tasks)
                .where(
                    tasks.c.id == row.id,
                    tasks.c.state == row.state,
                    lease_free(now) | (tasks.c.claimed_by == principal.subject),
                )
                .values(
                    claimed_by=principal.subject,
                    claimed_at=row.claimed_at if mine else now,
                    lease_until=until,
                )
            )
            if done.rowcount != 1:
                CLAIM_CONFLICTS.inc()
                raise ConsoleError(409, "already_claimed", "another reviewer holds this task")
            fresh = conn.execute(select(tasks).where(tasks.c.id == row.id)).one()
        return task_summary(fresh)

    def _claimable(self, conn: Connection, principal: Principal, row: Row[Any]) -> None:
        if row.state in ("decided", "expired"):
            raise ConsoleError(409, f"task_{row.state}", f"the task is {row.state}")
        if row.state == "disputed" and principal.role not in CAN_SUPERVISE:
            raise ConsoleError(403, "forbidden", "a disputed task is settled by a supervisor")
        if row.state == "second_opinion":
            first = conn.execute(
                select(submissions.c.reviewer_id).where(
                    submissions.c.tenant_id == row.tenant_id,
                    submissions.c.task_id == row.task_id,
                    submissions.c.superseded.is_(False),
                )
            ).scalars()
            if principal.subject in set(first):
                raise ConsoleError(
                    409, "second_opinion_needed", "a second, different reviewer must decide"
                )
        now = utcnow()
        if row.claimed_by not in (None, principal.subject) and row.lease_until > now:
            CLAIM_CONFLICTS.inc()
            raise ConsoleError(409, "already_claimed", "another reviewer holds this task")

    def release(self, principal: Principal, task_id: str) -> dict[str, Any]:
        """Give the task back to the queue."""
        require(principal, CAN_REVIEW, "release tasks")
        with self.store.write() as conn:
            row = self.store.lock_task(conn, principal.tenants, task_id)
            if row is None:
                raise not_found(task_id)
            self._holding(principal, row)
            conn.execute(
                update(tasks)
                .where(tasks.c.id == row.id)
                .values(claimed_by=None, claimed_at=None, lease_until=None)
            )
            fresh = conn.execute(select(tasks).where(tasks.c.id == row.id)).one()
        return task_summary(fresh)

    def _holding(self, principal: Principal, row: Row[Any]) -> None:
        if row.state in ("decided", "expired"):
            raise ConsoleError(409, f"task_{row.state}", f"the task is {row.state}")
        if row.claimed_by != principal.subject:
            raise ConsoleError(409, "not_claimed", "claim the task first (or it was reassigned)")
        if row.lease_until is None or row.lease_until <= utcnow():
            raise ConsoleError(409, "lease_lost", "your lease on this task expired; claim it again")

    def give_blind_labels(
        self, principal: Principal, task_id: str, body: BlindLabelsIn
    ) -> dict[str, Any]:
        """Record the reviewer's own labels; the model's are shown afterwards."""
        require(principal, CAN_REVIEW, "label tasks")
        with self.store.write() as conn:
            row = self.store.lock_task(conn, principal.tenants, task_id)
            if row is None:
                raise not_found(task_id)
            self._holding(principal, row)
            event = ReviewTaskCreatedV1.model_validate_json(row.body)
            known = {s.segment_id for s in event.segments}
            unknown = sorted({x.segment_id for x in body.labels} - known)
            if unknown:
                raise ConsoleError(422, "unknown_segment", f"no segment {unknown[0]!r} in the task")
            labels = json.dumps({x.segment_id: x.label for x in body.labels})
            exists = conn.execute(
                select(blind_labels.c.labels).where(
                    blind_labels.c.tenant_id == row.tenant_id,
                    blind_labels.c.task_id == task_id,
                    blind_labels.c.reviewer_id == principal.subject,
                )
            ).first()
            if exists is not None:
                raise ConsoleError(409, "labels_given", "your own labels are already recorded")
            conn.execute(
                insert(blind_labels).values(
                    tenant_id=row.tenant_id,
                    task_id=task_id,
                    reviewer_id=principal.subject,
                    labels=labels,
                    given_at=utcnow(),
                )
            )
        return {"task_id": task_id, "labels": json.loads(labels)}

    # -- deciding --------------------------------------------------------------------------

    def decide(self, principal: Principal, task_id: str, body: DecisionIn, route: str) -> Outcome:
        """Record a decision; publish it (through the outbox) unless a second opinion is due."""
        require(principal, CAN_REVIEW, "decide tasks")
        now = utcnow()
        with self.store.write() as conn:
            row = self.store.lock_task(conn, principal.tenants, task_id)
            if row is None:
                raise not_found(task_id)
            self._holding(principal, row)
            event = ReviewTaskCreatedV1.model_validate_json(row.body)
            payload = self._validated(event, body)
            seconds = max(0.0, (now - row.claimed_at).total_seconds()) if row.claimed_at else None
            conn.execute(
                insert(submissions).values(
                    tenant_id=row.tenant_id,
                    task_id=task_id,
                    reviewer_id=principal.subject,
                    role=principal.role,
                    verdict=body.verdict,
                    payload=json.dumps(payload),
                    submitted_at=now,
                    seconds_to_decide=seconds,
                    superseded=False,
                )
            )
            release = {"claimed_by": None, "claimed_at": None, "lease_until": None}
            needs_two = row.priority in self.settings.second_opinion
            if needs_two and row.state == "open":
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id == row.id)
                    .values(state="second_opinion", **release)
                )
                self.audit_in(conn, principal, "task.first_opinion", 200, "POST", route, row=row)
                return Outcome(state="second_opinion")
            agreed: bool | None = None
            if row.state == "second_opinion":
                first = conn.execute(
                    select(submissions)
                    .where(
                        submissions.c.tenant_id == row.tenant_id,
                        submissions.c.task_id == task_id,
                        submissions.c.superseded.is_(False),
                        submissions.c.reviewer_id != principal.subject,
                    )
                    .order_by(submissions.c.id)
                ).first()
                agreed = first is not None and opinions_agree(
                    first.verdict, json.loads(first.payload), body.verdict, payload
                )
                if not agreed:
                    conn.execute(
                        update(tasks)
                        .where(tasks.c.id == row.id)
                        .values(state="disputed", **release)
                    )
                    self.audit_in(conn, principal, "task.dispute", 200, "POST", route, row=row)
                    return Outcome(state="disputed", agreed=False)
            decision = ReviewDecisionV1(
                tenant_id=row.tenant_id,
                call_id=row.call_id,
                occurred_at=aware(now) or now,
                producer=PRODUCER,
                derived_from=[row.source_event_id],
                decision_id=f"dec-{uuid.uuid4().hex}",
                task_id=task_id,
                reviewer_id=principal.subject,
                verdict=body.verdict,
                transcript_corrections=[
                    TranscriptCorrection(**c) for c in payload["transcript_corrections"]
                ],
                sentiment_labels=[SentimentRelabel(**s) for s in payload["sentiment_labels"]],
                finding_verdicts=[FindingVerdict(**v) for v in payload["finding_verdicts"]],
                comment=_comment(body.comment, agreed, row.state),
                seconds_to_decide=seconds,
            )
            self.enqueue(conn, self.settings.decisions_topic, decision, row.traceparent)
            conn.execute(
                update(tasks)
                .where(tasks.c.id == row.id)
                .values(
                    state="decided",
                    verdict=body.verdict,
                    decision_id=decision.decision_id,
                    decided_at=now,
                    **release,
                )
            )
            self.audit_in(
                conn,
                principal,
                "task.decide",
                200,
                "POST",
                route,
                row=row,
                decision_id=decision.decision_id,
            )
        DECISIONS.labels(body.verdict).inc()
        return Outcome(state="decided", decision_id=decision.decision_id, agreed=agreed)

    def _validated(self, event: ReviewTaskCreatedV1, body: DecisionIn) -> dict[str, Any]:
        """The decision's parts checked against the task; corrected text redacted."""
        segments = {s.segment_id: s for s in event.segments}
        findings = {f.finding_id: f for f in event.call_findings}
        for s in event.segments:
            findings.update({f.finding_id: f for f in s.findings})
        items: list[CorrectionIn | RelabelIn] = [
            *body.transcript_corrections,
            *body.sentiment_labels,
        ]
        for item in items:
            if item.segment_id not in segments:
                raise ConsoleError(
                    422, "unknown_segment", f"no segment {item.segment_id!r} in the task"
                )
        for verdict in body.finding_verdicts:
            if verdict.finding_id not in findings:
                raise ConsoleError(
                    422, "unknown_finding", f"no finding {verdict.finding_id!r} in the task"
                )
        corrections = []
        for c in body.transcript_corrections:
            # Card numbers and other PII a reviewer types are redacted like any transcript.
            text = redact(c.text).text
            if text != segments[c.segment_id].text:
                corrections.append({"segment_id": c.segment_id, "text": text})
        return {
            "transcript_corrections": corrections,
            "sentiment_labels": [s.model_dump() for s in body.sentiment_labels],
            "finding_verdicts": [
                {
                    "finding_id": v.finding_id,
                    "rule_id": findings[v.finding_id].rule_id,
                    "verdict": v.verdict,
                    "note": v.note,
                }
                for v in body.finding_verdicts
            ],
            "comment": body.comment,
        }

    # -- supervising -----------------------------------------------------------------------

    def rework(self, principal: Principal, task_id: str, note: str, route: str) -> dict[str, Any]:
        """Send a task back to the queue for a fresh review; earlier opinions are set aside."""
        require(principal, CAN_SUPERVISE, "send tasks back for rework")
        with self.store.write() as conn:
            row = self.store.lock_task(conn, principal.tenants, task_id)
            if row is None:
                raise not_found(task_id)
            if row.state not in OPEN_STATES:
                raise ConsoleError(409, f"task_{row.state}", f"the task is {row.state}")
            conn.execute(
                update(submissions)
                .where(submissions.c.tenant_id == row.tenant_id, submissions.c.task_id == task_id)
                .values(superseded=True)
            )
            conn.execute(
                update(tasks)
                .where(tasks.c.id == row.id)
                .values(state="open", claimed_by=None, claimed_at=None, lease_until=None, note=note)
            )
            self.audit_in(conn, principal, "task.rework", 200, "POST", route, row=row)
            fresh = conn.execute(select(tasks).where(tasks.c.id == row.id)).one()
        return task_summary(fresh)

    def assign(
        self, principal: Principal, task_id: str, reviewer_id: str, route: str
    ) -> dict[str, Any]:
        """Give the task to a reviewer (a fresh lease in their name)."""
        require(principal, CAN_SUPERVISE, "reassign tasks")
        now = utcnow()
        with self.store.write() as conn:
            row = self.store.lock_task(conn, principal.tenants, task_id)
            if row is None:
                raise not_found(task_id)
            if row.state not in OPEN_STATES:
                raise ConsoleError(409, f"task_{row.state}", f"the task is {row.state}")
            conn.execute(
                update(tasks)
                .where(tasks.c.id == row.id)
                .values(
                    claimed_by=reviewer_id,
                    claimed_at=now,
                    lease_until=now + timedelta(seconds=self.settings.lease_s),
                )
            )
            self.audit_in(conn, principal, "task.assign", 200, "POST", route, row=row)
            fresh = conn.execute(select(tasks).where(tasks.c.id == row.id)).one()
        return task_summary(fresh)

    def overview(self, principal: Principal) -> dict[str, Any]:
        """Overdue tasks, reviewer workload and agreement between reviewers."""
        require(principal, CAN_SUPERVISE | {"auditor"}, "see the supervisor view")
        now = utcnow()
        scope = list(principal.tenants)
        with self.store.read() as conn:
            overdue = list(
                conn.execute(
                    select(tasks)
                    .where(
                        tasks.c.tenant_id.in_(scope),
                        tasks.c.state.in_(OPEN_STATES),
                        tasks.c.due_at <= now,
                    )
                    .order_by(tasks.c.due_at)
                    .limit(100)
                )
            )
            holding: dict[str, int] = dict(
                conn.execute(
                    select(tasks.c.claimed_by, func.count())
                    .where(
                        tasks.c.tenant_id.in_(scope),
                        tasks.c.state.in_(OPEN_STATES),
                        tasks.c.claimed_by.is_not(None),
                        tasks.c.lease_until > now,
                    )
                    .group_by(tasks.c.claimed_by)
                ).all()
            )
            since = now - timedelta(days=1)
            decided: dict[str, int] = dict(
                conn.execute(
                    select(submissions.c.reviewer_id, func.count())
                    .where(submissions.c.tenant_id.in_(scope), submissions.c.submitted_at >= since)
                    .group_by(submissions.c.reviewer_id)
                ).all()
            )
            subs = list(
                conn.execute(
                    select(submissions)
                    .where(submissions.c.tenant_id.in_(scope), submissions.c.superseded.is_(False))
                    .order_by(submissions.c.id)
                )
            )
        workload = [
            {
                "reviewer_id": r,
                "holding": int(holding.get(r, 0)),
                "decided_24h": int(decided.get(r, 0)),
            }
            for r in sorted(set(holding) | set(decided))
        ]
        return {
            "overdue": [task_summary(r) for r in overdue],
            "workload": workload,
            "agreement": agreement(subs),
            "queue": self.counts(principal),
        }

    def alerts_since(
        self, principal: Principal, after: int, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Realtime tasks (alerts during a call) materialised after row id `after`."""
        require(principal, CAN_SUPERVISE | {"auditor"}, "watch alerts")
        with self.store.read() as conn:
            rows = list(
                conn.execute(
                    select(tasks)
                    .where(
                        tasks.c.tenant_id.in_(principal.tenants),
                        tasks.c.mode == "realtime",
                        tasks.c.id > after,
                    )
                    .order_by(tasks.c.id)
                    .limit(limit)
                )
            )
        return [
            {**task_summary(r), "seq": r.id, "reasons": json.loads(r.body)["reasons"]} for r in rows
        ]

    def latest_alert_seq(self) -> int:
        """The newest task row id (an SSE stream starts after it unless told otherwise)."""
        with self.store.read() as conn:
            return int(conn.execute(select(func.coalesce(func.max(tasks.c.id), 0))).scalar_one())

    # -- outbox and audit ------------------------------------------------------------------

    def enqueue(
        self, conn: Connection, topic: str, event: TenantEvent, traceparent: str | None = None
    ) -> str:
        """Write an event to the outbox inside the caller's transaction; return its event id."""
        parent = Envelope(type="parent", source=SERVICE, traceparent=traceparent)
        key, value, headers, envelope = encode(
            event, source=SERVICE, parent=parent if traceparent else None
        )
        conn.execute(
            insert(outbox).values(
                event_id=envelope.id,
                topic=topic,
                key=key.decode("utf-8"),
                value=value.decode("utf-8"),
                headers=json.dumps([[n, v.decode("utf-8")] for n, v in headers if v is not None]),
                created_at=utcnow(),
                attempts=0,
            )
        )
        return envelope.id

    def audit_in(
        self,
        conn: Connection,
        principal: Principal | None,
        action: str,
        status: int,
        method: str,
        route: str,
        *,
        row: Row[Any] | None = None,
        task_id: str | None = None,
        decision_id: str | None = None,
        reason: str | None = None,
        tenant_id: str | None = None,
    ) -> None:
        """Record an audit event (a denial or a decision) in the outbox."""
        tenant = (
            (row.tenant_id if row is not None else None)
            or tenant_id
            or (principal.tenants[0] if principal is not None and principal.tenants else None)
            or self.settings.audit_tenant
        )
        event = ConsoleAuditV1(
            tenant_id=tenant,
            occurred_at=aware(utcnow()) or utcnow(),
            audit_id=f"aud-{uuid.uuid4().hex}",
            action=action[:64],
            outcome="allowed" if status < 400 else "denied",
            status=status,
            actor_id=principal.subject if principal is not None else None,
            actor_role=principal.role if principal is not None else None,
            auth=principal.auth if principal is not None else "none",
            method=method[:10],
            route=route[:200],
            task_id=(row.task_id if row is not None else task_id),
            task_call_id=row.call_id if row is not None else None,
            decision_id=decision_id,
            reason=reason[:500] if reason else None,
        )
        self.enqueue(conn, self.settings.audit_topic, event)

    def audit_denial(
        self,
        principal: Principal | None,
        action: str,
        status: int,
        method: str,
        route: str,
        reason: str,
        task_id: str | None = None,
    ) -> None:
        """Record a denied request in its own transaction (the request's own work rolled back).

        A cross-tenant probe is recorded under the task's real tenant, so its auditors see it.
        """
        with self.store.write() as conn:
            row = None
            if task_id is not None:
                row = conn.execute(select(tasks).where(tasks.c.task_id == task_id)).first()
            self.audit_in(
                conn,
                principal,
                action,
                status,
                method,
                route,
                row=row,
                task_id=task_id,
                reason=reason,
            )


def require(principal: Principal, roles: frozenset[str], what: str) -> None:
    """403 unless the caller's role may do this."""
    if principal.role not in roles:
        raise ConsoleError(403, "forbidden", f"the {principal.role} role may not {what}")


def task_summary(row: Row[Any]) -> dict[str, Any]:
    """A task as a queue line."""
    now = utcnow()
    lease_held = (
        row.claimed_by is not None and row.lease_until is not None and row.lease_until > now
    )
    return {
        "task_id": row.task_id,
        "tenant_id": row.tenant_id,
        "call_id": row.call_id,
        "scope": row.scope,
        "kind": row.kind,
        "mode": row.mode,
        "priority": row.priority,
        "queue": row.queue,
        "language": row.language,
        "rule_ids": json.loads(row.rule_ids),
        "policy_version": row.policy_version,
        "state": row.state,
        "created_at": aware(row.created_at),
        "due_at": aware(row.due_at),
        "age_s": round(max(0.0, (now - row.created_at).total_seconds()), 1),
        "overdue": row.state in OPEN_STATES and row.due_at <= now,
        "escalation_level": row.escalation_level,
        "claimed_by": row.claimed_by if lease_held else None,
        "lease_until": aware(row.lease_until) if lease_held else None,
        "verdict": row.verdict,
        "decision_id": row.decision_id,
        "decided_at": aware(row.decided_at),
    }


def opinions_agree(
    verdict_a: str, payload_a: dict[str, Any], verdict_b: str, payload_b: dict[str, Any]
) -> bool:
    """Two reviewers agree when their verdicts and their verdicts on common findings match."""
    if verdict_a != verdict_b:
        return False
    a = {v["finding_id"]: v["verdict"] for v in payload_a.get("finding_verdicts", [])}
    b = {v["finding_id"]: v["verdict"] for v in payload_b.get("finding_verdicts", [])}
    return all(a[k] == b[k] for k in set(a) & set(b))


def agreement(subs: Sequence[Row[Any]]) -> dict[str, Any]:
    """Agreement between the first two reviewers' opinions on each twice-reviewed task."""
    by_task: dict[tuple[str, str], list[Row[Any]]] = {}
    for s in subs:
        if s.role == "reviewer":
            by_task.setdefault((s.tenant_id, s.task_id), []).append(s)
    pairs = agreed = 0
    for opinions in by_task.values():
        if len(opinions) >= 2:
            a, b = opinions[0], opinions[1]
            pairs += 1
            agreed += opinions_agree(
                a.verdict, json.loads(a.payload), b.verdict, json.loads(b.payload)
            )
    return {"pairs": pairs, "agreed": agreed, "rate": round(agreed / pairs, 4) if pairs else None}


def _comment(comment: str | None, agreed: bool | None, state: str) -> str | None:
    if agreed:
        note = "second opinion agreed"
    elif state == "disputed":
        note = "settled by a supervisor after the reviewers disagreed"
    else:
        return comment
    return f"{comment} ({note})" if comment else note
