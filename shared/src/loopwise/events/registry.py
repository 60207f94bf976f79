"""Every event type of the contract, and the codec between models and Kafka messages."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from pydantic import ValidationError

from loopwise.events.audit import AuditCheckpointV1, DeadLetterV1
from loopwise.events.base import ContractModel, TenantEvent
from loopwise.events.calls import (
    AudioChunkV1,
    CallEndedV1,
    CallMetadataV1,
    CallStartedV1,
    ExternalTranscriptSegmentV1,
)
from loopwise.events.envelope import Envelope, EnvelopeError, Headers, new_traceparent
from loopwise.events.review import (
    ConsoleAuditV1,
    ReleasedOutcomeV1,
    ReviewDecisionV1,
    ReviewTaskCreatedV1,
    ReviewTaskEscalatedV1,
    ReviewTaskExpiredV1,
    RoutingDecisionV1,
)
from loopwise.events.scores import (
    CallComplianceV1,
    CallSentimentV1,
    SegmentComplianceV1,
    SegmentSentimentV1,
)
from loopwise.events.transcripts import TranscriptSegmentV1

EVENT_MODELS: tuple[type[TenantEvent], ...] = (
    CallStartedV1,
    CallEndedV1,
    CallMetadataV1,
    AudioChunkV1,
    ExternalTranscriptSegmentV1,
    TranscriptSegmentV1,
    SegmentSentimentV1,
    CallSentimentV1,
    SegmentComplianceV1,
    CallComplianceV1,
    RoutingDecisionV1,
    ReviewTaskCreatedV1,
    ReviewTaskEscalatedV1,
    ReviewTaskExpiredV1,
    ReviewDecisionV1,
    ReleasedOutcomeV1,
    ConsoleAuditV1,
    AuditCheckpointV1,
)
"""Events that travel with a CloudEvents envelope, in pipeline order."""

ALL_MODELS: tuple[type[ContractModel], ...] = (*EVENT_MODELS, DeadLetterV1)
"""Every top-level model with a JSON Schema, dead letters included."""

EVENT_TYPES: dict[str, type[TenantEvent]] = {m.event_type: m for m in EVENT_MODELS}


class UnknownEventType(ValueError):
    """The ce_type header names no event of the contract (or none this consumer accepts)."""


class ContractViolation(ValueError):
    """The value breaks the event's schema or disagrees with its headers."""


class InvalidJson(ContractViolation):
    """The value is not a JSON document."""


def validation_reason(exc: ValidationError, limit: int = 5) -> str:
    """Summarise a pydantic error without echoing input values (they may hold PII)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def encode(
    event: TenantEvent, *, source: str, parent: Envelope | None = None, event_id: str | None = None
) -> tuple[bytes, bytes, Headers, Envelope]:
    """Return key, value, headers and envelope for producing `event`."""
    envelope = Envelope(
        type=event.event_type,
        source=source,
        id=event_id or str(uuid.uuid4()),
        tenant_id=event.tenant_id,
        call_id=getattr(event, "call_id", None),
        traceparent=new_traceparent(parent.traceparent if parent else None),
    )
    value = event.model_dump_json(exclude_none=False).encode("utf-8")
    return event.kafka_key().encode("utf-8"), value, envelope.to_headers(), envelope


def decode(
    value: bytes | None,
    headers: Headers | None,
    accepted: dict[str, type[TenantEvent]] | None = None,
) -> tuple[Envelope, TenantEvent]:
    """Decode and validate one Kafka message into its envelope and event.

    Raises EnvelopeError, UnknownEventType, UnicodeDecodeError or ContractViolation.
    """
    envelope = Envelope.from_headers(headers)
    types = accepted if accepted is not None else EVENT_TYPES
    model = types.get(envelope.type)
    if model is None:
        raise UnknownEventType(f"event type {envelope.type!r} is not accepted here")
    if value is None:
        raise ContractViolation("message has no value")
    text = value.decode("utf-8")  # strict: invalid UTF-8 raises UnicodeDecodeError
    try:
        event = model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        kind = InvalidJson if exc.errors()[0]["type"] == "json_invalid" else ContractViolation
        raise kind(f"{model.__name__}: {validation_reason(exc)}") from None
    _check_headers_agree(envelope, event)
    return envelope, event


def _check_headers_agree(envelope: Envelope, event: TenantEvent) -> None:
    if envelope.tenant_id is not None and envelope.tenant_id != event.tenant_id:
        raise ContractViolation("tenant_id header differs from the event's tenant_id")
    call_id = getattr(event, "call_id", None)
    if envelope.call_id is not None and call_id is not None and envelope.call_id != call_id:
        raise ContractViolation("call_id header differs from the event's call_id")


def to_jsonable(event: ContractModel) -> dict[str, Any]:
    """Return the event as plain JSON-compatible data."""
    return event.model_dump(mode="json")


def b64(data: bytes) -> str:
    """Base64-encode bytes to text."""
    return base64.b64encode(data).decode("ascii")


__all__ = [
    "ALL_MODELS",
    "EVENT_MODELS",
    "EVENT_TYPES",
    "ContractViolation",
    "EnvelopeError",
    "InvalidJson",
    "UnknownEventType",
    "decode",
    "encode",
    "validation_reason",
]
