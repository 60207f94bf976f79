"""Dead letters: the original message's coordinates and a readable reason, in headers and value.

Building a dead letter never fails, whatever arrived: ids, headers and reasons that
break the record's limits are shortened (a prefix and a SHA-256 of the whole, with
the original length noted in ``original_lengths``), the kept payload is cut so the
whole record stays under ``MAX_DEAD_LETTER_BYTES``, and if building the record fails
all the same a last-resort record with the coordinates is produced instead
(``fallback: true``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from loopwise.events.audit import DeadLetterV1
from loopwise.events.base import IDENTIFIER_PATTERN
from loopwise.events.envelope import Envelope, Headers, new_traceparent
from loopwise.events.registry import validation_reason
from loopwise.kafka.intake import OutRecord, Rejection
from loopwise.logging import get_logger
from loopwise.metrics import EVENTS_CONSUMED, EVENTS_DEAD_LETTERED

log = get_logger(__name__)

DLQ_HEADERS = (
    "dlq_original_topic",
    "dlq_original_partition",
    "dlq_original_offset",
    "dlq_service",
    "dlq_stage",
    "dlq_error_class",
    "dlq_reason",
)

MAX_DEAD_LETTER_BYTES = 524_288
"""Most bytes of a dead letter (value, headers and key together): half of Kafka's default
message size limit (1 MiB on the broker, 1,000,000 bytes in librdkafka's producer)."""

MAX_KEY_BYTES = 1024
"""A longer original key is replaced by its SHA-256 (hex) as the dead letter's key."""

HEADER_NAME_CHARS = 128
HEADER_VALUE_CHARS = 1000
HEADERS_TOTAL_CHARS = 32_000
HEADERS_KEPT = 64
REASON_CHARS = 4000
REASON_HEADER_CHARS = 1000

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)

PayloadFilter = Callable[[bytes], bytes | None]
"""Decides what of a failed message's value may be kept (None keeps nothing)."""


def shorten(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters, else a prefix and a hash of the whole.

    The same text always gives the same result, so shortened ids still group and join.
    """
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]
    suffix = f"...sha256:{digest}"
    return text[: max(0, limit - len(suffix))] + suffix[: max(0, limit)]


def exception_reason(exc: BaseException) -> str:
    """A dead-letter reason for an exception that does not echo input values.

    pydantic's own text quotes the input (``input_value=...``) and the sender's field
    names; for its errors the reason names the model's own fields and the rules broken.
    """
    if isinstance(exc, ValidationError):
        return f"{exc.title}: {validation_reason(exc)}"
    return str(exc)[:500] or type(exc).__name__


def _text(raw: object) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw).decode("utf-8", errors="replace")
    return f"<{type(raw).__name__}>"


def _header_text(headers: Headers | None, lengths: dict[str, int]) -> dict[str, str]:
    """The original headers as text, bounded in count, name and value length."""
    out: dict[str, str] = {}
    budget = HEADERS_TOTAL_CHARS
    seen = 0
    dropped = 0
    for name, raw in headers or []:
        if raw is None or not isinstance(name, str) or name.startswith("dlq_"):
            continue
        seen += 1
        if len(out) >= HEADERS_KEPT:
            dropped += 1
            continue
        key = shorten(name, HEADER_NAME_CHARS)
        value = _text(raw)
        limit = min(HEADER_VALUE_CHARS, budget)
        if len(value) > limit:
            lengths[f"header:{key}"] = len(value)
            value = shorten(value, limit) if limit >= 32 else ""
        budget -= len(value)
        out[key] = value
    if dropped:
        lengths["headers"] = seen
    return out


def _header(headers: Headers | None, name: str) -> str | None:
    found = None
    for n, raw in headers or []:
        if n == name and raw is not None:
            found = _text(raw)
    return found


def _bounded_id(name: str, value: str | None, lengths: dict[str, int]) -> str | None:
    if value is None:
        return None
    if len(value) > 128:
        lengths[name] = len(value)
    return shorten(value, 128)


def _key(key: bytes | None) -> bytes | None:
    """The dead letter's key: the original, or its SHA-256 where it is oversize."""
    if key is None or len(key) <= MAX_KEY_BYTES:
        return key
    return hashlib.sha256(key).hexdigest().encode()


def _dlq_headers(
    service: str, stage: str, error_class: str, reason: str, topic: str, partition: int, offset: int
) -> Headers:
    return [
        ("dlq_original_topic", topic.encode("utf-8", errors="replace")),
        ("dlq_original_partition", str(partition).encode()),
        ("dlq_original_offset", str(offset).encode()),
        ("dlq_service", service.encode("utf-8", errors="replace")),
        ("dlq_stage", stage.encode("utf-8", errors="replace")),
        ("dlq_error_class", error_class.encode("utf-8", errors="replace")),
        ("dlq_reason", shorten(reason, REASON_HEADER_CHARS).encode("utf-8", errors="replace")),
    ]


def _headers_size(headers: Headers) -> int:
    return sum(len(n) + len(v) for n, v in headers)


def dead_letter(
    *,
    service: str,
    stage: str,
    error_class: str,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    value: bytes | None,
    headers: Headers | None,
    payload_filter: PayloadFilter | None = None,
    key: bytes | None = None,
    max_bytes: int = MAX_DEAD_LETTER_BYTES,
) -> tuple[bytes, Headers]:
    """Build the value and headers of a dead letter for one failed message; never raises."""
    try:
        return _dead_letter(
            service=service,
            stage=stage,
            error_class=error_class,
            reason=reason,
            topic=topic,
            partition=partition,
            offset=offset,
            value=value,
            headers=headers,
            payload_filter=payload_filter,
            key=key,
            max_bytes=max_bytes,
        )
    except Exception as exc:  # noqa: BLE001 - the dead-letter path must not fail
        return fallback_dead_letter(
            service=service,
            stage=stage,
            error_class=error_class,
            topic=topic,
            partition=partition,
            offset=offset,
            value=value,
            failure=type(exc).__name__,
        )


def _dead_letter(
    *,
    service: str,
    stage: str,
    error_class: str,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    value: bytes | None,
    headers: Headers | None,
    payload_filter: PayloadFilter | None,
    key: bytes | None,
    max_bytes: int,
) -> tuple[bytes, Headers]:
    lengths: dict[str, int] = {}
    original = _header_text(headers, lengths)
    raw = bytes(value) if value is not None else b""
    kept = payload_filter(raw) if payload_filter else raw
    if len(reason) > REASON_CHARS:
        lengths["reason"] = len(reason)
    if key is not None and len(key) > MAX_KEY_BYTES:
        lengths["key"] = len(key)
    tenant_raw, call_raw = _header(headers, "tenant_id"), _header(headers, "call_id")
    fields: dict[str, Any] = {
        "service": shorten(service, 64),
        "stage": shorten(stage, 32),
        "error_class": shorten(error_class, 128),
        "reason": shorten(reason, REASON_CHARS),
        "original_topic": shorten(topic, 249),
        "original_partition": partition,
        "original_offset": offset,
        "original_headers": original,
        "payload_b64": None,
        "payload_bytes": len(raw),
        "tenant_id": _bounded_id("tenant_id", tenant_raw, lengths),
        "call_id": _bounded_id("call_id", call_raw, lengths),
        "original_lengths": lengths,
    }
    # Only well-formed ids travel in the dead letter's envelope headers.
    envelope = Envelope(
        type=DeadLetterV1.event_type,
        source=fields["service"],
        tenant_id=tenant_raw if tenant_raw and _IDENTIFIER.match(tenant_raw) else None,
        call_id=call_raw if call_raw and _IDENTIFIER.match(call_raw) else None,
        traceparent=new_traceparent(_header(headers, "traceparent")),
    )
    out_headers = envelope.to_headers() + _dlq_headers(
        fields["service"],
        fields["stage"],
        fields["error_class"],
        reason,
        fields["original_topic"],
        partition,
        offset,
    )
    fixed = _headers_size(out_headers) + min(len(key or b""), MAX_KEY_BYTES)
    body = DeadLetterV1(**fields).model_dump_json().encode()
    if kept is not None:
        # Keep as much of the payload as the size budget allows (base64: 4 chars per 3 bytes).
        room = max_bytes - fixed - len(body) - 64
        take = max(0, room) // 4 * 3
        if take < len(kept):
            fields["payload_truncated"] = True
        fields["payload_b64"] = base64.b64encode(kept[:take]).decode("ascii")
        body = DeadLetterV1(**fields).model_dump_json().encode()
    if len(body) + fixed > max_bytes:
        raise ValueError(f"dead letter is {len(body) + fixed} bytes, limit {max_bytes}")
    return body, out_headers


def fallback_dead_letter(
    *,
    service: str,
    stage: str,
    error_class: str,
    topic: str,
    partition: int,
    offset: int,
    value: bytes | None,
    failure: str,
) -> tuple[bytes, Headers]:
    """The last-resort dead letter: coordinates, stage and error class, nothing of the message."""
    svc = shorten(_text(service), 64)
    stg = shorten(_text(stage), 32)
    cls = shorten(_text(error_class), 128)
    tpc = shorten(_text(topic), 249)
    part = partition if isinstance(partition, int) and partition >= 0 else 0
    off = offset if isinstance(offset, int) and offset >= 0 else 0
    size = len(value) if isinstance(value, bytes | bytearray | memoryview) else 0
    reason = f"the full dead letter could not be built ({shorten(_text(failure), 128)})"
    try:
        body = (
            DeadLetterV1(
                service=svc,
                stage=stg,
                error_class=cls,
                reason=reason,
                original_topic=tpc,
                original_partition=part,
                original_offset=off,
                payload_bytes=size,
                fallback=True,
            )
            .model_dump_json()
            .encode()
        )
    except Exception:  # noqa: BLE001 - last resort: plain JSON of plain values
        body = json.dumps(
            {
                "service": svc,
                "stage": stg,
                "error_class": cls,
                "reason": reason,
                "original_topic": tpc,
                "original_partition": part,
                "original_offset": off,
                "original_headers": {},
                "payload_b64": None,
                "payload_bytes": size,
                "tenant_id": None,
                "call_id": None,
                "payload_truncated": False,
                "original_lengths": {},
                "fallback": True,
            }
        ).encode()
    envelope = Envelope(type=DeadLetterV1.event_type, source=svc, traceparent=new_traceparent())
    return body, envelope.to_headers() + _dlq_headers(svc, stg, cls, reason, tpc, part, off)


def dead_letter_record(
    *,
    service: str,
    dead_letter_topic: str,
    rejection: Rejection,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
    payload_filter: PayloadFilter | None = None,
) -> OutRecord:
    """Count and log a rejected input and return the dead letter to produce for it.

    Never raises. The reason is logged as given: it must not carry message content
    (admit's reasons do not; use `exception_reason` for a handler's exception).
    """
    try:
        EVENTS_CONSUMED.labels(service, topic, "dead_lettered").inc()
        EVENTS_DEAD_LETTERED.labels(service, rejection.stage, rejection.error_class).inc()
        log.warning(
            "dead_lettered",
            stage=rejection.stage,
            error_class=rejection.error_class,
            reason=shorten(rejection.reason, REASON_HEADER_CHARS),
            topic=topic,
            partition=partition,
            offset=offset,
        )
    except Exception:  # noqa: BLE001, S110 - counting and logging must not stop the dead letter
        pass
    dlq_value, dlq_headers = dead_letter(
        service=service,
        stage=rejection.stage,
        error_class=rejection.error_class,
        reason=rejection.reason,
        topic=topic,
        partition=partition,
        offset=offset,
        value=value,
        headers=headers,
        payload_filter=payload_filter,
        key=key,
    )
    return OutRecord(dead_letter_topic, _key(key), dlq_value, dlq_headers)
