"""Dead letters: the original message's coordinates and a readable reason, in headers and value."""

from __future__ import annotations

import base64
from collections.abc import Callable

from loopwise.events.audit import DeadLetterV1
from loopwise.events.envelope import Envelope, Headers, new_traceparent
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

PayloadFilter = Callable[[bytes], bytes | None]
"""Decides what of a failed message's value may be kept (None keeps nothing)."""


def _header_text(headers: Headers | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, raw in headers or []:
        if raw is None or name.startswith("dlq_"):
            continue
        out[name] = raw.decode("utf-8", errors="replace")[:1000]
    return out


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
) -> tuple[bytes, Headers]:
    """Build the value and headers of a dead letter for one failed message."""
    original = _header_text(headers)
    raw = value or b""
    kept = payload_filter(raw) if payload_filter else raw
    record = DeadLetterV1(
        service=service,
        stage=stage,
        error_class=error_class,
        reason=reason[:4000],
        original_topic=topic,
        original_partition=partition,
        original_offset=offset,
        original_headers=original,
        payload_b64=base64.b64encode(kept).decode("ascii") if kept is not None else None,
        payload_bytes=len(raw),
        tenant_id=original.get("tenant_id"),
        call_id=original.get("call_id"),
    )
    envelope = Envelope(
        type=DeadLetterV1.event_type,
        source=service,
        tenant_id=record.tenant_id,
        call_id=record.call_id,
        traceparent=new_traceparent(original.get("traceparent")),
    )
    extra: Headers = [
        ("dlq_original_topic", topic.encode()),
        ("dlq_original_partition", str(partition).encode()),
        ("dlq_original_offset", str(offset).encode()),
        ("dlq_service", service.encode()),
        ("dlq_stage", stage.encode()),
        ("dlq_error_class", error_class.encode()),
        ("dlq_reason", reason[:1000].encode("utf-8", errors="replace")),
    ]
    return record.model_dump_json().encode(), envelope.to_headers() + extra


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
    """Count and log a rejected input and return the dead letter to produce for it."""
    EVENTS_CONSUMED.labels(service, topic, "dead_lettered").inc()
    EVENTS_DEAD_LETTERED.labels(service, rejection.stage, rejection.error_class).inc()
    log.warning(
        "dead_lettered",
        stage=rejection.stage,
        error_class=rejection.error_class,
        reason=rejection.reason,
        topic=topic,
        partition=partition,
        offset=offset,
    )
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
    )
    return OutRecord(dead_letter_topic, key, dlq_value, dlq_headers)
