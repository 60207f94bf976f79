"""/healthz of a worker on a real broker: slow input is progress, a hang is not.

A batch of inputs that each take a while (long segments through redaction and the
rules) can take longer than `health_stall_s` as a whole. Were that a failed liveness
probe, the orchestrator would restart the service into the same batch, again and again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from loopwise.events import CallMetadataV1
from loopwise.kafka.intake import Emit, Incoming
from loopwise.kafka.worker import Worker, WorkerSettings
from tests.support.kafka_io import produce_events, read_all, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

STALL_S = 1.5


class Slow:
    """Takes `each_s` per input; an input with metadata `hang` blocks until released."""

    def __init__(self, output_topic: str, each_s: float) -> None:
        self.output_topic = output_topic
        self.each_s = each_s
        self.hanging = threading.Event()
        self.release = threading.Event()
        self.handled = 0

    def __call__(self, incoming: Incoming) -> list[Emit]:
        event = incoming.event
        assert isinstance(event, CallMetadataV1)
        if event.metadata.get("hang"):
            self.hanging.set()
            self.release.wait(60)
        time.sleep(self.each_s)
        self.handled += 1
        return [Emit(self.output_topic, event)]


def test_a_batch_of_slow_inputs_stays_healthy_and_a_hang_does_not(
    kafka_bootstrap: str, new_topic: Callable[..., str], group_id: str
) -> None:
    topics = {"in": new_topic("in", partitions=1), "out": new_topic("out", partitions=1)}
    settings = WorkerSettings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        group_id=group_id,
        input_topics=[topics["in"]],
        dead_letter_topic=new_topic("dlq", partitions=1),
        observability={"host": "127.0.0.1", "port": 0},
        poll_timeout_s=0.1,
        health_stall_s=STALL_S,
    )
    handler = Slow(topics["out"], each_s=0.2)
    calls = [
        CallMetadataV1(
            tenant_id="acme", call_id=f"c{i}", occurred_at=datetime.now(UTC), metadata={"n": i}
        )
        for i in range(20)
    ]
    produce_events(kafka_bootstrap, topics["in"], calls)  # one batch of ~4 s, before the start
    worker = Worker(
        service="liveness",
        settings=settings,
        handler=handler,
        output_topics=[topics["out"]],
        accepted={CallMetadataV1.event_type: CallMetadataV1},
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: handler.handled > 0, 60)
        unhealthy_while_working = 0
        while handler.handled < len(calls) and thread.is_alive():
            unhealthy_while_working += not worker.healthy()
            time.sleep(0.05)
        assert handler.handled == len(calls)
        assert unhealthy_while_working == 0, "slow but moving input failed the liveness probe"
        assert wait_for(lambda: len(read_all(kafka_bootstrap, topics["out"])) == len(calls), 30)

        # an input that never finishes: the probe must fail, or it would hide a hang
        hang = CallMetadataV1(
            tenant_id="acme", call_id="hang", occurred_at=datetime.now(UTC), metadata={"hang": 1}
        )
        produce_events(kafka_bootstrap, topics["in"], [hang])
        assert handler.hanging.wait(30)
        assert wait_for(lambda: not worker.healthy(), STALL_S * 10), "a hang stayed healthy"
        handler.release.set()
        assert wait_for(worker.healthy, 30), "not healthy again once the input finished"
    finally:
        handler.release.set()
        worker.stop()
        thread.join(60)
