"""Fixtures of the review-console tests: a store, the app on it, tokens, task events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from loopwise.events import (
    ComplianceFinding,
    Envelope,
    Evidence,
    FiredCondition,
    ModelRef,
    ReviewTaskCreatedV1,
    RoutingDecisionV1,
    TaskSegment,
)
from loopwise.settings import KafkaSettings
from loopwise_console.api import create_app
from loopwise_console.auth import create_token
from loopwise_console.config import ConsoleSettings
from loopwise_console.store import ConsoleStore

POLICY = ModelRef(name="routing-policy", version="sha256:test")


def finding(call_id: str, segment_id: str) -> ComplianceFinding:
    """A card-data finding whose evidence is the card token in the segment."""
    return ComplianceFinding(
        finding_id=f"{call_id}/{segment_id}/card",
        rule_id="card_data.spoken",
        category="card_data",
        severity="high",
        score=0.97,
        evidence=Evidence(segment_id=segment_id, start=11, end=24, text="[CARD_NUMBER]"),
        segment_id=segment_id,
    )


def task_event(
    task_id: str,
    *,
    tenant_id: str = "acme",
    call_id: str | None = None,
    priority: str = "p2",
    kind: str = "hold",
    mode: str = "post_call",
    queue: str = "billing",
    due_in_s: float = 3600,
    rule_ids: tuple[str, ...] = ("card-hold",),
) -> ReviewTaskCreatedV1:
    """A held call with two segments (one with a card finding)."""
    call_id = call_id or f"call-{task_id}"
    now = datetime.now(UTC)
    return ReviewTaskCreatedV1(
        tenant_id=tenant_id,
        call_id=call_id,
        occurred_at=now - timedelta(seconds=30),
        producer=POLICY,
        task_id=task_id,
        scope="call",
        kind=kind,  # type: ignore[arg-type]
        mode=mode,  # type: ignore[arg-type]
        priority=priority,  # type: ignore[arg-type]
        due_at=now + timedelta(seconds=due_in_s),
        rule_ids=list(rule_ids),
        reasons=["customer read out a card number"],
        policy_version="sha256:test",
        queue=queue,
        language="en",
        segments=[
            TaskSegment(
                segment_id="seg-000",
                speaker="agent",
                start_s=0.0,
                end_s=3.5,
                text="thank you for calling how can I help",
                transcript_confidence=0.93,
                sentiment_label="neutral",
                sentiment_score=0.1,
                sentiment_confidence=0.8,
            ),
            TaskSegment(
                segment_id="seg-001",
                speaker="customer",
                start_s=4.0,
                end_s=9.0,
                text="my card is [CARD_NUMBER] and I am relly unhappy",
                transcript_confidence=0.71,
                sentiment_label="negative",
                sentiment_score=-0.6,
                sentiment_confidence=0.66,
                findings=[finding(call_id, "seg-001")],
            ),
        ],
    )


def routing_event(task: ReviewTaskCreatedV1) -> RoutingDecisionV1:
    """The routing decision that opened the task."""
    return RoutingDecisionV1(
        tenant_id=task.tenant_id,
        call_id=task.call_id,
        occurred_at=task.occurred_at,
        producer=POLICY,
        decision_id=f"rd-{task.task_id}",
        scope="call",
        outcome="hold",
        rule_id=task.rule_ids[0],
        fired=[
            FiredCondition(
                rule_id=task.rule_ids[0], condition="queue == billing", observed="billing"
            )
        ],
        policy_version=task.policy_version,
        priority=task.priority,
        sla_s=3600,
        mode=task.mode,
        task_id=task.task_id,
    )


def envelope_of(event: Any) -> Envelope:
    """A fresh envelope (a new event id) for an event."""
    return Envelope(type=event.event_type, source="test", tenant_id=event.tenant_id)


def settings_for(tmp_path: Path, **extra: Any) -> ConsoleSettings:
    """Console settings on a SQLite file in tmp_path (no Kafka needed by the API)."""
    return ConsoleSettings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        data_dir=tmp_path,
        **extra,
    )


class Kit:
    """A console app on a fresh store, with helpers."""

    task = staticmethod(task_event)
    routing = staticmethod(routing_event)

    def __init__(self, tmp_path: Path, **extra: Any) -> None:
        self.settings = settings_for(tmp_path, **extra)
        self.store = ConsoleStore(self.settings.db_url())
        self.app = create_app(self.settings, self.store)
        self.client = TestClient(self.app)

    def token(
        self,
        role: str = "reviewer",
        tenants: tuple[str, ...] = ("acme",),
        subject: str | None = None,
    ) -> dict[str, str]:
        """Authorization headers of a new token."""
        with self.store.write() as conn:
            token, _ = create_token(
                conn,
                subject=subject or f"{role}-{len(tenants)}-{id(self)}",
                role=role,
                tenants=list(tenants),  # type: ignore[arg-type]
            )
        return {"Authorization": f"Bearer {token}"}

    def add(self, *events: Any) -> None:
        """Materialise events as the Kafka consumer would."""
        self.store.materialise([(envelope_of(e), e) for e in events])

    def outbox(self, topic: str | None = None) -> list[dict[str, Any]]:
        """Outbox rows (as dicts), optionally of one topic."""
        import json

        from sqlalchemy import select

        from loopwise_console.schema import outbox

        with self.store.read() as conn:
            rows = list(conn.execute(select(outbox).order_by(outbox.c.id)))
        return [
            {**r._asdict(), "body": json.loads(r.value)}
            for r in rows
            if topic is None or r.topic == topic
        ]


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    """A console on a fresh SQLite store."""
    k = Kit(tmp_path)
    yield k
    k.client.close()
    k.store.close()


@pytest.fixture
def make_kit(tmp_path: Path) -> Iterator[Callable[..., Kit]]:
    """Factory: a console with other settings."""
    made: list[Kit] = []

    def make(**extra: Any) -> Kit:
        k = Kit(tmp_path / f"k{len(made)}", **extra)
        made.append(k)
        return k

    yield make
    for k in made:
        k.client.close()
        k.store.close()
