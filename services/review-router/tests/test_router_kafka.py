"""The router app on the real broker: holds, auto release, decisions, dead letters, SLAs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from loopwise.events import CallComplianceV1, ComplianceFinding, Evidence, TenantEvent
from loopwise_router.routing import sampling_draw
from tests.support.kafka_io import produce_events, read_topic, wait_for

pytestmark = pytest.mark.kafka

KIND_TOPIC = {"calls": "calls", "ended": "calls", "transcripts": "transcripts"}


def send_calls(bootstrap: str, topics: dict[str, str], scripts: list[Any]) -> None:
    """Produce each input kind to its topic (ends after the rest of the call)."""
    by_topic: dict[str, list[TenantEvent]] = {}
    for kind in ("calls", "transcripts", "sentiment", "compliance", "ended"):
        topic = topics[KIND_TOPIC.get(kind, kind)]
        for script in scripts:
            by_topic.setdefault(topic, []).extend(script.events.get(kind, []))
    for topic, events in by_topic.items():
        produce_events(bootstrap, topic, events)


def outputs(bootstrap: str, topic: str, kit: Any, expect: int, **kw: Any) -> list[Any]:
    return kit.decoded(read_topic(bootstrap, topic, expect=expect, **kw))


def started(proc: Any) -> Any:
    proc.start()
    assert wait_for(proc.ready, 90, 0.25), f"router not ready:\n{proc.log_tail()}"
    return proc


def test_holds_auto_release_decisions_dead_letters_and_sla(
    kafka_bootstrap: str,
    router_topics: dict[str, str],
    router_factory: Callable[..., Any],
    router_kit: Any,
) -> None:
    router = started(router_factory())
    auto = router_kit.call_script("k-auto")
    held = router_kit.call_script("k-held", queue="hold-q")
    sla = router_kit.call_script("k-sla", queue="sla-q")
    send_calls(kafka_bootstrap, router_topics, [held, sla, auto])

    # 3 calls x (2 segment + 1 call) decisions; 2 tasks; 6 segment + 1 call outcomes
    routing = outputs(kafka_bootstrap, router_topics["routing"], router_kit, 9, timeout_s=60)
    assert len(routing) == 9, router.log_tail()
    by_call = {(b["call_id"], b["scope"], b.get("segment_id")): b for _, b in routing}
    assert by_call[("k-auto", "call", None)]["outcome"] == "auto"
    assert by_call[("k-held", "call", None)]["outcome"] == "hold"
    assert by_call[("k-held", "call", None)]["fired"][0]["condition"] == "queue == hold-q"
    assert by_call[("k-held", "segment", "seg-000")]["outcome"] == "auto"
    released = outputs(kafka_bootstrap, router_topics["outcomes"], router_kit, 7, settle_s=1.0)
    call_outcomes = [b for _, b in released if b["scope"] == "call"]
    # the auto call is out at once; the held ones are not
    assert [b["call_id"] for b in call_outcomes] == ["k-auto"]
    assert call_outcomes[0]["release"] == "auto"

    tasks = outputs(kafka_bootstrap, router_topics["tasks"], router_kit, 4, timeout_s=30)
    kinds = Counter(t for t, _ in tasks)
    assert kinds["io.loopwise.review.task.created.v1"] == 2
    # the 1 s SLA of sla-q: breached, escalated, then expired (escalations: 1)
    escalated = [b for t, b in tasks if t == "io.loopwise.review.task.escalated.v1"]
    expired = [b for t, b in tasks if t == "io.loopwise.review.task.expired.v1"]
    assert escalated and escalated[0]["call_id"] == "k-sla" and escalated[0]["level"] == 1
    assert expired and expired[0]["action"] == "kept_held"
    held_task = next(b for t, b in tasks if t.endswith("created.v1") and b["call_id"] == "k-held")

    decision = router_kit.review_decision(
        "k-held", held_task["task_id"], corrections={"seg-001": "what the customer said"}
    )
    produce_events(kafka_bootstrap, router_topics["decisions"], [decision])
    released = outputs(kafka_bootstrap, router_topics["outcomes"], router_kit, 8, timeout_s=30)
    held_out = [b for _, b in released if b["call_id"] == "k-held" and b["scope"] == "call"]
    assert len(held_out) == 1, held_out
    assert held_out[0]["release"] == "reviewed" and held_out[0]["verdict"] == "approve"
    texts = {s["segment_id"]: (s["text"], s["corrected"]) for s in held_out[0]["segments"]}
    assert texts["seg-001"] == ("what the customer said", True)

    # a redelivered decision changes nothing; a second one and an unknown task are dead letters
    again = router_kit.review_decision("k-held", held_task["task_id"], decision_id="someone-else")
    unknown = router_kit.review_decision("k-held", "task-does-not-exist")
    produce_events(kafka_bootstrap, router_topics["decisions"], [decision, again, unknown])
    dead = read_topic(kafka_bootstrap, router_topics["dlq"], expect=2, timeout_s=30, settle_s=1.0)
    reasons = sorted(r.headers["dlq_reason"].decode() for r in dead)
    assert len(reasons) == 2
    assert "already decided" in reasons[0] and "unknown task" in reasons[1]
    final = outputs(kafka_bootstrap, router_topics["outcomes"], router_kit, 8, settle_s=2.0)
    assert len(final) == 8  # nothing released twice


def test_sampled_share_follows_the_draws(
    kafka_bootstrap: str,
    router_topics: dict[str, str],
    router_factory: Callable[..., Any],
    router_kit: Any,
) -> None:
    n = 2000  # the figure: the sampled share over 2,000 calls through the broker
    scripts = [router_kit.call_script(f"s-{i}", queue="sample-q", segments=1) for i in range(n)]
    started(router_factory())
    send_calls(kafka_bootstrap, router_topics, scripts)
    routing = outputs(kafka_bootstrap, router_topics["routing"], router_kit, 2 * n, timeout_s=400)
    calls = {b["call_id"]: b for _, b in routing if b["scope"] == "call"}
    assert len(calls) == n
    expected = {f"s-{i}" for i in range(n) if sampling_draw(f"s-{i}", "sample-queue") < 0.3}
    sampled = {c for c, b in calls.items() if b["outcome"] == "sample"}
    assert sampled == expected  # exactly the calls whose draw is under the rate
    for call_id, body in calls.items():
        assert body["sampling_draw"] == sampling_draw(call_id, "sample-queue")
    assert abs(len(sampled) / n - 0.3) <= 0.02  # within 2 points of the configured rate
    released = outputs(kafka_bootstrap, router_topics["outcomes"], router_kit, 2 * n, timeout_s=120)
    call_releases = Counter(b["release"] for _, b in released if b["scope"] == "call")
    assert call_releases == {"sampled": len(expected), "auto": n - len(expected)}


def test_sighup_reloads_the_policy_and_a_broken_file_is_rejected(
    kafka_bootstrap: str,
    router_topics: dict[str, str],
    router_factory: Callable[..., Any],
    router_kit: Any,
    policy_file: Any,
) -> None:
    import signal

    # a long reload interval: only SIGHUP can make it pick the file up within this test
    router = started(
        router_factory(
            LOOPWISE_ROUTER_RELOAD_INTERVAL_S="3600",
            LOOPWISE_ROUTER_OBSERVABILITY__LOG_LEVEL="INFO",
        )
    )
    held = router_kit.call_script("h-before", queue="hold-q", segments=1)
    send_calls(kafka_bootstrap, router_topics, [held])
    first = outputs(kafka_bootstrap, router_topics["routing"], router_kit, 2, timeout_s=60)
    version = first[-1][1]["policy_version"]

    text = policy_file.read_text()
    policy_file.write_text(text.replace("outcome: hold\n    priority: p2", "outcome: hodl"))
    router.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "policy_rejected" in router.log_tail(200_000), 30), router.log_tail()
    rejected = next(
        line for line in router.log_tail(200_000).splitlines() if "policy_rejected" in line
    )
    assert str(policy_file) in rejected and '"line": 20' in rejected, rejected
    assert '"rule": "hold-queue"' in rejected, rejected

    policy_file.write_text(text.replace('"queue == hold-q"', '"queue == auto-q"'))
    router.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "policy_loaded" in router.log_tail(200_000), 30), router.log_tail()
    after = router_kit.call_script("h-after", segments=1)  # queue auto-q: held under the new one
    send_calls(kafka_bootstrap, router_topics, [after])
    routing = outputs(kafka_bootstrap, router_topics["routing"], router_kit, 4, timeout_s=60)
    calls = {b["call_id"]: b for _, b in routing if b["scope"] == "call"}
    assert calls["h-after"]["outcome"] == "hold" and calls["h-after"]["policy_version"] != version
    assert calls["h-before"]["policy_version"] == version

    # the hold taken under the old policy is still there and is released by its decision
    tasks = outputs(kafka_bootstrap, router_topics["tasks"], router_kit, 2, timeout_s=30)
    task_id = next(b["task_id"] for _, b in tasks if b["call_id"] == "h-before")
    produce_events(
        kafka_bootstrap,
        router_topics["decisions"],
        [router_kit.review_decision("h-before", task_id)],
    )
    released = outputs(kafka_bootstrap, router_topics["outcomes"], router_kit, 3, timeout_s=30)
    assert any(b["call_id"] == "h-before" and b["release"] == "reviewed" for _, b in released)


def test_a_late_revision_reaches_a_person_without_a_second_release(
    kafka_bootstrap: str,
    router_topics: dict[str, str],
    router_factory: Callable[..., Any],
    router_kit: Any,
) -> None:
    router = started(router_factory(LOOPWISE_ROUTER_CALL_GRACE_S="0.5"))
    script = router_kit.call_script("k-late")
    send_calls(kafka_bootstrap, router_topics, [script])
    first = outputs(kafka_bootstrap, router_topics["outcomes"], router_kit, 3, timeout_s=60)
    assert [b["release"] for _, b in first if b["scope"] == "call"] == ["auto"], router.log_tail()

    start = script.events["calls"][0]
    revision = CallComplianceV1(
        tenant_id=start.tenant_id,
        call_id="k-late",
        occurred_at=start.occurred_at,
        producer=script.events["compliance"][-1].producer,
        findings=[
            ComplianceFinding(
                finding_id="k-late/recording-notice",
                rule_id="recording-notice",
                category="disclosure",
                severity="high",
                score=1.0,
                evidence=Evidence(text="never said in the call"),
            )
        ],
        segments_checked=3,
        revision=1,
    )
    # the revision, delivered twice
    produce_events(kafka_bootstrap, router_topics["compliance"], [revision, revision])
    tasks = outputs(kafka_bootstrap, router_topics["tasks"], router_kit, 1, timeout_s=30)
    created = [b for t, b in tasks if t.endswith("created.v1")]
    assert len(created) == 1, router.log_tail()
    assert created[0]["kind"] == "hold" and created[0]["scope"] == "call"
    assert created[0]["reasons"][0].startswith("late finding after release")
    routing = outputs(kafka_bootstrap, router_topics["routing"], router_kit, 4, settle_s=2.0)
    late = [b for _, b in routing if b.get("redecision_of")]
    assert len(late) == 1 and late[0]["outcome"] == "hold"
    assert late[0]["task_id"] == created[0]["task_id"]
    again = outputs(kafka_bootstrap, router_topics["outcomes"], router_kit, 3, settle_s=2.0)
    assert len(again) == 3  # the call outcome was not released a second time
    assert len(outputs(kafka_bootstrap, router_topics["tasks"], router_kit, 1, settle_s=1.0)) == 1
