"""LagWatch on a real broker: a group with unread input and no committed progress is stalled."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, TopicPartition

from loopwise.events import CallMetadataV1
from loopwise.settings import KafkaSettings
from loopwise.streaming import LagWatch
from tests.support.kafka_io import produce_events

pytestmark = pytest.mark.kafka


def test_stall_is_reported_until_the_group_commits_progress(
    kafka_bootstrap: str, new_topic: Callable[..., str], group_id: str
) -> None:
    topic = new_topic("lag", 2)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    watch = LagWatch(kafka, group_id, [topic], stall_s=0.5)
    try:
        watch.check()
        assert watch.behind == 0 and not watch.stalled(), "an empty topic is not a stall"

        event = CallMetadataV1(
            tenant_id="acme", call_id="call-1", occurred_at=datetime.now(UTC), metadata={}
        )
        produce_events(kafka_bootstrap, topic, [event] * 5)
        watch.check()
        assert watch.behind == 5
        time.sleep(0.6)  # the stall threshold itself is what is under test
        watch.check()
        assert watch.stalled()

        committer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_id})
        ends = [
            TopicPartition(topic, p, committer.get_watermark_offsets(TopicPartition(topic, p))[1])
            for p in range(2)
        ]
        committer.commit(offsets=ends, asynchronous=False)
        committer.close()
        watch.check()
        assert watch.behind == 0 and not watch.stalled()
    finally:
        watch.close()
