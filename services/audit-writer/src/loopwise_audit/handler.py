"""From a pipeline event to the facts of its audit record: pure, no Kafka, no database.

An audit record answers PCI DSS 10.2.2 for one event: who (the service, or the
reviewer for a decision), what (event type and action), when (event time and
recording time), where (origin: source, topic, partition, offset, trace),
success or failure, and which data or resource it concerned (call, segment,
task, decision), with the model, rule pack or policy version. Free text from
transcripts, reviewer comments and notes is never copied: records hold ids,
labels, counts and the SHA-256 of the whole event.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from loopwise.events import ConsoleAuditV1, DerivedCallEvent, ReviewDecisionV1, TenantEvent
from loopwise.kafka import Incoming
from loopwise_audit.chain import sha256_hex
from loopwise_audit.descriptions import DESCRIBERS, Facts, utc_text

__all__ = ["AuditEntry", "Facts", "canonical_event", "describe", "utc_text"]

RECORD_VERSION = 1
DERIVED_FROM_LIMIT = 50
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-")


@dataclass(frozen=True)
class AuditEntry:
    """One event's audit facts, before the store gives it a place in its tenant's chain."""

    tenant_id: str
    event_id: str
    event_type: str
    call_id: str | None
    occurred_at: str
    facts: Facts


def _resource(call_id: str | None, subject: Facts) -> str:
    parts = [f"call:{call_id}"] if call_id else []
    for name in ("segment_id", "task_id", "decision_id", "outcome_id"):
        value = subject.get(name)
        if isinstance(value, str):
            parts.append(f"{name.removesuffix('_id')}:{value}")
    return "/".join(parts) or "tenant"


def describe(incoming: Incoming) -> AuditEntry:
    """The audit facts of one consumed event."""
    event, envelope = incoming.event, incoming.envelope
    describer = DESCRIBERS.get(type(event))
    if describer is None:
        raise TypeError(f"no audit description for {event.event_type}")
    action, outcome, result, subject, details = describer(event)
    call_id: str | None = getattr(event, "call_id", None)
    if isinstance(event, ReviewDecisionV1):
        actor = {"type": "user", "id": event.reviewer_id}
    elif isinstance(event, ConsoleAuditV1):
        call_id = event.task_call_id
        actor = {"type": "user", "id": event.actor_id or "unauthenticated"}
    else:
        actor = {"type": "service", "id": envelope.source}
    producer = policy_version = None
    derived: list[str] = []
    if isinstance(event, DerivedCallEvent):
        producer = {"name": event.producer.name, "version": event.producer.version}
        derived = event.derived_from
    policy_version = getattr(event, "policy_version", None)
    trace = _TRACEPARENT.match(envelope.traceparent or "")
    occurred_at = utc_text(event.occurred_at)
    facts: Facts = {
        "v": RECORD_VERSION,
        "tenant_id": event.tenant_id,
        "event_id": envelope.id,
        "event_type": event.event_type,
        "action": action,
        "actor": actor,
        "via": envelope.source,
        "occurred_at": occurred_at,
        "event_time": utc_text(envelope.time),
        "origin": {
            "source": envelope.source,
            "topic": incoming.topic,
            "partition": incoming.partition,
            "offset": incoming.offset,
            "trace_id": trace.group(1) if trace else None,
        },
        "outcome": outcome,
        "result": result,
        "call_id": call_id,
        "subject": {k: v for k, v in subject.items() if v not in (None, [])},
        "resource": _resource(call_id, subject),
        "producer": producer,
        "policy_version": policy_version,
        "derived_from": derived[:DERIVED_FROM_LIMIT],
        "derived_from_count": len(derived),
        "details": details,
        "event_sha256": sha256_hex(canonical_event(event).encode("utf-8")),
    }
    return AuditEntry(
        tenant_id=event.tenant_id,
        event_id=envelope.id,
        event_type=event.event_type,
        call_id=call_id,
        occurred_at=occurred_at,
        facts=facts,
    )


def canonical_event(event: TenantEvent) -> str:
    """The event's JSON with sorted keys: what `event_sha256` hashes (floats as JSON numbers)."""
    return json.dumps(
        event.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
