"""Every kind of malformed record, mixed into valid events, through an ordinary shared Worker.

Each bad record must land in the dead-letter topic (whose size limit is Kafka's
default) with its coordinates, class and a reason that names no sender field, while
every valid event is processed and the worker keeps running.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from loopwise.events import CallMetadataV1, DeadLetterV1, encode
from tests.support.echo_worker import EchoSettings, build_worker
from tests.support.kafka_io import read_topic
from tests.support.malformed import SENDER_SECRET, Malformed, malformed_records, produce_malformed

pytestmark = pytest.mark.kafka

INPUT_TOPIC_MAX_BYTES = 3_000_000  # room for a value over the worker's 1 MiB limit


@pytest.fixture
def input_topic(kafka_admin: Any) -> str:
    from confluent_kafka.admin import NewTopic

    name = f"test.malformed.{uuid.uuid4().hex[:12]}"
    topic = NewTopic(
        name,
        num_partitions=1,
        replication_factor=1,
        config={"max.message.bytes": str(INPUT_TOPIC_MAX_BYTES)},
    )
    for future in kafka_admin.create_topics([topic]).values():
        future.result(timeout=30)
    return name


@pytest.fixture
def worker_topics(input_topic: str, new_topic: Callable[..., str], group_id: str) -> dict[str, str]:
    return {
        "input": input_topic,
        "output": new_topic("out", partitions=1),
        "dlq": new_topic("dlq", partitions=1),  # the broker's default max.message.bytes
        "group": group_id,
    }


@pytest.fixture
def echo(kafka_bootstrap: str, worker_topics: dict[str, str]) -> Iterator[Any]:
    settings = EchoSettings(
        kafka={"bootstrap_servers": kafka_bootstrap},  # type: ignore[arg-type]
        group_id=worker_topics["group"],
        input_topics=[worker_topics["input"]],
        output_topic=worker_topics["output"],
        dead_letter_topic=worker_topics["dlq"],
        observability={"host": "127.0.0.1", "port": 0},  # type: ignore[arg-type]
        poll_timeout_s=0.2,
    )
    worker = build_worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield worker, thread
    worker.stop()
    thread.join(60)
    assert not thread.is_alive(), "worker did not stop after stop()"


def _valid(i: int) -> Malformed:
    event = CallMetadataV1(
        tenant_id="acme",
        call_id=f"call-ok-{i}",
        occurred_at=datetime.now(UTC),
        metadata={"n": i},
    )
    key, value, headers, _ = encode(event, source="test")
    return Malformed(f"valid-{i}", key, value, headers, "", "")


def test_every_kind_of_malformed_record_is_dead_lettered_and_valid_ones_flow(
    kafka_bootstrap: str, worker_topics: dict[str, str], echo: Any
) -> None:
    worker, thread = echo
    template = CallMetadataV1(
        tenant_id="acme", call_id="call-bad", occurred_at=datetime.now(UTC), metadata={"n": -1}
    )
    bad = malformed_records(
        template,
        prefix="bad",
        max_message_bytes=worker.settings.max_message_bytes,
        topic_max_bytes=INPUT_TOPIC_MAX_BYTES,
    )
    assert {b.name for b in bad} >= {"over-size-limit", "near-size-limit", "huge-ids"}
    mixed: list[Malformed] = []
    for i, item in enumerate(bad):
        mixed += [_valid(i), item]
    mixed.append(_valid(len(bad)))
    where = produce_malformed(kafka_bootstrap, worker_topics["input"], mixed, partition=0)
    placed = zip(mixed, where, strict=True)
    expected = {offset: record for record, (_, offset) in placed if record.error_class}
    n_valid = len(mixed) - len(expected)

    dead = read_topic(kafka_bootstrap, worker_topics["dlq"], expect=len(expected), settle_s=1.0)
    outputs = read_topic(kafka_bootstrap, worker_topics["output"], expect=n_valid, settle_s=0.5)

    assert sorted(json.loads(r.value or b"")["metadata"]["n"] for r in outputs) == list(
        range(n_valid)
    )
    assert len(dead) == len(expected)
    got: dict[int, str] = {}
    for record in dead:
        body = DeadLetterV1.model_validate_json(record.value or b"")
        want = expected[body.original_offset]
        assert (body.error_class, body.stage) == (want.error_class, want.stage), want.name
        assert body.original_topic == worker_topics["input"]
        assert body.reason and SENDER_SECRET not in body.reason, want.name
        assert SENDER_SECRET.encode() not in record.headers["dlq_reason"]
        assert not body.fallback, want.name
        got[body.original_offset] = want.name
    assert sorted(got) == sorted(expected)
    by_name = {
        want.name: DeadLetterV1.model_validate_json(r.value or b"")
        for r in dead
        for want in [expected[int(r.headers["dlq_original_offset"])]]
    }
    assert by_name["near-size-limit"].payload_truncated
    assert by_name["huge-ids"].original_lengths["call_id"] == 10_000
    assert thread.is_alive() and worker.healthy()
