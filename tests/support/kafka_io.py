"""Helpers for tests: produce contract events and read topics back from a real broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from loopwise.events import TenantEvent, encode
from loopwise.events.envelope import Headers


@dataclass
class Record:
    """A consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def produce_events(
    bootstrap: str, topic: str, events: Iterable[TenantEvent], source: str = "test"
) -> list[str]:
    """Produce events with envelopes; return their event ids in order."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
        }
    )
    ids = []
    for event in events:
        key, value, headers, envelope = encode(event, source=source)
        producer.produce(topic, key=key, value=value, headers=cast(Any, headers))
        ids.append(envelope.id)
        producer.poll(0)
    assert producer.flush(30) == 0
    return ids


def produce_raw(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None, Headers]]
) -> None:
    """Produce raw (possibly broken) records."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "message.max.bytes": 10_000_000,
            "partitioner": "murmur2_random",
        }
    )
    for key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=cast(Any, headers))
    assert producer.flush(30) == 0


def read_topic(
    bootstrap: str, topic: str, expect: int, timeout_s: float = 60.0, settle_s: float = 0.0
) -> list[Record]:
    """Read a topic from the start until `expect` records arrived (or timeout), then settle."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if len(records) >= expect:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            records.append(
                Record(
                    topic=msg.topic() or "",
                    partition=msg.partition() or 0,
                    offset=msg.offset() or 0,
                    key=msg.key(),
                    value=msg.value(),
                    headers={
                        k: v for k, v in cast(Headers, msg.headers() or []) if isinstance(v, bytes)
                    },
                )
            )
    finally:
        consumer.close()
    return records


def read_all(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Record]:
    """Read every record a topic holds now: up to each partition's high watermark."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    records: list[Record] = []
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if offset >= ends.get(partition, 0):
                continue
            records.append(
                Record(
                    topic=msg.topic() or "",
                    partition=partition,
                    offset=offset,
                    key=msg.key(),
                    value=msg.value(),
                    headers={
                        k: v for k, v in cast(Headers, msg.headers() or []) if isinstance(v, bytes)
                    },
                )
            )
            if offset + 1 >= ends[partition]:
                del ends[partition]
    finally:
        consumer.close()
    return records


def wait_for(predicate: Any, timeout_s: float = 60.0, interval_s: float = 0.1) -> bool:
    """Poll a condition until it holds or time runs out (state polling, not a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
