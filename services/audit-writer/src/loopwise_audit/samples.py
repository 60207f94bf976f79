"""Realistic audit entries in bulk, for tests and benchmarks: the example call, many times over."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from loopwise.events import AuditCheckpointV1, Envelope
from loopwise.events.examples import example_events
from loopwise.kafka import Incoming
from loopwise_audit.handler import AuditEntry, describe

_NAMESPACE = uuid.UUID("0b6a3f55-4a1e-4d1c-8e0f-5b2f0c9d7a11")


def sample_entries(count: int, tenant_id: str = "acme", calls_of: int = 16) -> Iterator[AuditEntry]:
    """`count` entries of example calls (every pipeline event type), with stable event ids."""
    start = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    made = call = 0
    while made < count:
        events = [
            e
            for e in example_events(
                call_id=f"call-{call:06d}", tenant_id=tenant_id, at=start + timedelta(minutes=call)
            )
            if not isinstance(e, AuditCheckpointV1)
        ]
        for index, event in enumerate(events):
            if made == count:
                return
            envelope = Envelope(
                type=event.event_type,
                source="loopwise-sample",
                id=str(uuid.uuid5(_NAMESPACE, f"{tenant_id}/{call}/{index}")),
                time=event.occurred_at,
                tenant_id=tenant_id,
                call_id=getattr(event, "call_id", None),
            )
            yield describe(Incoming(envelope, event, "loopwise.sample.v1", call % calls_of, made))
            made += 1
        call += 1
