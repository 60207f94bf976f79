"""The router's pure core: one event (or a clock tick) and a call's state in, outputs out.

No Kafka here. The app loads a call's state from its table, calls `Router.handle`
or `Router.tick`, sends the outputs, then stores the state. The events themselves
are built in `outputs.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from loopwise.events import (
    CallComplianceV1,
    CallEndedV1,
    CallMetadataV1,
    CallSentimentV1,
    CallStartedV1,
    ReviewDecisionV1,
    SegmentComplianceV1,
    SegmentSentimentV1,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise.kafka.intake import Emit
from loopwise.logging import get_logger
from loopwise_router.outputs import MAX_DERIVED, OutputEvents, OutputTopics, item_id
from loopwise_router.policy import Policy, Priority
from loopwise_router.routing import Verdict, route_call, route_segment
from loopwise_router.state import (
    CallSentimentFacts,
    CallState,
    ParkedDecision,
    SegmentState,
    SentimentFacts,
    TaskState,
    by_start,
)

__all__ = ["DecisionRejected", "GivenUp", "JoinSettings", "OutputTopics", "Router", "item_id"]

log = get_logger(__name__)

_RAISE: dict[str, Priority] = {"p4": "p3", "p3": "p2", "p2": "p1", "p1": "p1"}
_STRENGTH: dict[str, int] = {"auto": 0, "sample": 1, "hold": 2}
LATE_NOTE = (
    "late finding after release: an input that came after the call was decided made its "
    "verdict {outcome} where {done} was released; the released call outcome stands (a hold "
    "can no longer block it): review it and reject it to retract"
)


class DecisionRejected(ValueError):
    """A review decision that cannot be applied (unknown or already decided task)."""


@dataclass(frozen=True)
class JoinSettings:
    """How long the join waits for scores, and which scores it waits for.

    `call_grace_s` is the least time a call waits after CallEnded even when every score
    is in, for the transcriber's last segments flushed at hang-up.
    """

    segment_window_s: float = 5.0
    call_window_s: float = 10.0
    call_grace_s: float = 0.0
    needs_sentiment: bool = True
    needs_compliance: bool = True
    retain_closed_s: float = 7 * 86400.0
    decision_park_s: float = 3600.0


@dataclass(frozen=True)
class GivenUp:
    """A parked decision whose task never came: to be dead-lettered with its coordinates."""

    tenant_id: str
    call_id: str
    parked: ParkedDecision
    reason: str


class Router:
    """Routes segments and calls of one call state at a time."""

    def __init__(
        self,
        policy: Callable[[], Policy],
        topics: OutputTopics,
        join: JoinSettings | None = None,
    ) -> None:
        self.policy = policy
        self.topics = topics
        self.join = join or JoinSettings()
        self.out = OutputEvents(policy, topics)
        self.given_up: list[GivenUp] = []
        """Parked decisions given up on (`take_given_up` empties it)."""

    # ---- inputs -------------------------------------------------------------------------

    def handle(
        self,
        state: CallState | None,
        event: TenantEvent,
        event_id: str,
        now: float,
        partition: int | None = None,
        origin: tuple[str, int, int] | None = None,
    ) -> tuple[CallState, list[Emit]]:
        """Apply one input event to a call's state; return the new state and the outputs.

        A decision for a task the state does not hold (yet) is parked, not rejected: after
        a restart the router can read it before the redelivered input that creates the
        task again. It is applied when the task appears, or dead-lettered after
        `decision_park_s` (`origin`: its topic, partition and offset, for that).
        """
        call_id = str(getattr(event, "call_id", ""))
        if state is None:
            state = CallState(tenant_id=event.tenant_id, call_id=call_id)
        if partition is not None:
            state.partition = partition
        emits: list[Emit] = []
        if isinstance(event, ReviewDecisionV1):
            if event.task_id in state.tasks:
                emits.extend(self._apply_decision(state, event, now))
            else:
                self._park(state, event, event_id, now, origin)
        else:
            self._apply(state, event, event_id, now)
        emits.extend(self._settle(state, now, windows=False))
        return state, emits

    def _park(
        self,
        state: CallState,
        decision: ReviewDecisionV1,
        event_id: str,
        now: float,
        origin: tuple[str, int, int] | None,
    ) -> None:
        if decision.task_id in state.parked:
            return  # redelivered while parked: the first one waits
        topic, partition, offset = origin if origin is not None else (None, None, None)
        state.parked[decision.task_id] = ParkedDecision(
            decision=decision.model_dump_json(),
            event_id=event_id,
            parked_at=now,
            topic=topic,
            partition=partition,
            offset=offset,
        )
        log.info("decision_parked", call_id=state.call_id, task_id=decision.task_id)

    def _settle(self, state: CallState, now: float, *, windows: bool) -> list[Emit]:
        """Route what is due; apply parked decisions whose task now exists; expire the rest."""
        emits = self._progress(state, now, windows=windows)
        if any(task_id in state.tasks for task_id in state.parked):
            for task_id in [t for t in state.parked if t in state.tasks]:
                parked = state.parked.pop(task_id)
                decision = ReviewDecisionV1.model_validate_json(parked.decision)
                try:
                    emits.extend(self._apply_decision(state, decision, now))
                except DecisionRejected as exc:
                    self.given_up.append(GivenUp(state.tenant_id, state.call_id, parked, str(exc)))
                log.info("decision_unparked", call_id=state.call_id, task_id=task_id)
            emits.extend(self._progress(state, now, windows=windows))
        for task_id, parked in list(state.parked.items()):
            if now >= parked.parked_at + self.join.decision_park_s:
                del state.parked[task_id]
                reason = (
                    f"unknown task {task_id} for call {state.call_id}: no such task came "
                    f"within {self.join.decision_park_s:g} s"
                )
                self.given_up.append(GivenUp(state.tenant_id, state.call_id, parked, reason))
        if state.parked:
            state.closed_at = None  # a parked decision keeps the call open
            expiry = min(p.parked_at for p in state.parked.values()) + self.join.decision_park_s
            state.wake_at = expiry if state.wake_at is None else min(state.wake_at, expiry)
        return emits

    def take_given_up(self) -> list[GivenUp]:
        """The parked decisions given up on since the last call."""
        taken, self.given_up = self.given_up, []
        return taken

    def empty(self, state: CallState) -> bool:
        """Whether a state holds nothing (one made only to park a decision, since given up)."""
        return not (
            state.started
            or state.segments
            or state.tasks
            or state.parked
            or state.ended_at is not None
            or state.sources
        )

    def tick(self, state: CallState, now: float) -> list[Emit]:
        """Let time pass for a call: close join windows, escalate or expire tasks.

        Only the clock closes a join window (an input decides only what it completes), so
        the service can hold its clock back while it reads a backlog after a restart.
        """
        return self._settle(state, now, windows=True)

    def _apply(self, state: CallState, event: TenantEvent, event_id: str, now: float) -> None:
        if self._join(state, event, event_id, now) and state.call_status != "open":
            state.recheck = True  # the call was decided: route it again with this input
        del state.sources[:-MAX_DERIVED]

    def _join(self, state: CallState, event: TenantEvent, event_id: str, now: float) -> bool:
        """Join one input into the state; whether it changed what a call rule can see."""
        if isinstance(event, TranscriptSegmentV1):
            seg = state.segment(event.segment_id)
            if seg.transcribed:
                return False  # redelivered or duplicate transcript: the first one stands
            seg.speaker = event.speaker
            seg.start_s, seg.end_s = event.start_s, event.end_s
            seg.text = event.text
            seg.confidence = event.confidence
            seg.language = event.language
            seg.words = len(event.words) if event.words else len(event.text.split())
            seg.seen_at = now
            seg.asr_model = event.producer.model_dump()
            seg.sources.append(event_id)
            return True
        if isinstance(event, SegmentSentimentV1):
            seg = state.segment(event.segment_id)
            if seg.sentiment is not None:
                return False
            seg.sentiment = SentimentFacts(
                label=event.label, score=event.score, confidence=event.confidence
            )
            seg.sentiment_model = event.producer.model_dump()
            seg.sources.append(event_id)
            if seg.status != "pending":
                seg.recheck = True  # decided without it: route the segment again
            return seg.transcribed
        if isinstance(event, SegmentComplianceV1):
            seg = state.segment(event.segment_id)
            if seg.findings is not None:
                return False
            seg.findings = [f.model_dump(mode="json") for f in event.findings]
            seg.compliance_pack = event.producer.model_dump()
            seg.sources.append(event_id)
            if seg.status != "pending":
                seg.recheck = True  # decided without it: route the segment again
            return bool(seg.findings)
        if isinstance(event, CallSentimentV1):
            before = state.call_sentiment
            state.call_sentiment = CallSentimentFacts(
                final=event.final,
                worst=event.worst,
                trend=event.trend,
                label=event.label,
                confidence=event.confidence,
                at_end=event.reason == "call_ended",
            )
            state.call_sentiment_source = event_id  # each replaces the last: the header stays flat
            return state.call_sentiment != before
        if isinstance(event, CallComplianceV1):
            held = state.call_compliance_revision
            if held is not None and event.revision <= held:
                return False  # a redelivery or an older revision than the one held
            state.call_compliance_revision = event.revision
            findings = [f.model_dump(mode="json") for f in event.findings]
            changed = findings != state.call_findings
            state.call_findings = findings
            state.sources.append(event_id)
            return changed
        if isinstance(event, CallStartedV1):
            state.started = True
            state.queue, state.region = event.queue, event.region
            state.language = event.language_hint
            state.direction, state.agent_id = event.direction, event.agent_id
            state.metadata.update(event.metadata)
            state.sources.append(event_id)
            return False
        if isinstance(event, CallMetadataV1):
            state.metadata.update(event.metadata)
            return False
        if isinstance(event, CallEndedV1):
            if state.ended_at is None:
                state.ended_at = now
                state.end_reason = event.reason
                state.duration_s = event.duration_s
                state.sources.append(event_id)
            return False
        raise TypeError(f"the router does not route {type(event).__name__}")

    # ---- the clock ----------------------------------------------------------------------

    def _progress(self, state: CallState, now: float, *, windows: bool = True) -> list[Emit]:
        emits: list[Emit] = []
        join = self.join
        # One walk over the call's live segments per turn (not all of them: an event costs
        # the same however long the call): a status only ever leaves "pending", and only a
        # decided segment is ever marked for a recheck, so the transcribed pending segments
        # found here are the only ones that can wait or wake the call.
        pending: list[SegmentState] = []
        rechecks: list[SegmentState] = []
        for seg in state.live_segments():  # settled segments need nothing from the clock
            if seg.text is None:  # not transcribed yet: nothing to route
                continue
            if seg.status == "pending":
                pending.append(seg)
            if seg.recheck:
                rechecks.append(seg)
        pending.sort(key=by_start)
        rechecks.sort(key=by_start)
        for seg in pending:
            if seg.status != "pending":  # an earlier decision in this turn may have moved it
                continue
            complete = (seg.sentiment is not None or not join.needs_sentiment) and (
                seg.findings is not None or not join.needs_compliance
            )
            seen = seg.seen_at if seg.seen_at is not None else now
            if complete or (windows and now >= seen + join.segment_window_s):
                emits.extend(self._decide_segment(state, seg, now))
        for seg in rechecks:
            if seg.recheck:
                emits.extend(self._recheck_segment(state, seg, now))
        pending = [s for s in pending if s.status == "pending"]
        if state.ended_at is not None and state.call_status == "open":
            sentiment_in = state.call_sentiment is not None and state.call_sentiment.at_end
            complete = (
                (sentiment_in or not join.needs_sentiment)
                and (state.call_findings is not None or not join.needs_compliance)
                and now >= state.ended_at + join.call_grace_s
            )
            expired = windows and now >= state.ended_at + join.call_window_s
            if not pending and (complete or expired):
                emits.extend(self._decide_call(state, now))
        elif state.recheck and not pending:
            emits.extend(self._recheck_call(state, now))
        for task in list(state.tasks.values()):
            if task.status == "open" and now >= task.due_at:
                emits.extend(self._breach(state, task, now))
        state.wake_at = self._next_wake(state, pending)
        busy = any(t.status == "open" for t in state.tasks.values()) or any(
            s.status in ("pending", "held", "awaiting_call") for s in state.live_segments()
        )
        if state.call_status != "open" and not busy:
            state.closed_at = state.closed_at or now
        else:
            state.closed_at = None
        return emits

    def _next_wake(self, state: CallState, pending: list[SegmentState]) -> float | None:
        """When the clock next matters: a pending segment's window, the call's, a task's SLA."""
        times = [
            (s.seen_at if s.seen_at is not None else 0.0) + self.join.segment_window_s
            for s in pending
        ]
        if state.ended_at is not None and state.call_status == "open":
            times.append(state.ended_at + self.join.call_window_s)
            if self.join.call_grace_s > 0:
                times.append(state.ended_at + self.join.call_grace_s)
        times.extend(t.due_at for t in state.tasks.values() if t.status == "open")
        return min(times, default=None)

    def expired(self, state: CallState, now: float) -> bool:
        """Whether a closed call has been kept long enough to forget it."""
        return state.closed_at is not None and now >= state.closed_at + self.join.retain_closed_s

    # ---- decisions ----------------------------------------------------------------------

    def _decide_segment(self, state: CallState, seg: SegmentState, now: float) -> list[Emit]:
        policy = self.policy()
        missing = self._missing(state, seg)
        verdict = route_segment(policy, state, seg, missing)
        seg.missing = missing
        state.policy_version = policy.version
        seg.outcome, seg.rule_id, seg.mode = verdict.outcome, verdict.rule_id, verdict.mode
        task: TaskState | None = None
        emits: list[Emit] = []
        if (
            verdict.outcome == "hold"
            and verdict.mode == "post_call"
            and state.call_status == "open"
        ):
            seg.status = "awaiting_call"
            for rule in verdict.review_rules:
                if rule.rule.id not in state.waiting_rules:
                    state.waiting_rules.append(rule.rule.id)
        elif verdict.outcome == "hold":
            # realtime, or post_call for a segment that came after its call was decided:
            # there is no call left to hold, so the segment is held on its own
            seg.status = "held"
            task = self._open_task(state, verdict, "hold", "segment", seg, now)
        else:
            seg.status = "released"
            if verdict.outcome == "sample":
                task = self._open_task(state, verdict, "sample", "segment", seg, now)
        if task is not None:
            seg.task_id = task.task_id
        emits.append(self.out.decision(state, verdict, "segment", seg, task, now, missing))
        if task is not None:
            emits.append(self.out.task_created(state, task, verdict, [seg], now))
        if seg.status == "released":
            release = "sampled" if verdict.outcome == "sample" else "auto"
            emits.append(
                self.out.outcome(
                    state, "segment", [seg], release, now, task=task, seg_id=seg.segment_id
                )
            )
        return emits

    def _decide_call(self, state: CallState, now: float) -> list[Emit]:
        policy = self.policy()
        missing = self._missing(state, None)
        verdict = route_call(policy, state, missing)
        state.policy_version = policy.version
        state.call_outcome, state.call_rule_id = verdict.outcome, verdict.rule_id
        segs = state.ordered_segments()
        task: TaskState | None = None
        if verdict.outcome == "hold":
            state.call_status = "held"
            task = self._open_task(state, verdict, "hold", "call", None, now)
        else:
            state.call_status = "released"
            if verdict.outcome == "sample":
                task = self._open_task(state, verdict, "sample", "call", None, now)
        emits = [self.out.decision(state, verdict, "call", None, task, now, missing)]
        if task is not None:
            emits.append(self.out.task_created(state, task, verdict, segs, now))
        if state.call_status == "released":
            release = "sampled" if verdict.outcome == "sample" else "auto"
            released = [s for s in segs if s.status == "released"]
            emits.append(self.out.outcome(state, "call", released, release, now, task=task))
        return emits

    def _recheck_call(self, state: CallState, now: float) -> list[Emit]:
        """Route a decided call again after a late input; review it if the verdict grew.

        Only a released call can need it: a held call is before a person already and a
        rejected one was never released. The released outcome is never sent again; a
        stronger verdict gets a re-decision and a review task that blocks nothing.
        Idempotent: each outcome strength is re-decided at most once per call, under ids
        derived from the call and that outcome.
        """
        state.recheck = False
        if state.call_status != "released" or state.call_outcome is None:
            return []
        policy = self.policy()
        missing = self._missing(state, None)
        verdict = route_call(policy, state, missing)
        done = max(
            (o for o in (state.call_outcome, state.late_outcome) if o is not None),
            key=_STRENGTH.__getitem__,
        )
        if _STRENGTH[verdict.outcome] <= _STRENGTH[done]:
            return []
        state.late_outcome = verdict.outcome
        kind = "hold" if verdict.outcome == "hold" else "sample"
        task = self._open_task(state, verdict, kind, "call", None, now, late=True)
        segs = state.ordered_segments()
        first = item_id("rd", state.call_id, "call")
        return [
            self.out.decision(
                state,
                verdict,
                "call",
                None,
                task,
                now,
                missing,
                redecision_of=first,
            ),
            self.out.task_created(
                state,
                task,
                verdict,
                segs,
                now,
                note=LATE_NOTE.format(outcome=verdict.outcome, done=done),
            ),
        ]

    def _recheck_segment(self, state: CallState, seg: SegmentState, now: float) -> list[Emit]:
        """Route a decided segment again after a late score; review it if the verdict grew.

        A released segment cannot be called back: a stronger verdict gets a re-decision and
        a late review task (blocking nothing), and, while its call is still open, a hold
        also holds the call. A held segment is before a person already. Idempotent: each
        outcome strength is re-decided at most once per segment, under derived ids.
        """
        seg.recheck = False
        if seg.status != "released" or seg.outcome is None:
            return []
        policy = self.policy()
        missing = self._missing(state, seg)
        verdict = route_segment(policy, state, seg, missing)
        done = max(
            (o for o in (seg.outcome, seg.late_outcome) if o is not None),
            key=_STRENGTH.__getitem__,
        )
        if _STRENGTH[verdict.outcome] <= _STRENGTH[done]:
            return []
        seg.late_outcome = verdict.outcome
        if verdict.outcome == "hold" and state.call_status == "open":
            for rule in verdict.review_rules:
                if rule.rule.id not in state.waiting_rules:
                    state.waiting_rules.append(rule.rule.id)
        kind = "hold" if verdict.outcome == "hold" else "sample"
        task = self._open_task(state, verdict, kind, "segment", seg, now, late=True)
        first = item_id("rd", state.call_id, seg.segment_id)
        return [
            self.out.decision(
                state, verdict, "segment", seg, task, now, missing, redecision_of=first
            ),
            self.out.task_created(
                state,
                task,
                verdict,
                [seg],
                now,
                note=LATE_NOTE.format(outcome=verdict.outcome, done=done),
            ),
        ]

    def _open_task(
        self,
        state: CallState,
        verdict: Verdict,
        kind: str,
        scope: str,
        seg: SegmentState | None,
        now: float,
        *,
        late: bool = False,
    ) -> TaskState:
        defaults, _ = self.policy().for_tenant(state.tenant_id)
        item = seg.segment_id if seg is not None else "call"
        extra = ("late",) if late else ()
        sla = verdict.sla_s if verdict.sla_s is not None else defaults.sla
        rule_ids = [r.rule.id for r in verdict.review_rules] or [verdict.rule_id or "default"]
        task = TaskState(
            task_id=item_id("task", state.call_id, item, kind, *extra),
            scope=cast(Any, scope),
            segment_id=seg.segment_id if seg is not None else None,
            kind=cast(Any, kind),
            mode=verdict.mode or ("realtime" if scope == "segment" else "post_call"),
            priority=verdict.priority or defaults.priority,
            due_at=now + sla,
            sla_s=sla,
            max_level=defaults.escalations,
            on_expiry=defaults.on_expiry,
            rule_ids=rule_ids,
            late=late,
        )
        if scope == "call":
            task.mode = "post_call"
        state.tasks[task.task_id] = task
        return task

    # ---- review decisions and SLAs ------------------------------------------------------

    def _apply_decision(
        self, state: CallState, decision: ReviewDecisionV1, now: float
    ) -> list[Emit]:
        task = state.tasks.get(decision.task_id)
        if task is None:
            raise DecisionRejected(f"unknown task {decision.task_id} for call {state.call_id}")
        if task.status == "decided":
            if task.decision_id == decision.decision_id:
                return []  # the same decision redelivered: already applied
            raise DecisionRejected(
                f"task {task.task_id} already decided by {task.decision_id}; "
                f"decision {decision.decision_id} ignored"
            )
        if task.status == "expired":
            raise DecisionRejected(
                f"task {task.task_id} expired before decision {decision.decision_id}"
            )
        task.status, task.decision_id = "decided", decision.decision_id
        texts = {c.segment_id: c.text for c in decision.transcript_corrections}
        labels = {r.segment_id: r.label for r in decision.sentiment_labels}
        dismissed = {v.finding_id for v in decision.finding_verdicts if v.verdict == "dismissed"}
        if task.scope == "segment":
            segs = [state.segments[task.segment_id]] if task.segment_id in state.segments else []
        else:
            segs = state.ordered_segments()
        for seg in segs:
            if seg.segment_id in texts:
                seg.corrected_text = texts[seg.segment_id]
            if seg.segment_id in labels:
                seg.relabel = labels[seg.segment_id]
        approve = decision.verdict == "approve"
        if task.late:  # the call was released before this task: a reviewed outcome follows it
            released = [s for s in segs if s.status == "released"] if approve else []
            return [
                self.out.outcome(
                    state,
                    task.scope,
                    released,
                    "reviewed",
                    now,
                    task=task,
                    seg_id=task.segment_id if task.scope == "segment" else None,
                    decision=decision,
                    dismissed=dismissed,
                    suffix=("reviewed", "late"),
                )
            ]
        if task.kind == "hold":
            for seg in segs:
                if task.scope == "segment" or seg.status == "awaiting_call":
                    seg.status = "released" if approve else "rejected"
            if task.scope == "call":
                state.call_status = "released" if approve else "rejected"
        released = [s for s in segs if s.status == "released"] if approve else []
        seg_id = task.segment_id if task.scope == "segment" else None
        suffix = () if task.kind == "hold" else ("reviewed",)
        return [
            self.out.outcome(
                state,
                task.scope,
                released,
                "reviewed",
                now,
                task=task,
                seg_id=seg_id,
                decision=decision,
                dismissed=dismissed,
                suffix=suffix,
            )
        ]

    def _breach(self, state: CallState, task: TaskState, now: float) -> list[Emit]:
        if task.level < task.max_level:
            task.level += 1
            task.priority = _RAISE[task.priority]
            task.due_at = now + task.sla_s
            return [self.out.escalated(state, task, now)]
        task.status = "expired"
        if task.kind == "sample" or task.late:  # a late task has nothing held to release
            action = "withdrawn"
        elif task.on_expiry == "release":
            action = "released_unreviewed"
        else:
            action = "kept_held"
        emits = [self.out.expired(state, task, action, now)]
        if action == "released_unreviewed":
            if task.scope == "segment":
                segs = (
                    [state.segments[task.segment_id]] if task.segment_id in state.segments else []
                )
            else:
                segs = [s for s in state.ordered_segments() if s.status == "awaiting_call"]
                state.call_status = "released"
            for seg in segs:
                seg.status = "released"
            seg_id = task.segment_id if task.scope == "segment" else None
            if task.scope == "call":
                segs = [s for s in state.ordered_segments() if s.status == "released"]
            emits.append(
                self.out.outcome(state, task.scope, segs, "expired", now, task=task, seg_id=seg_id)
            )
        return emits

    def _missing(self, state: CallState, seg: SegmentState | None) -> list[Any]:
        """Scores not in when the item is decided (only those the router is set to wait for).

        A call's compliance is missing while its call-level result or any of its segments'
        results is: a call rule on findings sees all of them.
        """
        missing: list[Any] = []
        if seg is not None:
            sentiment_in, compliance_in = seg.sentiment is not None, seg.findings is not None
        else:
            sentiment_in = state.call_sentiment is not None and state.call_sentiment.at_end
            compliance_in = state.call_findings is not None and all(
                s.findings is not None for s in state.segments.values() if s.transcribed
            )
        if self.join.needs_sentiment and not sentiment_in:
            missing.append("sentiment")
        if self.join.needs_compliance and not compliance_in:
            missing.append("compliance")
        return missing
