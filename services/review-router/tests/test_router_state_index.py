"""The call state's segment index: a state kept in memory routes exactly as one rebuilt each time.

In the service a call's state stays in memory between events, and its index (which segments
are still live, which changed since the last changelog write) saves walking every segment on
every event. Tests elsewhere rebuild the state from JSON before each event, which builds the
index afresh; here the same scripts, shuffled, run through both and must agree event by event,
and the parts the in-memory state writes must rebuild it exactly.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from loopwise.events import ReviewTaskCreatedV1, TenantEvent
from loopwise.kafka.intake import Emit
from loopwise_router import state as call_state
from loopwise_router.handler import JoinSettings, OutputTopics, Router
from loopwise_router.reload import PolicyHolder
from loopwise_router.state import CallState, SegmentState

TOPICS = OutputTopics("routing", "tasks", "outcomes")


def _dumped(emits: list[Emit]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.topic, e.event.model_dump(mode="json")) for e in emits]


class Twin:
    """One router fed twice: state rebuilt from JSON per event, and state kept in memory."""

    def __init__(self, policy: Path) -> None:
        join = JoinSettings(segment_window_s=5, call_window_s=10)
        self.router = Router(PolicyHolder(policy), TOPICS, join)
        self.rebuilt: dict[str, dict[str, Any]] = {}
        self.kept: dict[str, CallState] = {}
        self.parts: dict[str, dict[str, bytes]] = {}
        self.now = 2_000_000.0
        self.seq = 0
        self.tasks: list[ReviewTaskCreatedV1] = []

    def _write(self, call_id: str) -> None:
        """What the StateStore does after a batch: write the dirty parts, mark them clean."""
        state = self.kept[call_id]
        for name, raw in call_state.dirty_parts(state).items():
            assert raw is not None
            self.parts.setdefault(call_id, {})[name] = raw
        call_state.mark_clean(state)
        # the written parts rebuild the state the service holds, part for part
        restored = call_state.load_parts(self.parts[call_id])
        assert restored.model_dump(mode="json") == state.model_dump(mode="json")

    def _compare(self, call_id: str, a: list[Emit], b: list[Emit]) -> list[Emit]:
        assert _dumped(a) == _dumped(b)
        assert self.rebuilt[call_id] == self.kept[call_id].model_dump(mode="json")
        self.tasks.extend(e.event for e in b if isinstance(e.event, ReviewTaskCreatedV1))
        return b

    def feed(self, event: TenantEvent) -> list[Emit]:
        call_id = str(getattr(event, "call_id", ""))
        self.seq += 1
        event_id = f"ev-{self.seq}"
        raw = self.rebuilt.get(call_id)
        fresh = CallState.model_validate(raw) if raw is not None else None
        state_a, emits_a = self.router.handle(fresh, event, event_id, self.now, partition=0)
        self.rebuilt[call_id] = state_a.model_dump(mode="json")
        state_b, emits_b = self.router.handle(
            self.kept.get(call_id), event, event_id, self.now, partition=0
        )
        self.kept[call_id] = state_b
        self._write(call_id)
        return self._compare(call_id, emits_a, emits_b)

    def tick(self, seconds: float) -> None:
        self.now += seconds
        for call_id in list(self.kept):
            fresh = CallState.model_validate(self.rebuilt[call_id])
            emits_a = self.router.tick(fresh, self.now)
            self.rebuilt[call_id] = fresh.model_dump(mode="json")
            emits_b = self.router.tick(self.kept[call_id], self.now)
            self._write(call_id)
            self._compare(call_id, emits_a, emits_b)


@pytest.mark.parametrize("seed", range(6))
def test_a_state_kept_in_memory_routes_as_one_rebuilt_per_event(
    policy_file: Path, router_kit: Any, seed: int
) -> None:
    rng = random.Random(seed)
    twin = Twin(policy_file)
    events: list[TenantEvent] = []
    for n in range(4):
        segments = rng.randint(3, 30)
        card_on = {rng.randrange(segments) for _ in range(rng.randint(0, 3))}
        script = router_kit.call_script(
            f"call-{seed}-{n}", segments=segments, card_on=card_on, score=rng.uniform(-0.9, 0.6)
        )
        call_events = script.all()
        head, rest = call_events[:1], call_events[1:]
        rng.shuffle(rest)  # scores before transcripts, call end before segments, ...
        events.extend(head + rest)
    # the calls interleave, each in its own shuffled order
    by_call: dict[str, list[TenantEvent]] = {}
    for event in events:
        by_call.setdefault(str(getattr(event, "call_id", "")), []).append(event)
    while by_call:
        call_id = rng.choice(sorted(by_call))
        twin.feed(by_call[call_id].pop(0))
        if not by_call[call_id]:
            del by_call[call_id]
        if rng.random() < 0.1:
            twin.tick(rng.choice([1.0, 6.0, 11.0]))
    # reviewers decide the tasks (some approve, some reject); then time runs out for the rest
    for task in list(twin.tasks):
        if rng.random() < 0.7:
            verdict = "approve" if rng.random() < 0.7 else "reject"
            twin.feed(router_kit.review_decision(task.call_id, task.task_id, verdict=verdict))
    for _ in range(5):
        twin.tick(3_600.0)
    assert twin.tasks, "the scripts hold at least one item for review"
    released = {
        sid
        for state in twin.kept.values()
        for sid, seg in state.segments.items()
        if seg.status == "released"
    }
    assert released  # the scripts route something to release, not only holds


def test_segments_put_in_the_dict_directly_are_indexed(policy_file: Path) -> None:
    """The backtest builds states by hand; the index notices segments it did not create."""
    state = CallState(tenant_id="acme", call_id="c-1")
    state.segment("a")
    assert [s.segment_id for s in state.live_segments()] == ["a"]
    state.segments["b"] = SegmentState(segment_id="b", text="hello", status="released")
    state.segments["c"] = SegmentState(segment_id="c", text="hi")
    assert sorted(s.segment_id for s in state.live_segments()) == ["a", "c"]
    # a settled segment comes back when something changes it (a late score's recheck)
    state.segments["b"].recheck = True
    assert sorted(s.segment_id for s in state.live_segments()) == ["a", "b", "c"]
    # a deep copy (the backtest's what-if runs) keeps its own, consistent index
    copy = state.model_copy(deep=True)
    copy.segments["b"].recheck = False
    assert sorted(s.segment_id for s in copy.live_segments()) == ["a", "c"]
    assert sorted(s.segment_id for s in state.live_segments()) == ["a", "b", "c"]
