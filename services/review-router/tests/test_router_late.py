"""Inputs that reach the router after a call was decided: late segments, score revisions, grace."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from loopwise.events import (
    CallComplianceV1,
    CallSentimentV1,
    ComplianceFinding,
    Evidence,
    ModelRef,
    ReleasedOutcomeV1,
    ReviewTaskCreatedV1,
    ReviewTaskExpiredV1,
    RoutingDecisionV1,
    SegmentComplianceV1,
    SegmentSentimentV1,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise.kafka.intake import Emit
from loopwise_router.handler import JoinSettings, OutputTopics, Router, item_id
from loopwise_router.reload import PolicyHolder
from loopwise_router.state import CallState

TOPICS = OutputTopics("routing", "tasks", "outcomes")
PACK = ModelRef(name="test-pack", version="1")
ASR = ModelRef(name="test-asr", version="1")
SENT = ModelRef(name="test-sentiment", version="1")

LATE_POLICY = """\
version: 1
name: late-tests
defaults: {priority: p3, sla: 1h, mode: post_call, escalations: 0, on_expiry: release}
rules:
  - id: pii-after-call
    scope: segment
    when: {finding: {category: pii, min_severity: high}}
    outcome: hold
    mode: post_call
  - id: notice-missing
    scope: call
    when: {finding: {category: disclosure, min_severity: medium}}
    outcome: hold
    priority: p2
    sla: 15m
  - id: unhappy-ending
    scope: call
    when: "call.sentiment.final <= -0.5"
    outcome: sample
    rate: 1.0
"""


class Driver:
    """Feeds events to a Router with an explicit clock; state round-trips through JSON."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.states: dict[str, dict[str, Any]] = {}
        self.now = 2_000_000.0
        self.seq = 0

    def feed(self, event: TenantEvent, event_id: str | None = None) -> list[Emit]:
        call_id = str(getattr(event, "call_id", ""))
        raw = self.states.get(call_id)
        state = CallState.model_validate(raw) if raw is not None else None
        self.seq += 1
        new, emits = self.router.handle(
            state, event, event_id or f"ev-{self.seq}", self.now, partition=0
        )
        self.states[call_id] = new.model_dump(mode="json")
        return emits

    def tick(self, call_id: str, seconds: float) -> list[Emit]:
        self.now += seconds
        state = CallState.model_validate(self.states[call_id])
        emits = self.router.tick(state, self.now)
        self.states[call_id] = state.model_dump(mode="json")
        return emits


def of(emits: list[Emit], cls: type[Any]) -> list[Any]:
    return [e.event for e in emits if isinstance(e.event, cls)]


@pytest.fixture
def late_policy(tmp_path: Path) -> Path:
    path = tmp_path / "late-policy.yaml"
    path.write_text(LATE_POLICY, encoding="utf-8")
    return path


def make_driver(policy: Path, grace: float = 0.0) -> Driver:
    join = JoinSettings(segment_window_s=5, call_window_s=10, call_grace_s=grace)
    return Driver(Router(PolicyHolder(policy), TOPICS, join))


@pytest.fixture
def driver(late_policy: Path) -> Driver:
    return make_driver(late_policy)


def finding(call_id: str, category: str, severity: str, seg: str | None = None) -> Any:
    return ComplianceFinding(
        finding_id=f"{call_id}/{seg or 'call'}/{category}",
        rule_id=f"{category}.rule",
        category=category,
        severity=severity,  # type: ignore[arg-type]
        score=0.9,
        evidence=Evidence(segment_id=seg, text="evidence"),
        segment_id=seg,
    )


def call_compliance(call_id: str, revision: int, findings: list[Any]) -> CallComplianceV1:
    return CallComplianceV1(
        tenant_id="acme",
        call_id=call_id,
        occurred_at=datetime_t0(),
        producer=PACK,
        findings=findings,
        segments_checked=2 + revision,
        revision=revision,
    )


def datetime_t0() -> datetime:
    return datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def late_segment(call_id: str, seg: str, findings: list[Any]) -> list[TenantEvent]:
    """Transcript, sentiment and compliance of one segment flushed at hang-up."""
    ids: dict[str, Any] = {"tenant_id": "acme", "call_id": call_id, "occurred_at": datetime_t0()}
    return [
        TranscriptSegmentV1(
            **ids,
            producer=ASR,
            segment_id=seg,
            speaker="customer",
            start_s=30.0,
            end_s=33.0,
            text=f"late words of {call_id}",
            confidence=0.9,
            language="en",
            source="realtime",
        ),
        SegmentSentimentV1(
            **ids,
            producer=SENT,
            segment_id=seg,
            speaker="customer",
            label="neutral",
            score=0.0,
            confidence=0.8,
        ),
        SegmentComplianceV1(**ids, producer=PACK, segment_id=seg, findings=findings),
    ]


def released_auto(driver: Driver, router_kit: Any, call_id: str) -> list[Emit]:
    emits: list[Emit] = []
    for event in router_kit.call_script(call_id).all():
        emits.extend(driver.feed(event))
    call = [d for d in of(emits, RoutingDecisionV1) if d.scope == "call"]
    assert [d.outcome for d in call] == ["auto"]
    assert [o.release for o in of(emits, ReleasedOutcomeV1) if o.scope == "call"] == ["auto"]
    return emits


def test_late_revision_with_a_breach_opens_one_task_and_releases_nothing_again(
    driver: Driver, router_kit: Any
) -> None:
    released_auto(driver, router_kit, "c-rev")
    revision = call_compliance("c-rev", 1, [finding("c-rev", "disclosure", "high")])
    before = dict(driver.states["c-rev"])
    emits = driver.feed(revision, event_id="rev-1")

    assert not of(emits, ReleasedOutcomeV1)  # the call outcome is never released twice
    (decision,) = of(emits, RoutingDecisionV1)
    assert decision.scope == "call" and decision.outcome == "hold"
    assert decision.rule_id == "notice-missing"
    assert decision.redecision_of == item_id("rd", "c-rev", "call")
    assert decision.decision_id != decision.redecision_of
    (task,) = of(emits, ReviewTaskCreatedV1)
    assert task.scope == "call" and task.kind == "hold" and task.priority == "p2"
    assert decision.task_id == task.task_id
    assert task.reasons[0].startswith("late finding after release")
    assert [f.category for f in task.call_findings] == ["disclosure"]
    assert len(task.segments) == 2

    # the same revision delivered again adds nothing
    assert driver.feed(revision, event_id="rev-1") == []
    # an older revision arriving out of order changes nothing either
    assert driver.feed(call_compliance("c-rev", 0, []), event_id="rev-0") == []
    # a crash before the state was stored: the replay emits the same events under the same ids
    driver.states["c-rev"] = before
    replay = driver.feed(revision, event_id="rev-1")
    assert [e.event_id for e in replay] == [e.event_id for e in emits]


def test_a_decision_on_the_late_task_publishes_a_reviewed_outcome_under_its_own_id(
    driver: Driver, router_kit: Any
) -> None:
    first = released_auto(driver, router_kit, "c-dec")
    (auto_call,) = [o for o in of(first, ReleasedOutcomeV1) if o.scope == "call"]
    emits = driver.feed(call_compliance("c-dec", 1, [finding("c-dec", "disclosure", "medium")]))
    (task,) = of(emits, ReviewTaskCreatedV1)
    decision = router_kit.review_decision("c-dec", task.task_id, verdict="reject")
    (outcome,) = of(driver.feed(decision), ReleasedOutcomeV1)
    assert outcome.release == "reviewed" and outcome.verdict == "reject"
    assert outcome.segments == [] and outcome.task_id == task.task_id
    assert outcome.outcome_id != auto_call.outcome_id
    assert driver.feed(decision) == []
    assert CallState.model_validate(driver.states["c-dec"]).call_status == "released"


def test_late_task_expiry_withdraws_it_and_releases_nothing(
    driver: Driver, router_kit: Any
) -> None:
    released_auto(driver, router_kit, "c-exp")
    driver.feed(call_compliance("c-exp", 1, [finding("c-exp", "disclosure", "high")]))
    later = driver.tick("c-exp", 16 * 60)  # past the 15 min SLA, no escalations left
    (expired,) = of(later, ReviewTaskExpiredV1)
    assert expired.action == "withdrawn"  # on_expiry: release must not release the call again
    assert not of(later, ReleasedOutcomeV1)


def test_each_stronger_verdict_is_re_decided_once(driver: Driver, router_kit: Any) -> None:
    released_auto(driver, router_kit, "c-up")
    ids: dict[str, Any] = {"tenant_id": "acme", "call_id": "c-up", "occurred_at": datetime_t0()}
    unhappy = CallSentimentV1(
        **ids,
        producer=SENT,
        reason="call_ended",
        segments_scored=3,
        current=-0.8,
        final=-0.8,
        trend=-0.1,
        worst=-0.8,
        label="negative",
        confidence=0.8,
    )
    (sampled,) = of(driver.feed(unhappy), ReviewTaskCreatedV1)
    assert sampled.kind == "sample" and sampled.reasons[0].startswith("late finding after release")
    assert driver.feed(unhappy) == []
    emits = driver.feed(call_compliance("c-up", 1, [finding("c-up", "disclosure", "high")]))
    (held,) = of(emits, ReviewTaskCreatedV1)
    assert held.kind == "hold" and held.task_id != sampled.task_id
    assert not of(emits, ReleasedOutcomeV1)
    # a later revision without the finding withdraws nothing and adds nothing
    assert driver.feed(call_compliance("c-up", 2, [])) == []


def test_late_plain_segment_is_routed_on_its_own_and_the_call_is_not_released_again(
    driver: Driver, router_kit: Any
) -> None:
    released_auto(driver, router_kit, "c-seg")
    emits: list[Emit] = []
    for event in late_segment("c-seg", "seg-late", []):
        emits.extend(driver.feed(event))
    (decision,) = of(emits, RoutingDecisionV1)
    assert decision.scope == "segment" and decision.segment_id == "seg-late"
    (outcome,) = of(emits, ReleasedOutcomeV1)
    assert outcome.scope == "segment" and outcome.segments[0].segment_id == "seg-late"
    assert not of(emits, ReviewTaskCreatedV1)


def test_late_segment_with_a_call_level_breach_re_decides_the_call(
    driver: Driver, router_kit: Any
) -> None:
    released_auto(driver, router_kit, "c-seg2")
    emits: list[Emit] = []
    events = late_segment("c-seg2", "seg-late", [finding("c-seg2", "disclosure", "high", "s")])
    for event in events:
        emits.extend(driver.feed(event))
    decisions = of(emits, RoutingDecisionV1)
    assert [(d.scope, d.outcome) for d in decisions] == [("segment", "auto"), ("call", "hold")]
    assert decisions[1].redecision_of == item_id("rd", "c-seg2", "call")
    (task,) = of(emits, ReviewTaskCreatedV1)
    assert "seg-late" in {s.segment_id for s in task.segments}
    assert [o.scope for o in of(emits, ReleasedOutcomeV1)] == ["segment"]
    for event in events:  # redelivered: nothing new
        assert driver.feed(event) == []


def test_late_segment_held_post_call_is_held_on_its_own(driver: Driver, router_kit: Any) -> None:
    released_auto(driver, router_kit, "c-pii")
    emits: list[Emit] = []
    for event in late_segment("c-pii", "seg-late", [finding("c-pii", "pii", "high", "s")]):
        emits.extend(driver.feed(event))
    (task,) = of(emits, ReviewTaskCreatedV1)
    assert task.scope == "segment" and task.kind == "hold"
    assert not of(emits, ReleasedOutcomeV1)  # the segment waits for its reviewer
    (outcome,) = of(
        driver.feed(router_kit.review_decision("c-pii", task.task_id)), ReleasedOutcomeV1
    )
    assert outcome.scope == "segment" and outcome.segments[0].segment_id == "seg-late"
    assert CallState.model_validate(driver.states["c-pii"]).closed_at is not None


def test_grace_lets_a_segment_flushed_at_hang_up_into_the_call_outcome(
    late_policy: Path, router_kit: Any
) -> None:
    driver = make_driver(late_policy, grace=2.0)
    emits: list[Emit] = []
    for event in router_kit.call_script("c-grace").all():
        emits.extend(driver.feed(event))
    assert not [d for d in of(emits, RoutingDecisionV1) if d.scope == "call"]
    for event in late_segment("c-grace", "seg-flush", []):
        emits.extend(driver.feed(event))
    assert not driver.tick("c-grace", 1.0)
    (call_outcome,) = of(driver.tick("c-grace", 1.1), ReleasedOutcomeV1)
    assert call_outcome.scope == "call"
    assert "seg-flush" in {s.segment_id for s in call_outcome.segments}
