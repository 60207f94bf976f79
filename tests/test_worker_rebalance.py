"""A rebalance that lands while the worker takes a batch, on a real broker.

The worker takes a batch as one `poll` and then one `consume` of what is already fetched.
A rebalance can run inside that `consume`: the partitions of records already taken are then
revoked. Handled, such records would meet a state the worker no longer holds, and storing
their offsets fails ("Local: Erroneous state"), which used to stop the service.

The test steers only the timing: the worker's real consumer, wrapped, waits before its
next `consume` until a second member has joined the group and the coordinator has asked
for a rebalance, so that the rebalance runs inside that `consume`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Consumer

from loopwise.events import CallMetadataV1
from loopwise.kafka import worker as worker_module
from loopwise.kafka.intake import Emit, Incoming
from loopwise.kafka.worker import Worker, WorkerSettings
from tests.support.kafka_io import produce_events, read_all, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 300}


class Echo:
    """Echoes every input, as a child of it."""

    def __init__(self, output_topic: str) -> None:
        self.output_topic = output_topic

    def __call__(self, incoming: Incoming) -> list[Emit]:
        event = incoming.event
        assert isinstance(event, CallMetadataV1)
        echo = CallMetadataV1(
            tenant_id=event.tenant_id,
            call_id=event.call_id,
            occurred_at=event.occurred_at,
            metadata={"echo_of": incoming.envelope.id},
        )
        return [Emit(self.output_topic, echo)]


class SteeredConsumer:
    """A real consumer whose next `consume`, once armed, waits for the test's go."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.real = Consumer(config)
        self.armed = threading.Event()
        self.waiting = threading.Event()
        self.go = threading.Event()
        self.revoked_inside: list[int] = []  # records dropped by the worker after such a call
        self.worker: Worker | None = None

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        if not self.armed.is_set():
            return self.real.consume(*args, **kwargs)
        self.armed.clear()
        self.waiting.set()
        self.go.wait(60)
        messages = self.real.consume(*args, **kwargs)
        assert self.worker is not None
        if self.worker._revoked_in_poll:  # the rebalance ran inside this very call
            self.revoked_inside.append(1 + len(messages))
        return messages

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def meta(call: str, n: int) -> CallMetadataV1:
    return CallMetadataV1(
        tenant_id="acme", call_id=call, occurred_at=datetime.now(UTC), metadata={"n": n}
    )


def test_a_rebalance_inside_the_batch_consume_drops_the_revoked_records_and_loses_none(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topics = {"in": new_topic("in", partitions=4), "out": new_topic("out", partitions=4)}
    dlq = new_topic("dlq", partitions=1)
    settings = WorkerSettings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        group_id=group_id,
        input_topics=[topics["in"]],
        dead_letter_topic=dlq,
        observability={"host": "127.0.0.1", "port": 0},
        poll_timeout_s=0.1,
        consumer_overrides=FAST_GROUP,
    )
    steered: list[SteeredConsumer] = []

    def make_consumer(config: dict[str, Any]) -> SteeredConsumer:
        steered.append(SteeredConsumer(config))
        return steered[-1]

    monkeypatch.setattr(worker_module, "Consumer", make_consumer)
    worker = Worker(
        service="rebalance",
        settings=settings,
        handler=Echo(topics["out"]),
        output_topics=[topics["out"]],
        accepted={CallMetadataV1.event_type: CallMetadataV1},
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    other: Consumer | None = None
    stop_other = threading.Event()
    poller: threading.Thread | None = None
    try:
        ids = produce_events(kafka_bootstrap, topics["in"], [meta(f"c{i}", i) for i in range(40)])
        assert wait_for(lambda: len(read_all(kafka_bootstrap, topics["out"])) >= 40, 60)
        (consumer,) = steered
        consumer.worker = worker
        consumer.armed.set()
        # the next batch: its first record is taken, then its consume waits
        ids += produce_events(
            kafka_bootstrap, topics["in"], [meta(f"c{i}", i) for i in range(40, 400)]
        )
        assert consumer.waiting.wait(60), "the worker took no further batch"
        other = Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": group_id,
                "enable.auto.commit": False,
                **FAST_GROUP,
            }
        )
        other.subscribe([topics["in"]])
        member = other

        def keep_polling() -> None:
            while not stop_other.is_set():
                member.poll(0.1)  # joins the group, then holds what it gets, reads nothing

        poller = threading.Thread(target=keep_polling, daemon=True)
        poller.start()
        time.sleep(3)  # the worker's heartbeats learn of the rebalance; its revocation queues
        consumer.go.set()
        assert wait_for(lambda: bool(consumer.revoked_inside) or not thread.is_alive(), 30)
        assert thread.is_alive(), "the worker stopped on the rebalance inside its batch"
        assert consumer.revoked_inside, "the rebalance did not run inside the steered consume"
        time.sleep(2)
        stop_other.set()
        poller.join(10)
        other.close()  # leaves the group: every partition goes back to the worker
        other = None

        def echoed() -> Counter[str]:
            records = read_all(kafka_bootstrap, topics["out"])
            return Counter(
                str(CallMetadataV1.model_validate_json(r.value or b"").metadata["echo_of"])
                for r in records
            )

        assert wait_for(lambda: set(ids) <= set(echoed()), 120), "inputs were never handled"
        assert thread.is_alive()
        assert read_all(kafka_bootstrap, dlq) == [], "valid input was dead-lettered"
    finally:
        stop_other.set()
        if poller is not None:
            poller.join(10)
        if other is not None:
            other.close()
        worker.stop()
        thread.join(60)
