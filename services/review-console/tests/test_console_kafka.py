"""On the real broker: the materialiser (replays add nothing, bad input is dead-lettered) and
the outbox (a decision made while Kafka is down is published once it is back)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loopwise.events import ReviewDecisionV1, encode
from loopwise.kafka import Worker
from loopwise.settings import KafkaSettings
from loopwise_console.auth import Principal
from loopwise_console.config import ConsoleSettings
from loopwise_console.console import SERVICE, Console, DecisionIn
from loopwise_console.service import Materialiser, OutboxPublisher
from loopwise_console.store import ConsoleStore
from tests.support.kafka_io import produce_raw, read_topic, wait_for

pytestmark = pytest.mark.kafka


def test_materialiser_and_outbox_through_kafka(
    kafka_bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path, kit: Any
) -> None:
    topics = {
        k: new_topic(f"console-{k}") for k in ("tasks", "routing", "decisions", "audit", "dlq")
    }
    settings = ConsoleSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        data_dir=tmp_path / "console",
        group_id=group_id,
        input_topics=[topics["tasks"], topics["routing"]],
        decisions_topic=topics["decisions"],
        audit_topic=topics["audit"],
        dead_letter_topic=topics["dlq"],
        poll_timeout_s=0.2,
    )
    store = ConsoleStore(settings.db_url())
    materialiser = Materialiser(store)
    worker = Worker(
        service=SERVICE,
        settings=settings,
        handler=materialiser.handle,
        before_commit=materialiser.commit,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        task = kit.task("k-1")
        key, value, headers, _ = encode(task, source="test")
        routing_key, routing_value, routing_headers, _ = encode(kit.routing(task), source="test")
        # the same record twice (a redelivery), and one that is not an event at all
        produce_raw(kafka_bootstrap, topics["tasks"], [(key, value, headers)] * 2)
        produce_raw(kafka_bootstrap, topics["tasks"], [(key, b"{not json", headers)])
        produce_raw(
            kafka_bootstrap, topics["routing"], [(routing_key, routing_value, routing_headers)]
        )
        console = Console(store, settings)
        ann = Principal(subject="ann", role="reviewer", tenants=("acme",), auth="token")

        def materialised() -> bool:
            try:
                return bool(console.get(ann, "k-1")["held_because"]["conditions"])
            except Exception:
                return False

        assert wait_for(materialised, 60)
        dead = read_topic(kafka_bootstrap, topics["dlq"], 1, timeout_s=30)
        assert len(dead) == 1 and dead[0].headers["dlq_error_class"] == b"InvalidJson"
        assert dead[0].headers["dlq_service"] == b"review-console"
        assert console.list_tasks(ann, kit_filters(), 10, 0)[1] == 1  # the replay added nothing

        # Kafka "down": a publisher that reaches no broker keeps every row
        console.claim(ann, "k-1")
        console.decide(ann, "k-1", DecisionIn(verdict="reject", comment="down"), "/test")
        down = settings.model_copy(
            update={
                "kafka": KafkaSettings(bootstrap_servers="127.0.0.1:1"),
                "producer_overrides": {"message.timeout.ms": 1500},
            }
        )
        assert OutboxPublisher(store, down).publish_once() == 0
        assert store.outbox_backlog() == 2  # the decision and its audit event wait
        assert all(r.last_error for r in store.pending_outbox())
        # back up: published once, with the ids written in the transaction
        live = OutboxPublisher(store, settings)
        assert live.publish_once() == 2 and store.outbox_backlog() == 0
        assert live.publish_once() == 0
        decisions = read_topic(kafka_bootstrap, topics["decisions"], 1, timeout_s=30, settle_s=1.0)
        assert len(decisions) == 1 and decisions[0].key == b"call-k-1"
        decision = ReviewDecisionV1.model_validate_json(decisions[0].value or b"")
        assert decision.verdict == "reject" and decision.reviewer_id == "ann"
        audit = read_topic(kafka_bootstrap, topics["audit"], 1, timeout_s=30)
        assert json.loads(audit[0].value or b"{}")["action"] == "task.decide"
    finally:
        worker.stop()
        thread.join(30)
        store.close()


def kit_filters() -> Any:
    from loopwise_console.console import Filters

    return Filters()
