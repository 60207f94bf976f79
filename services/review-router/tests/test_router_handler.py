"""The router's pure core: joins, holds, sampling, decisions, SLAs and policy reload."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from loopwise.events import (
    ReleasedOutcomeV1,
    ReviewTaskCreatedV1,
    ReviewTaskEscalatedV1,
    ReviewTaskExpiredV1,
    RoutingDecisionV1,
    TenantEvent,
)
from loopwise.kafka.intake import Emit
from loopwise_router.handler import DecisionRejected, JoinSettings, OutputTopics, Router
from loopwise_router.policy import load_policy
from loopwise_router.reload import PolicyHolder
from loopwise_router.routing import decide, sampling_draw
from loopwise_router.state import CallState

TOPICS = OutputTopics("routing", "tasks", "outcomes")


class Driver:
    """Feeds events to a Router with an explicit clock, keeping state like the table does."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.states: dict[str, dict[str, Any]] = {}
        self.now = 1_000_000.0
        self.seq = 0

    def feed(self, event: TenantEvent) -> list[Emit]:
        call_id = str(getattr(event, "call_id", ""))
        raw = self.states.get(call_id)
        state = CallState.model_validate(raw) if raw is not None else None
        self.seq += 1
        new, emits = self.router.handle(state, event, f"ev-{self.seq}", self.now, partition=0)
        self.states[call_id] = new.model_dump(mode="json")  # round-trips like the table
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
def driver(policy_file: Path) -> Driver:
    holder = PolicyHolder(policy_file)
    return Driver(Router(holder, TOPICS, JoinSettings(segment_window_s=5, call_window_s=10)))


def run_call(driver: Driver, script: Any) -> list[Emit]:
    out: list[Emit] = []
    for event in script.all():
        out.extend(driver.feed(event))
    return out


def test_auto_call_released_at_once_with_a_decision_per_item(
    driver: Driver, router_kit: Any
) -> None:
    emits = run_call(driver, router_kit.call_script("c-auto", segments=3))
    decisions = of(emits, RoutingDecisionV1)
    assert [(d.scope, d.outcome) for d in decisions] == [("segment", "auto")] * 3 + [
        ("call", "auto")
    ]
    assert all(d.policy_version.startswith("sha256:") for d in decisions)
    assert all(d.missing_inputs == [] for d in decisions)
    outcomes = of(emits, ReleasedOutcomeV1)
    assert [o.release for o in outcomes] == ["auto"] * 4
    call_outcome = outcomes[-1]
    assert call_outcome.scope == "call" and len(call_outcome.segments) == 3
    assert not of(emits, ReviewTaskCreatedV1)


def test_held_call_waits_for_its_decision_then_releases_once_with_corrections(
    driver: Driver, router_kit: Any
) -> None:
    emits = run_call(driver, router_kit.call_script("c-hold", queue="hold-q"))
    call_decision = of(emits, RoutingDecisionV1)[-1]
    assert call_decision.outcome == "hold" and call_decision.rule_id == "hold-queue"
    assert call_decision.fired[0].condition == "queue == hold-q"
    (task,) = of(emits, ReviewTaskCreatedV1)
    assert task.kind == "hold" and task.scope == "call" and task.priority == "p2"
    assert len(task.segments) == 2
    # The task names the models behind its data, so feedback is filed per model version.
    assert {s.asr_model.name for s in task.segments if s.asr_model} == {"test-asr"}
    assert {s.sentiment_model.name for s in task.segments if s.sentiment_model} == {
        "test-sentiment"
    }
    assert task.compliance_pack is not None and task.compliance_pack.name == "test-pack"
    assert [o.scope for o in of(emits, ReleasedOutcomeV1)] == ["segment", "segment"]
    assert not of(driver.tick("c-hold", 600), ReleasedOutcomeV1)  # time alone releases nothing

    decision = router_kit.review_decision(
        "c-hold",
        task.task_id,
        corrections={"seg-001": "corrected words"},
        relabels={"seg-001": "negative"},
    )
    released = of(driver.feed(decision), ReleasedOutcomeV1)
    assert len(released) == 1
    outcome = released[0]
    assert outcome.release == "reviewed" and outcome.verdict == "approve"
    assert outcome.decision_id == decision.decision_id
    by_id = {s.segment_id: s for s in outcome.segments}
    assert by_id["seg-001"].text == "corrected words" and by_id["seg-001"].corrected
    assert by_id["seg-001"].sentiment_label == "negative"
    assert not by_id["seg-000"].corrected

    assert driver.feed(decision) == []  # the same decision redelivered: nothing new
    other = router_kit.review_decision("c-hold", task.task_id, decision_id="another")
    with pytest.raises(DecisionRejected, match="already decided"):
        driver.feed(other)
    # A decision for a task not known (yet) waits for it, then is given up on.
    assert driver.feed(router_kit.review_decision("c-hold", "task-nope")) == []
    assert driver.feed(router_kit.review_decision("c-never-seen", "task-nope")) == []
    assert set(driver.states["c-hold"]["parked"]) == {"task-nope"}
    assert driver.router.take_given_up() == []
    wait = driver.router.join.decision_park_s
    assert not of(driver.tick("c-hold", wait + 1), ReleasedOutcomeV1)
    driver.tick("c-never-seen", 0)
    given_up = driver.router.take_given_up()
    assert sorted(g.call_id for g in given_up) == ["c-hold", "c-never-seen"]
    assert all("unknown task task-nope" in g.reason for g in given_up)
    assert driver.states["c-hold"]["parked"] == {}
    assert driver.router.empty(CallState.model_validate(driver.states["c-never-seen"]))
    assert not driver.router.empty(CallState.model_validate(driver.states["c-hold"]))


def test_a_decision_read_before_its_task_is_applied_when_the_task_comes(
    policy_file: Path, router_kit: Any
) -> None:
    """After a restart the router can read a decision before the redelivered input that
    creates its task again (the state written before the kill did not hold the task):
    the decision waits in the call's state and releases the call once the task is back."""
    first = Driver(Router(PolicyHolder(policy_file), TOPICS, JoinSettings(5, 10)))
    (task,) = of(
        run_call(first, router_kit.call_script("c-race", queue="hold-q")), ReviewTaskCreatedV1
    )
    decision = router_kit.review_decision("c-race", task.task_id)

    restarted = Driver(Router(PolicyHolder(policy_file), TOPICS, JoinSettings(5, 10)))
    assert restarted.feed(decision) == []  # no state, no task: parked
    emits = run_call(restarted, router_kit.call_script("c-race", queue="hold-q"))
    (again,) = of(emits, ReviewTaskCreatedV1)
    assert again.task_id == task.task_id
    calls = [o for o in of(emits, ReleasedOutcomeV1) if o.scope == "call"]
    assert len(calls) == 1 and calls[0].release == "reviewed"
    assert calls[0].decision_id == decision.decision_id
    assert restarted.states["c-race"]["parked"] == {}
    assert restarted.router.take_given_up() == []
    assert restarted.feed(decision) == []  # the same decision redelivered: nothing new


def test_rejected_hold_releases_nothing(driver: Driver, router_kit: Any) -> None:
    emits = run_call(driver, router_kit.call_script("c-rej", queue="hold-q"))
    (task,) = of(emits, ReviewTaskCreatedV1)
    decision = router_kit.review_decision("c-rej", task.task_id, verdict="reject")
    (outcome,) = of(driver.feed(decision), ReleasedOutcomeV1)
    assert outcome.verdict == "reject" and outcome.segments == []


def test_realtime_segment_hold_alerts_during_the_call(driver: Driver, router_kit: Any) -> None:
    script = router_kit.call_script("c-card", segments=3, card_on={1})
    emits: list[Emit] = []
    for event in script.events["calls"] + script.events["transcripts"][:2]:
        emits.extend(driver.feed(event))
    for event in script.events["sentiment"][:2] + script.events["compliance"][:2]:
        emits.extend(driver.feed(event))
    # the call is still running, yet the card segment already has a live task
    (task,) = of(emits, ReviewTaskCreatedV1)
    assert task.scope == "segment" and task.mode == "realtime" and task.priority == "p1"
    assert task.segments[0].findings[0].category == "card_data"
    released = {o.segments[0].segment_id for o in of(emits, ReleasedOutcomeV1)}
    assert released == {"seg-000"}
    rest = [e for k in ("transcripts", "sentiment", "compliance") for e in script.events[k][2:]]
    for event in rest + script.events["ended"]:
        emits.extend(driver.feed(event))
    call_outcome = next(o for o in of(emits, ReleasedOutcomeV1) if o.scope == "call")
    assert {s.segment_id for s in call_outcome.segments} == {"seg-000", "seg-002"}
    (late,) = of(driver.feed(router_kit.review_decision("c-card", task.task_id)), ReleasedOutcomeV1)
    assert late.scope == "segment" and late.segments[0].segment_id == "seg-001"


def test_join_window_decides_a_segment_whose_scores_never_come(
    driver: Driver, router_kit: Any
) -> None:
    script = router_kit.call_script("c-late", segments=1)
    driver.feed(script.events["calls"][0])
    assert not of(driver.feed(script.events["transcripts"][0]), RoutingDecisionV1)
    assert not of(driver.tick("c-late", 4.0), RoutingDecisionV1)
    emits = driver.tick("c-late", 1.5)
    (decision,) = of(emits, RoutingDecisionV1)
    # fail closed: rules on compliance findings hold an item whose compliance never came
    assert decision.scope == "segment" and decision.outcome == "hold"
    assert decision.missing_inputs == ["sentiment", "compliance"]
    assert any(f.condition == "input missing: compliance" for f in decision.fired)
    assert of(emits, ReviewTaskCreatedV1) and not of(emits, ReleasedOutcomeV1)


def test_sla_breach_escalates_then_expires(driver: Driver, router_kit: Any) -> None:
    emits = run_call(driver, router_kit.call_script("c-sla", queue="sla-q"))
    (task,) = of(emits, ReviewTaskCreatedV1)
    assert not driver.tick("c-sla", 0.5)
    (escalated,) = of(driver.tick("c-sla", 0.6), ReviewTaskEscalatedV1)
    assert escalated.level == 1 and escalated.priority == "p2" and escalated.task_id == task.task_id
    assert not driver.tick("c-sla", 0.1)
    later = driver.tick("c-sla", 1.0)
    (expired,) = of(later, ReviewTaskExpiredV1)
    assert expired.action == "kept_held"
    assert not of(later, ReleasedOutcomeV1)
    with pytest.raises(DecisionRejected, match="expired"):
        driver.feed(router_kit.review_decision("c-sla", task.task_id))


def test_sampling_is_deterministic_and_near_its_rate_over_2000_calls(policy_file: Path) -> None:
    policy = load_policy(policy_file)
    draws = [sampling_draw(f"call-{i}", "sample-queue") for i in range(2000)]
    assert draws == [sampling_draw(f"call-{i}", "sample-queue") for i in range(2000)]
    assert sampling_draw("call-1", "sample-queue") != sampling_draw("call-1", "other-rule")
    sampled = 0
    for i in range(2000):
        verdict = decide(policy, "acme", "call", {"queue": "sample-q"}, [], f"call-{i}")
        assert verdict.sampling_draw == draws[i] and verdict.sample_rate == 0.3
        assert (verdict.outcome == "sample") == (draws[i] < 0.3)
        sampled += verdict.outcome == "sample"
    assert abs(sampled / 2000 - 0.3) <= 0.02


def test_reload_keeps_state_and_rejects_a_broken_file(policy_file: Path, router_kit: Any) -> None:
    holder = PolicyHolder(policy_file)
    driver = Driver(Router(holder, TOPICS))
    first = holder.current.version
    emits = run_call(driver, router_kit.call_script("c-r1", queue="hold-q"))
    (task,) = of(emits, ReviewTaskCreatedV1)

    text = policy_file.read_text()
    policy_file.write_text(text.replace("outcome: hold\n    priority: p2", "outcome: banana"))
    rejected = holder.reload(force=True)
    assert rejected.result == "rejected" and rejected.error is not None
    assert rejected.error.file == str(policy_file) and rejected.error.line is not None
    assert holder.current.version == first  # the running policy stays

    policy_file.write_text(text.replace('"queue == hold-q"', '"queue == other-q"'))
    time.sleep(0.01)
    loaded = holder.reload()  # the file changed: the periodic check picks it up
    assert loaded.result == "loaded" and holder.current.version != first
    assert holder.reload().result == "unchanged"
    # the hold taken under the old policy survives the reload and is released by its decision
    (outcome,) = of(
        driver.feed(router_kit.review_decision("c-r1", task.task_id)), ReleasedOutcomeV1
    )
    assert outcome.release == "reviewed"
    # new calls follow the new policy
    new_call = of(
        run_call(driver, router_kit.call_script("c-r2", queue="hold-q")), RoutingDecisionV1
    )
    assert new_call[-1].outcome == "auto" and new_call[-1].policy_version == holder.current.version


def test_segment_times_go_out_as_the_state_holds_them() -> None:
    """No silent repair of end < start on the way out (task, release, duration fact).

    The state's times come from validated TranscriptSegmentV1 events (end_s >= start_s
    at the contract) or the backtest reader, which rejects end < start; so a state like
    this one cannot arise, and if it did it must not be changed unnoticed.
    """
    from loopwise_router.outputs import _released_segment, _task_segment
    from loopwise_router.routing import segment_facts
    from loopwise_router.state import SegmentState

    call = CallState(tenant_id="acme", call_id="c1")
    seg = SegmentState(segment_id="s1", start_s=5.0, end_s=2.5, text="hi")
    assert (_task_segment(seg).start_s, _task_segment(seg).end_s) == (5.0, 2.5)
    assert (_released_segment(seg).start_s, _released_segment(seg).end_s) == (5.0, 2.5)
    assert segment_facts(call, seg)["segment.duration_s"] == -2.5
