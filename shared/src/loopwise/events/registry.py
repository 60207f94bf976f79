"""Every event type of the contract, and the codec between models and Kafka messages."""

from __future__ import annotations

import base64
import functools
import uuid
from collections.abc import Mapping
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

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


class MissingValue(ContractViolation):
    """The message has no value (a null value, e.g. a tombstone)."""


class HeaderMismatch(ContractViolation):
    """The envelope headers name another tenant or call than the event's body."""


UNKNOWN_FIELD = "<unknown field>"
"""Stands in a reason for a field name the model does not know (the sender's, so payload)."""

DICT_KEY = "<key>"
"""Stands in a reason for a key of a free-form mapping (also the sender's)."""

# Error types whose pydantic message quotes the input; their reasons give the type only.
_MESSAGE_QUOTES_INPUT = frozenset(
    {"union_tag_invalid", "get_attribute_error", "uuid_parsing", "url_parsing", "custom_error"}
)


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional (X | None) around a type."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
            continue
        if origin in (Union, UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp


def _safe_loc(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> tuple[str, int]:
    """An error location in the model's own field names; the sender's names are replaced.

    Returns the location and how many of its parts were unknown field names.
    """
    parts: list[str] = []
    unknown = 0
    current: Any = model
    for part in loc:
        current = _unwrap(current) if current is not None else None
        origin = get_origin(current)
        if isinstance(part, int):
            parts.append(str(part))
            args = get_args(current)
            current = _unwrap(args[0]) if origin in (list, tuple, set) and args else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                parts.append(UNKNOWN_FIELD)
                unknown += 1
                current = None
            else:
                parts.append(part)
                current = field.annotation
        elif origin is dict:
            if part == "[key]":
                parts.append(part)
            else:
                parts.append(DICT_KEY)
                args = get_args(current)
                current = args[1] if len(args) == 2 else None
        elif origin in (Union, UnionType):
            # pydantic names the union member it tried: keep it only if it is one of ours
            names = {getattr(a, "__name__", None): a for a in get_args(current)}
            if part in names:
                parts.append(part)
                current = names[part]
            else:
                current = None
        else:
            parts.append(UNKNOWN_FIELD)
            unknown += 1
            current = None
    return ".".join(parts) or "<root>", unknown


@functools.lru_cache(maxsize=256)
def _model_named(title: str) -> type[BaseModel] | None:
    pending: list[type[BaseModel]] = [ContractModel]
    while pending:
        cls = pending.pop()
        if cls.__name__ == title:
            return cls
        pending.extend(cls.__subclasses__())
    return None


def validation_reason(
    exc: ValidationError, limit: int = 5, model: type[BaseModel] | None = None
) -> str:
    """Summarise a pydantic error without echoing the input: no values, no sender field names.

    Each error reads `location: message [type]`, the location in the model's own field
    names; a field the model does not know reads `<unknown field>` and is counted, a key
    of a free-form mapping reads `<key>`.
    """
    model = model or _model_named(exc.title)
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    parts = []
    unknown_total = 0
    for index, err in enumerate(errors):
        loc, unknown = _safe_loc(model, tuple(err["loc"]))
        unknown_total += unknown
        if index >= limit:
            continue
        kind = err["type"]
        message = "" if kind in _MESSAGE_QUOTES_INPUT else str(err["msg"])[:200]
        parts.append(f"{loc}: {message} [{kind}]" if message else f"{loc}: [{kind}]")
    more = len(errors) - limit
    if more > 0:
        parts.append(f"and {more} more")
    if unknown_total:
        parts.append(f"{unknown_total} unknown field(s)")
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
    accepted: Mapping[str, type[TenantEvent]] | None = None,
) -> tuple[Envelope, TenantEvent]:
    """Decode and validate one Kafka message into its envelope and event.

    Raises EnvelopeError, UnknownEventType, UnicodeDecodeError or ContractViolation.
    """
    envelope = Envelope.from_headers(headers)
    types = accepted if accepted is not None else EVENT_TYPES
    model = types.get(envelope.type)
    if model is None:
        known = envelope.type in EVENT_TYPES or envelope.type == DeadLetterV1.event_type
        # A type of the contract is named; any other string is the sender's and is not.
        named = f"event type {envelope.type}" if known else "an event type outside the contract"
        raise UnknownEventType(f"{named} is not accepted here")
    if value is None:
        raise MissingValue("message has no value")
    text = bytes(value).decode("utf-8")  # strict: invalid UTF-8 raises UnicodeDecodeError
    try:
        event = model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        kind = InvalidJson if exc.errors()[0]["type"] == "json_invalid" else ContractViolation
        raise kind(f"{model.__name__}: {validation_reason(exc, model=model)}") from None
    _check_headers_agree(envelope, event)
    return envelope, event


def _check_headers_agree(envelope: Envelope, event: TenantEvent) -> None:
    if envelope.tenant_id is not None and envelope.tenant_id != event.tenant_id:
        raise HeaderMismatch("tenant_id header differs from the event's tenant_id")
    call_id = getattr(event, "call_id", None)
    if envelope.call_id is not None and envelope.call_id != call_id:
        if call_id is None:
            raise HeaderMismatch("call_id header on an event that has no call_id")
        raise HeaderMismatch("call_id header differs from the event's call_id")


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
    "UNKNOWN_FIELD",
    "ContractViolation",
    "EnvelopeError",
    "HeaderMismatch",
    "InvalidJson",
    "MissingValue",
    "UnknownEventType",
    "decode",
    "encode",
    "validation_reason",
]
