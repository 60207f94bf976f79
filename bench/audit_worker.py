"""End to end: events on Kafka topics to committed, chained audit records, per second.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 uv run python bench/audit_worker.py [--calls 1500]

Produces CALLS example calls (16 pipeline events each) to fresh topics, then starts
the audit writer (SQLite, batch size 500, synchronous=FULL) in this process and times
it from start until every event is a record; then replays everything with a new
consumer group and times that (every event is a duplicate: nothing is appended).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from loopwise.events import AuditCheckpointV1, encode
from loopwise.events.examples import example_events
from loopwise.topics import catalogue
from loopwise_audit.config import AuditWorkerSettings, pipeline_topics
from loopwise_audit.store import AuditStore
from loopwise_audit.worker import AuditService


def count(url: str) -> int:
    store = AuditStore(url)
    try:
        with store.reader() as conn:
            return store.count(conn)
    finally:
        store.close()


def run_until(settings: AuditWorkerSettings, done: Any, timeout_s: float = 600) -> float:
    service = AuditService(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    start = time.perf_counter()
    thread.start()
    while not done() and time.perf_counter() - start < timeout_s:
        time.sleep(0.2)
    elapsed = time.perf_counter() - start
    service.stop()
    thread.join(60)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1500)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    run_id = uuid.uuid4().hex[:8]
    topics = {name: f"bench.audit.{run_id}.{name}" for name in pipeline_topics()}
    extra = {"cp": f"bench.audit.{run_id}.cp", "dlq": f"bench.audit.{run_id}.dlq"}
    new = [NewTopic(t, num_partitions=6, replication_factor=1) for t in topics.values()]
    new += [NewTopic(t, num_partitions=1, replication_factor=1) for t in extra.values()]
    for future in admin.create_topics(new).values():
        future.result(30)
    by_type = {e: topics[s.name] for s in catalogue().topics if s.name in topics for e in s.events}

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    events = 0
    for call in range(args.calls):
        for event in example_events(call_id=f"call-{call:06d}", tenant_id=f"t{call % 4}"):
            if isinstance(event, AuditCheckpointV1):
                continue
            key, value, headers, _ = encode(event, source="bench")
            while True:
                try:
                    producer.produce(
                        by_type[event.event_type], key=key, value=value, headers=cast(Any, headers)
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            events += 1
    producer.flush(60)

    work = Path(tempfile.mkdtemp(prefix="audit-e2e-"))
    settings = AuditWorkerSettings(
        kafka={"bootstrap_servers": bootstrap},  # type: ignore[arg-type]
        group_id=f"bench-audit-{run_id}",
        input_topics=list(topics.values()),
        dead_letter_topic=extra["dlq"],
        checkpoint_topic=extra["cp"],
        database_url=f"sqlite:///{work / 'audit.db'}",
        checkpoint_dir=work / "cp",
        hmac_key="bench-key-0123456789abcdef-0123456789",  # type: ignore[arg-type]
        observability={"host": "127.0.0.1", "port": 0, "log_level": "WARNING"},  # type: ignore[arg-type]
    )
    url = settings.database_url
    seconds = run_until(settings, lambda: count(url) >= events)
    print(
        f"first pass: {events} events -> {count(url)} records in {seconds:.1f} s "
        f"({events / seconds:,.0f} events/s, including group join)"
    )
    from prometheus_client import REGISTRY

    def skipped() -> float:
        return REGISTRY.get_sample_value("loopwise_audit_duplicates_skipped_total") or 0.0

    before = skipped()
    replay = settings.model_copy(update={"group_id": f"bench-audit-{run_id}-replay"})
    seconds = run_until(replay, lambda: skipped() - before >= events)
    print(
        f"replay:     {events} events -> {count(url)} records in {seconds:.1f} s "
        f"({events / seconds:,.0f} events/s; nothing appended)"
    )
    admin.delete_topics([*topics.values(), *extra.values()])


if __name__ == "__main__":
    main()
