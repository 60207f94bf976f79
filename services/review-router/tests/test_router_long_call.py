"""A long call through the router on the real broker: its review task and its release carry
every segment's text and pass 1 MiB, and the calls behind it on the partition go on.

With librdkafka's default `message.max.bytes` the router refused such a task when it
produced it, retried the batch for ever, and every later call of the partition waited.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.kafka_io import produce_events, read_topic, wait_for

pytestmark = pytest.mark.kafka

BIG_TOPIC_BYTES = 8 * 1024 * 1024  # as the catalogue sets for hitl.review-tasks / outcomes
SEGMENTS = 80
TEXT_CHARS = 15_000  # 80 x 15,000 characters: a task and a release of ~1.2 MB


@pytest.fixture
def router_topics(kafka_admin: Any, new_topic: Callable[..., str]) -> dict[str, str]:
    """One partition for all (the long call and the next share it); tasks and outcomes
    take 8 MiB records, as the shipped topic catalogue creates them."""
    from confluent_kafka.admin import NewTopic

    topics = {
        kind: new_topic(f"router-{kind}", partitions=1)
        for kind in ("calls", "transcripts", "sentiment", "compliance", "decisions", "routing")
    }
    topics["dlq"] = new_topic("router-dlq", partitions=1)
    big = {kind: f"test.router-{kind}.{uuid.uuid4().hex[:12]}" for kind in ("tasks", "outcomes")}
    created = kafka_admin.create_topics(
        [
            NewTopic(n, 1, 1, config={"max.message.bytes": str(BIG_TOPIC_BYTES)})
            for n in big.values()
        ]
    )
    for future in created.values():
        future.result(timeout=30)
    return {**topics, **big}


def long_text(i: int) -> str:
    words = f"segment {i} the customer explains the account history again and again "
    return (words * (TEXT_CHARS // len(words) + 1))[:TEXT_CHARS]


def test_long_call_task_and_release_pass_1_mib_and_the_partition_goes_on(
    kafka_bootstrap: str,
    router_topics: dict[str, str],
    router_factory: Callable[..., Any],
    router_kit: Any,
) -> None:
    router = router_factory()
    router.start()
    assert wait_for(router.ready, 90, 0.25), f"router not ready:\n{router.log_tail()}"

    long_call = router_kit.call_script("k-long", queue="hold-q", segments=SEGMENTS)
    long_call.events["transcripts"] = [
        e.model_copy(update={"text": long_text(i)})
        for i, e in enumerate(long_call.events["transcripts"])
    ]
    after = router_kit.call_script("k-after", queue="auto-q")
    for kind in ("calls", "transcripts", "sentiment", "compliance", "ended"):
        topic = router_topics["calls" if kind == "ended" else kind]
        produce_events(
            kafka_bootstrap, topic, [*long_call.events.get(kind, []), *after.events.get(kind, [])]
        )

    # the call behind the long one on the partition is routed and released
    decided = router_kit.decoded(
        read_topic(kafka_bootstrap, router_topics["routing"], expect=SEGMENTS + 4, timeout_s=90)
    )
    calls = {b["call_id"]: b["outcome"] for _, b in decided if b["scope"] == "call"}
    assert calls == {"k-long": "hold", "k-after": "auto"}, router.log_tail()

    tasks = router_kit.decoded(read_topic(kafka_bootstrap, router_topics["tasks"], expect=1))
    assert len(tasks) == 1, router.log_tail()
    task = tasks[0][1]
    assert task["call_id"] == "k-long" and task["scope"] == "call"
    assert len(task["segments"]) == SEGMENTS
    assert [len(s["text"]) for s in task["segments"]] == [TEXT_CHARS] * SEGMENTS
    assert task["segments"][7]["text"] == long_text(7)

    # the reviewer approves: the whole call is released with every segment's text
    decision = router_kit.review_decision("k-long", task["task_id"])
    produce_events(kafka_bootstrap, router_topics["decisions"], [decision])

    def released() -> list[dict[str, Any]]:
        records = read_topic(
            kafka_bootstrap, router_topics["outcomes"], expect=2 * SEGMENTS + 4, timeout_s=5
        )
        decoded = router_kit.decoded(records)
        return [b for _, b in decoded if b["scope"] == "call"]

    assert wait_for(lambda: len(released()) == 2, 60, 1.0), router.log_tail()
    by_call = {b["call_id"]: b for b in released()}
    assert by_call["k-after"]["release"] == "auto"
    assert by_call["k-long"]["release"] == "reviewed"
    assert len(by_call["k-long"]["segments"]) == SEGMENTS
    assert by_call["k-long"]["segments"][-1]["text"] == long_text(SEGMENTS - 1)
    assert read_topic(kafka_bootstrap, router_topics["dlq"], expect=0, timeout_s=2) == []
