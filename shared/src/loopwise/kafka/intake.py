"""Admitting a consumed message (size, envelope, type, UTF-8, JSON, schema) and encoding outputs.

Used by the confluent-kafka worker (`loopwise.kafka.worker`), so every service classifies
bad input the same way and derives the same output ids.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from loopwise.events import (
    ContractViolation,
    Envelope,
    EnvelopeError,
    HeaderMismatch,
    InvalidJson,
    MissingValue,
    TenantEvent,
    UnknownEventType,
    decode,
    encode,
)
from loopwise.events.envelope import Headers

# Output event ids are uuid5(namespace, input id / service / index): stable across redeliveries.
OUTPUT_ID_NAMESPACE = uuid.UUID("6f1c1d2e-8a53-4d0c-9a57-4c0f6b1e2a90")


@dataclass(frozen=True)
class Incoming:
    """A decoded, validated input event and where it came from."""

    envelope: Envelope
    event: TenantEvent
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Emit:
    """An output event for a topic; its id is derived from the input's unless given."""

    topic: str
    event: TenantEvent
    event_id: str | None = None
    supersedes: str | None = None
    """A result that replaces the last one of the same name (a call's latest compliance
    result, say): of several with one name in a worker batch, only the last is produced,
    as the others would be stale before a consumer read them."""


class RetryBatch(Exception):
    """Raised by a handler when its own infrastructure failed, not the input (a full disk,
    a locked or unreachable database): the worker sends nothing of the batch, rewinds it
    and runs it again after its backoff, instead of dead-lettering a valid event. Every
    other exception of a handler dead-letters the event being handled."""


@dataclass(frozen=True)
class DeadLetterRequest:
    """An earlier input a stateful handler gives up on later (it held it in memory).

    The worker dead-letters it with that input's own topic, partition and offset, not
    those of the message being handled when the handler gave up on it.
    """

    incoming: Incoming
    error_class: str
    reason: str
    stage: str = "handle"


@dataclass(frozen=True)
class Rejection:
    """Why a message cannot be processed: the stage, an error class and a readable reason."""

    stage: str
    error_class: str
    reason: str


@dataclass(frozen=True)
class OutRecord:
    """An encoded Kafka record ready to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    partition: int | None = None
    """A fixed partition (changelog records follow their input's); None: by key (murmur2)."""
    supersedes: str | None = None
    """See `Emit.supersedes`."""


MAX_HEADER_BYTES = 65_536
"""Headers larger than this in total (names and values) are rejected as oversize."""

MAX_HEADERS = 100
"""More headers than this are rejected as oversize."""


class _NoKey:
    """Marks that the caller did not pass the message key (so it is not checked)."""


NO_KEY = _NoKey()


def admit(
    value: bytes | None,
    headers: Headers | None,
    accepted: Mapping[str, type[TenantEvent]],
    max_bytes: int,
    *,
    key: bytes | _NoKey | None = NO_KEY,
) -> tuple[Envelope, TenantEvent] | Rejection:
    """Decode and validate one message, or say why it is rejected; never raises.

    Reasons name the stage, the header or the model's own field and the rule broken,
    never a value or a field name the sender chose (both are payload). Where the
    message `key` is passed, it must be the event's key (its call id): a call keyed
    otherwise would land in another partition than the rest of the call
    (``KeyMismatch``).
    """
    try:
        admitted = _admit(value, headers, accepted, max_bytes)
        if isinstance(admitted, Rejection) or isinstance(key, _NoKey):
            return admitted
        if key is None or bytes(key) != admitted[1].kafka_key().encode():
            named = "null" if key is None else f"{len(key)} bytes"
            return Rejection(
                "validate",
                "KeyMismatch",
                f"message key ({named}) is not the event's {admitted[1].key_field}",
            )
        return admitted
    except Exception as exc:  # noqa: BLE001 - whatever arrives is rejected, never raised
        reason = f"message could not be decoded ({type(exc).__name__})"
        return Rejection("decode", "Undecodable", reason)


def _admit(
    value: bytes | None,
    headers: Headers | None,
    accepted: Mapping[str, type[TenantEvent]],
    max_bytes: int,
) -> tuple[Envelope, TenantEvent] | Rejection:
    size = len(value) if value is not None else 0
    if size > max_bytes:
        return Rejection(
            "decode", "OversizeMessage", f"value is {size} bytes, limit is {max_bytes}"
        )
    header_list = list(headers or [])
    if len(header_list) > MAX_HEADERS:
        return Rejection(
            "decode", "OversizeHeaders", f"{len(header_list)} headers, limit is {MAX_HEADERS}"
        )
    header_bytes = sum(len(n) + (len(v) if v is not None else 0) for n, v in header_list)
    if header_bytes > MAX_HEADER_BYTES:
        return Rejection(
            "decode",
            "OversizeHeaders",
            f"headers are {header_bytes} bytes, limit is {MAX_HEADER_BYTES}",
        )
    try:
        return decode(value, header_list, accepted)
    except EnvelopeError as exc:
        return Rejection("decode", "EnvelopeError", str(exc))
    except UnknownEventType as exc:
        return Rejection("decode", "UnknownEventType", str(exc))
    except UnicodeDecodeError as exc:
        return Rejection("decode", "InvalidUtf8", f"value is not UTF-8 (byte {exc.start})")
    except InvalidJson as exc:
        return Rejection("decode", "InvalidJson", str(exc))
    except MissingValue as exc:
        return Rejection("decode", "MissingValue", str(exc))
    except HeaderMismatch as exc:
        return Rejection("validate", "HeaderMismatch", str(exc))
    except ContractViolation as exc:
        return Rejection("validate", "SchemaViolation", str(exc))


_NAMESPACE_BYTES = OUTPUT_ID_NAMESPACE.bytes


def output_id(parent_id: str, service: str, index: int) -> str:
    """The event id of a service's index-th output for an input: the same on every redelivery.

    `uuid.uuid5(OUTPUT_ID_NAMESPACE, "<parent>/<service>/<index>")`, computed straight from
    its SHA-1 (RFC 9562 section 5.5) without building UUID objects: every output of every
    service pays for it, and the objects cost twice the hash.
    """
    digest = bytearray(
        hashlib.sha1(
            _NAMESPACE_BYTES + f"{parent_id}/{service}/{index}".encode(), usedforsecurity=False
        ).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def encode_output(emit: Emit, parent: Envelope | None, service: str, index: int) -> OutRecord:
    """Encode a handler's output with a traceparent child of its input and a derived id.

    An output caused by time alone has no parent: it must carry its own stable id.
    """
    if parent is None and emit.event_id is None:
        raise ValueError("an output without a parent input needs an explicit event_id")
    event_id = emit.event_id or output_id(parent.id if parent else "", service, index)
    key, value, headers, _ = encode(emit.event, source=service, parent=parent, event_id=event_id)
    supersedes = None if emit.supersedes is None else f"{emit.topic}\x00{emit.supersedes}"
    return OutRecord(emit.topic, key, value, headers, supersedes=supersedes)
