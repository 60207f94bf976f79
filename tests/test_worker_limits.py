"""Records over 1 MiB where the topics take them: a long call's review task or release must
not be refused by the producer (its batch would be retried forever and stall the partition)
nor dead-lettered as oversize by the service reading it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from loopwise.events import CallMetadataV1, encode
from loopwise.kafka import Worker
from loopwise.topics import PRODUCER_MAX_MESSAGE_BYTES, message_limit, topic
from tests.support.echo_worker import EchoSettings, build_worker, running_in_thread
from tests.support.kafka_io import produce_raw, read_topic

BIG_TOPIC_BYTES = 8 * 1024 * 1024


def echo_settings(**values: Any) -> EchoSettings:
    base: dict[str, Any] = {
        "kafka": {"bootstrap_servers": "127.0.0.1:1"},
        "group_id": "limits",
        "input_topics": [topic("hitl.review-tasks"), topic("hitl.routing-decisions")],
        "output_topic": topic("hitl.outcomes"),
        "dead_letter_topic": topic("dlq.review-router"),
        "observability": {"host": "127.0.0.1", "port": 0},
    }
    return EchoSettings(**{**base, **values})


def test_catalogue_lets_task_decision_and_release_topics_carry_long_calls() -> None:
    for label in ("hitl.review-tasks", "hitl.decisions", "hitl.outcomes"):
        assert message_limit(topic(label)) == BIG_TOPIC_BYTES, label
    assert message_limit(topic("hitl.routing-decisions")) is None  # the broker's 1 MiB
    assert message_limit("not.a.catalogue.topic") is None


def test_worker_admits_and_produces_up_to_its_topics_limits() -> None:
    worker: Worker = build_worker(echo_settings())
    limits = worker._input_limits
    assert limits[topic("hitl.review-tasks")] == BIG_TOPIC_BYTES
    assert limits[topic("hitl.routing-decisions")] == 1_048_576  # the setting's default
    assert worker._producer_config()["message.max.bytes"] == BIG_TOPIC_BYTES

    # a service writing only to 1 MiB topics keeps librdkafka's default
    small = build_worker(echo_settings(output_topic=topic("cx.sentiment")))
    assert small._producer_config()["message.max.bytes"] == PRODUCER_MAX_MESSAGE_BYTES

    # an explicit setting still wins: a larger value limit, a producer override
    wide = build_worker(
        echo_settings(
            max_message_bytes=16 * 1024 * 1024,
            producer_overrides={"message.max.bytes": 2_000_000},
        )
    )
    assert wide._input_limits[topic("hitl.routing-decisions")] == 16 * 1024 * 1024
    assert wide._input_limits[topic("hitl.review-tasks")] == 16 * 1024 * 1024
    assert wide._producer_config()["message.max.bytes"] == 2_000_000


@pytest.fixture
def big_topics(kafka_admin: Any, new_topic: Callable[..., str]) -> dict[str, str]:
    """Input and output topics that take 8 MiB records (names the catalogue does not know)."""
    from confluent_kafka.admin import NewTopic

    names = {kind: f"test.limits-{kind}.{uuid.uuid4().hex[:12]}" for kind in ("in", "out")}
    created = kafka_admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=1,
                replication_factor=1,
                config={"max.message.bytes": str(BIG_TOPIC_BYTES)},
            )
            for name in names.values()
        ]
    )
    for future in created.values():
        future.result(timeout=30)
    return {**names, "dlq": new_topic("dlq", partitions=1)}


@pytest.fixture
def running_big_echo(
    kafka_bootstrap: str, big_topics: dict[str, str], group_id: str
) -> Iterator[Worker]:
    settings = EchoSettings(
        kafka={"bootstrap_servers": kafka_bootstrap},  # type: ignore[arg-type]
        group_id=group_id,
        input_topics=[big_topics["in"]],
        output_topic=big_topics["out"],
        dead_letter_topic=big_topics["dlq"],
        observability={"host": "127.0.0.1", "port": 0},  # type: ignore[arg-type]
        max_message_bytes=BIG_TOPIC_BYTES,  # the reading side: a topic outside the catalogue
    )
    worker = build_worker(settings)
    with running_in_thread(worker):
        yield worker


@pytest.mark.kafka
def test_a_record_over_1_mib_goes_out_where_the_output_topic_takes_it(
    kafka_bootstrap: str, big_topics: dict[str, str], running_big_echo: Worker
) -> None:
    now = datetime.now(UTC)
    big = CallMetadataV1(
        tenant_id="acme",
        call_id="call-long",
        occurred_at=now,
        metadata={f"part-{i}": f"{i:04d} " * 20_000 for i in range(30)},  # ~3 MB of JSON
    )
    after = CallMetadataV1(
        tenant_id="acme", call_id="call-long", occurred_at=now, metadata={"n": 1}
    )
    records = []
    for event in (big, after):
        key, value, headers, _ = encode(event, source="test")
        records.append((key, value, headers))
    assert len(records[0][1]) > 3 * PRODUCER_MAX_MESSAGE_BYTES

    produce_raw(kafka_bootstrap, big_topics["in"], records)
    echoed = read_topic(kafka_bootstrap, big_topics["out"], expect=2, timeout_s=60)

    assert len(echoed) == 2, "the large record (or the one after it) did not come through"
    # the producer's limit came from the broker's topic config (the name is not in the
    # catalogue): without it the 3 MB echo is refused and its batch retried for ever
    assert running_big_echo._message_max_bytes >= BIG_TOPIC_BYTES
    first, second = (json.loads(r.value or b"") for r in echoed)
    assert first["metadata"]["part-29"] == big.metadata["part-29"]
    assert second["metadata"]["n"] == 1
    assert read_topic(kafka_bootstrap, big_topics["dlq"], expect=0, timeout_s=2) == []
