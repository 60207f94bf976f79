"""SIGKILL and restart in the middle of a run: no hold is lost and no outcome is released twice."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from loopwise.events import TenantEvent
from tests.support.kafka_io import Record, produce_events, read_topic, wait_for

pytestmark = pytest.mark.kafka

FAST_GROUP = {
    "LOOPWISE_ROUTER_SESSION_TIMEOUT_S": "6",
    "LOOPWISE_ROUTER_HEARTBEAT_INTERVAL_S": "1",
}


def everything(bootstrap: str, topic: str, at_least: int, timeout_s: float = 4.0) -> list[Record]:
    """All records now in a topic (reads past `at_least`: repeats must not hide new ids)."""
    records = read_topic(bootstrap, topic, expect=at_least, timeout_s=30)
    if len(records) < at_least:
        return records
    return read_topic(bootstrap, topic, expect=10**9, timeout_s=timeout_s)


def distinct(records: list[Record], id_field: str) -> dict[str, list[dict[str, Any]]]:
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        body = json.loads(record.value or b"{}")
        body["_ce_id"] = record.headers["ce_id"].decode()
        if id_field in body:
            by_id[body[id_field]].append(body)
    return by_id


def test_sigkill_mid_run_loses_no_hold_and_releases_nothing_twice(
    kafka_bootstrap: str,
    router_topics: dict[str, str],
    router_factory: Callable[..., Any],
    router_kit: Any,
) -> None:
    n_held = n_auto = 20
    segments = 3
    scripts = [
        router_kit.call_script(f"r-hold-{i}", queue="hold-q", segments=segments)
        for i in range(n_held)
    ] + [router_kit.call_script(f"r-auto-{i}", segments=segments) for i in range(n_auto)]
    calls = n_held + n_auto
    routing_total = calls * (segments + 1)

    def ready(proc: Any) -> Any:
        proc.start()
        assert wait_for(proc.ready, 120, 0.25), f"router not ready:\n{proc.log_tail()}"
        return proc

    first = ready(router_factory(**FAST_GROUP))
    by_topic: dict[str, list[TenantEvent]] = defaultdict(list)
    for script in scripts:
        for kind in ("calls", "transcripts", "sentiment", "compliance", "ended"):
            topic = router_topics["calls" if kind == "ended" else kind]
            by_topic[topic].extend(script.events[kind])
    for topic, events in by_topic.items():
        produce_events(kafka_bootstrap, topic, events)

    # kill it while it is busy: some, not all, items routed
    seen = read_topic(kafka_bootstrap, router_topics["routing"], expect=routing_total // 4)
    assert len(seen) >= routing_total // 4, first.log_tail()
    first.kill()
    assert len(seen) < routing_total, "the router finished before it could be killed"

    second = ready(router_factory(**FAST_GROUP))

    def tasks_open() -> bool:
        records = everything(kafka_bootstrap, router_topics["tasks"], n_held)
        return len(distinct(records, "task_id")) >= n_held

    assert wait_for(tasks_open, 120, 0.5), second.log_tail()

    def all_routed() -> bool:
        records = everything(kafka_bootstrap, router_topics["routing"], routing_total)
        return len(distinct(records, "decision_id")) >= routing_total

    assert wait_for(all_routed, 120, 0.5), second.log_tail()
    # every hold is open, none released; kill again with the holds only in the table's changelog
    second.kill()

    tasks = distinct(everything(kafka_bootstrap, router_topics["tasks"], n_held), "task_id")
    assert len(tasks) == n_held
    third = ready(router_factory(**FAST_GROUP))
    decisions = [
        router_kit.review_decision(
            entries[0]["call_id"],
            task_id,
            corrections={"seg-001": f"fixed {entries[0]['call_id']}"},
        )
        for task_id, entries in tasks.items()
    ]
    produce_events(kafka_bootstrap, router_topics["decisions"], decisions)

    # outcomes: every segment of every call, plus one per call
    outcome_total = calls * (segments + 1)

    def all_released() -> bool:
        records = everything(kafka_bootstrap, router_topics["outcomes"], outcome_total)
        return len(distinct(records, "outcome_id")) >= outcome_total

    assert wait_for(all_released, 120, 0.5), third.log_tail()
    records = everything(kafka_bootstrap, router_topics["outcomes"], outcome_total)
    outcomes = distinct(records, "outcome_id")
    assert len(outcomes) == outcome_total
    for outcome_id, copies in outcomes.items():
        # a repeat after a crash is the same event (same CloudEvents id), never a second release
        assert len({c["_ce_id"] for c in copies}) == 1, outcome_id
    call_level = [c[0] for c in outcomes.values() if c[0]["scope"] == "call"]
    per_call = defaultdict(list)
    for body in call_level:
        per_call[body["call_id"]].append(body)
    assert len(per_call) == calls and all(len(v) == 1 for v in per_call.values())
    for i in range(n_held):
        (body,) = per_call[f"r-hold-{i}"]
        assert body["release"] == "reviewed"
        texts = {s["segment_id"]: s["text"] for s in body["segments"]}
        assert texts["seg-001"] == f"fixed r-hold-{i}"
    for i in range(n_auto):
        assert per_call[f"r-auto-{i}"][0]["release"] == "auto"
    # no decision was refused: no hold was lost across the kills
    assert read_topic(kafka_bootstrap, router_topics["dlq"], expect=1, timeout_s=2) == []


def test_rebalance_moves_holds_and_sla_clocks_to_the_surviving_worker(
    kafka_bootstrap: str,
    router_topics: dict[str, str],
    router_factory: Callable[..., Any],
    router_kit: Any,
) -> None:
    n_held, n_slow = 12, 6
    scripts = [
        router_kit.call_script(f"b-hold-{i}", queue="hold-q", segments=1) for i in range(n_held)
    ] + [
        router_kit.call_script(f"b-slow-{i}", queue="slow-sla-q", segments=1) for i in range(n_slow)
    ]

    def ready(proc: Any) -> Any:
        proc.start()
        assert wait_for(proc.ready, 120, 0.25), f"router not ready:\n{proc.log_tail()}"
        return proc

    first = ready(router_factory(**FAST_GROUP))
    by_topic: dict[str, list[TenantEvent]] = defaultdict(list)
    for script in scripts:
        for kind in ("calls", "transcripts", "sentiment", "compliance", "ended"):
            by_topic[router_topics["calls" if kind == "ended" else kind]].extend(
                script.events[kind]
            )
    for topic, events in by_topic.items():
        produce_events(kafka_bootstrap, topic, events)

    def created() -> dict[str, list[dict[str, Any]]]:
        records = everything(kafka_bootstrap, router_topics["tasks"], n_held + n_slow)
        return {
            task_id: copies
            for task_id, copies in distinct(records, "task_id").items()
            if any("due_at" in c and "level" not in c and "action" not in c for c in copies)
        }

    assert wait_for(lambda: len(created()) >= n_held + n_slow, 120, 0.5), first.log_tail()
    tasks = created()
    # a second worker joins (the group rebalances), then the first dies without a goodbye
    second = ready(router_factory(**FAST_GROUP))
    first.kill()
    decisions = [
        router_kit.review_decision(copies[0]["call_id"], task_id)
        for task_id, copies in tasks.items()
        if copies[0]["call_id"].startswith("b-hold-")
    ]
    assert len(decisions) == n_held
    produce_events(kafka_bootstrap, router_topics["decisions"], decisions)

    def released() -> set[str]:
        records = everything(kafka_bootstrap, router_topics["outcomes"], n_held + n_slow)
        return {
            c[0]["call_id"]
            for c in distinct(records, "outcome_id").values()
            if c[0]["scope"] == "call" and c[0]["release"] == "reviewed"
        }

    assert wait_for(lambda: len(released()) >= n_held, 120, 0.5), second.log_tail()
    assert released() == {f"b-hold-{i}" for i in range(n_held)}

    def escalated() -> set[str]:
        records = everything(kafka_bootstrap, router_topics["tasks"], n_held + n_slow)
        return {
            json.loads(r.value or b"{}")["call_id"]
            for r in records
            if r.headers["ce_type"] == b"io.loopwise.review.task.escalated.v1"
        }

    # the 12 s SLA clocks of the slow calls, started on the first worker, still fire
    assert wait_for(lambda: len(escalated()) >= n_slow, 120, 1.0), second.log_tail()
    assert escalated() == {f"b-slow-{i}" for i in range(n_slow)}
    assert read_topic(kafka_bootstrap, router_topics["dlq"], expect=1, timeout_s=2) == []
