"""Malformed Kafka records of every kind a Loopwise service must dead-letter.

`malformed_records(template)` returns one `Malformed` per kind of bad input: oversize
ids and headers, invalid UTF-8 in the value and in envelope headers, binary junk,
headers that disagree with the body (call id, tenant id, event type), values near
and over the size limit, missing and duplicate headers, a null value, JSON that is
not an object, too deeply nested or not JSON at all, a field the model does not
know, wrong types, and (for transcript segments) an end before the start. Each says
which ``dlq_error_class`` and ``dlq_stage`` the shared intake gives it, so a test can
mix the records into valid traffic on any topic whose consumer accepts the
template's event type, and check that every one lands in the dead-letter topic with
a reason while the valid events flow::

    bad = malformed_records(valid_event, prefix="chaos")
    offsets = produce_malformed(bootstrap, topic, bad)   # [(partition, offset), ...]
    # then: every (topic, partition, offset) has a dead letter of bad[i].error_class

Records are keyed like the template (by call id) unless the kind is about the key.
Call ids of the records are ``{prefix}-{name}`` where the kind keeps them valid, so
their dead letters can also be told apart by ``call_id``. ``SENDER_SECRET`` is a
field name only the sender knows: no dead-letter reason or log line may contain it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from confluent_kafka import Producer

from loopwise.events import CallEndedV1, TenantEvent, encode
from loopwise.events.envelope import Headers

SENDER_SECRET = "extra_XYZ_sender_secret"
"""A field name only the sender knows; reasons and logs must never repeat it."""

UNKNOWN_TYPE = "com.example.not-loopwise.v1"


@dataclass(frozen=True)
class Malformed:
    """One malformed record and how the shared intake must classify it."""

    name: str
    """Kind of bad input, e.g. ``oversize-call-id``."""
    key: bytes | None
    value: bytes | None
    headers: Headers
    error_class: str
    """Expected ``dlq_error_class`` of its dead letter."""
    stage: str
    """Expected ``dlq_stage`` of its dead letter."""


def _set(headers: Headers, name: str, value: bytes | None) -> Headers:
    """Headers with `name` replaced by `value` (dropped if None)."""
    out = [(n, v) for n, v in headers if n != name]
    return out if value is None else [*out, (name, value)]


def _with_call(template: TenantEvent, call_id: str, **changes: Any) -> TenantEvent:
    return template.model_copy(update={"call_id": call_id, **changes})


def malformed_records(
    template: TenantEvent,
    *,
    prefix: str = "bad",
    max_message_bytes: int = 1_048_576,
    topic_max_bytes: int = 1_048_588,
    source: str = "malformed",
    check_key: bool = False,
) -> list[Malformed]:
    """Every kind of malformed record, derived from a valid call event `template`.

    `max_message_bytes` is the consuming service's value limit (``max_message_bytes``
    in its settings): one record sits just under it (a schema violation whose dead
    letter must cut the kept payload), one just over it (``OversizeMessage``), the
    latter only where it still fits the topic's ``max.message.bytes``
    (`topic_max_bytes`; Kafka's default is 1,048,588). Produce them with a producer
    whose ``message.max.bytes`` allows that size (`produce_malformed` does).
    `check_key` adds a record keyed by another call (``KeyMismatch``): only for a
    consumer that passes the message key to ``admit(..., key=...)``.
    """
    if not hasattr(template, "call_id"):
        raise ValueError("the template must be a call event (it needs a call_id)")

    def call(name: str) -> str:
        return f"{prefix}-{name}"[:128]

    def encoded(name: str, event: TenantEvent | None = None) -> tuple[bytes, bytes, Headers]:
        key, value, headers, _ = encode(event or _with_call(template, call(name)), source=source)
        return key, value, headers

    def body(name: str, **changes: Any) -> dict[str, Any]:
        _, value, _ = encoded(name)
        out = json.loads(value)
        out.update(changes)
        return cast(dict[str, Any], out)

    def dumps(data: object) -> bytes:
        return json.dumps(data).encode()

    records: list[Malformed] = []

    def add(
        name: str, key: bytes | None, value: bytes | None, headers: Headers, cls: str, stage: str
    ) -> None:
        records.append(Malformed(name, key, value, headers, cls, stage))

    # -- ids that break the model's limits -----------------------------------------------
    long_call = "c" * 200
    k, v, h = encoded("oversize-call-id")
    add(
        "oversize-call-id",
        long_call.encode(),
        dumps({**json.loads(v), "call_id": long_call}),
        _set(h, "call_id", long_call.encode()),
        "EnvelopeError",
        "decode",
    )
    add(
        "oversize-call-id-body-only",
        long_call.encode(),
        dumps({**json.loads(v), "call_id": long_call}),
        _set(_set(h, "call_id", None), "tenant_id", None),
        "SchemaViolation",
        "validate",
    )
    long_tenant = "t" * 300
    k, v, h = encoded("oversize-tenant-id")
    add(
        "oversize-tenant-id",
        k,
        dumps({**json.loads(v), "tenant_id": long_tenant}),
        _set(h, "tenant_id", long_tenant.encode()),
        "EnvelopeError",
        "decode",
    )
    huge = "h" * 10_000  # also the key: the dead letter's key becomes its SHA-256
    k, v, h = encoded("huge-ids")
    add(
        "huge-ids",
        huge.encode(),
        dumps({**json.loads(v), "call_id": huge, "tenant_id": huge}),
        _set(_set(h, "call_id", huge.encode()), "tenant_id", huge.encode()),
        "EnvelopeError",
        "decode",
    )
    k, v, h = encoded("bad-id-chars")
    add(
        "bad-id-chars",
        k,
        v,
        _set(h, "call_id", b"call id with spaces/and\nnewline"),
        "EnvelopeError",
        "decode",
    )

    # -- bytes that are not UTF-8 / not JSON ---------------------------------------------
    k, v, h = encoded("invalid-utf8-value")
    add("invalid-utf8-value", k, v[:-1] + b', "x": "\xff\xfe"}', h, "InvalidUtf8", "decode")
    k, v, h = encoded("invalid-utf8-header")
    add("invalid-utf8-header", k, v, _set(h, "ce_id", b"\xff\xfe\x00id"), "EnvelopeError", "decode")
    junk = b"\x80" + random.Random(9).randbytes(511)
    k, v, h = encoded("binary-junk")
    add("binary-junk", k, junk, h, "InvalidUtf8", "decode")
    add(
        "binary-junk-headers",
        junk[:16],
        junk,
        [("ce_\x00junk", junk[:64]), ("\u00ff", junk[64:128])],
        "EnvelopeError",
        "decode",
    )
    k, v, h = encoded("not-json")
    add("not-json", k, b"{not json", h, "InvalidJson", "decode")
    k, v, h = encoded("deeply-nested")
    add("deeply-nested", k, b"[" * 5000 + b"]" * 5000, h, "InvalidJson", "decode")
    k, v, h = encoded("deeply-nested-field")
    nested = b'{"a":' * 3000 + b"1" + b"}" * 3000
    add(
        "deeply-nested-field",
        k,
        v[:-1] + b', "' + SENDER_SECRET.encode() + b'": ' + nested + b"}",
        h,
        "InvalidJson",
        "decode",
    )
    k, v, h = encoded("null-value")
    add("null-value", k, None, h, "MissingValue", "decode")
    k, v, h = encoded("non-object-json")
    add("non-object-json", k, b"[1, 2, 3]", h, "SchemaViolation", "validate")
    k, v, h = encoded("json-scalar")
    add("json-scalar", k, b'"just a string"', h, "SchemaViolation", "validate")

    # -- headers that disagree with the body ---------------------------------------------
    k, v, h = encoded("call-id-mismatch")
    add("call-id-mismatch", k, v, _set(h, "call_id", b"another-call"), "HeaderMismatch", "validate")
    k, v, h = encoded("tenant-id-mismatch")
    add(
        "tenant-id-mismatch",
        k,
        v,
        _set(h, "tenant_id", b"other-tenant"),
        "HeaderMismatch",
        "validate",
    )
    if check_key:
        k, v, h = encoded("key-mismatch")
        add("key-mismatch", b"another-call", v, h, "KeyMismatch", "validate")
    # ce_type says the template's type, the body is a call-ended event of the same call.
    other = CallEndedV1(
        tenant_id=template.tenant_id,
        call_id=call("type-mismatch"),
        occurred_at=datetime.now(UTC),
    )
    k, v, h = encoded("type-mismatch")
    _, other_value, _, _ = encode(other, source=source)
    if template.event_type != CallEndedV1.event_type:
        add("type-mismatch", k, other_value, h, "SchemaViolation", "validate")
    k, v, h = encoded("unknown-type")
    add(
        "unknown-type",
        k,
        v,
        _set(h, "ce_type", UNKNOWN_TYPE.encode()),
        "UnknownEventType",
        "decode",
    )

    # -- missing, duplicate, wrong and oversize headers ----------------------------------
    k, v, h = encoded("no-headers")
    add("no-headers", k, v, [], "EnvelopeError", "decode")
    k, v, h = encoded("missing-ce-id")
    add("missing-ce-id", k, v, _set(h, "ce_id", None), "EnvelopeError", "decode")
    k, v, h = encoded("empty-ce-source")
    add("empty-ce-source", k, v, _set(h, "ce_source", b""), "EnvelopeError", "decode")
    k, v, h = encoded("duplicate-ce-type")
    add(
        "duplicate-ce-type",
        k,
        v,
        [*h, ("ce_type", UNKNOWN_TYPE.encode())],
        "EnvelopeError",
        "decode",
    )
    k, v, h = encoded("duplicate-call-id")
    add("duplicate-call-id", k, v, [*h, ("call_id", k)], "EnvelopeError", "decode")
    k, v, h = encoded("bad-specversion")
    add(
        "bad-specversion",
        k,
        v,
        _set(h, "ce_specversion", b"0.3-" + b"x" * 8),
        "EnvelopeError",
        "decode",
    )
    k, v, h = encoded("oversize-ce-id")
    add("oversize-ce-id", k, v, _set(h, "ce_id", b"i" * 5000), "EnvelopeError", "decode")
    k, v, h = encoded("oversize-headers")
    add(
        "oversize-headers",
        k,
        v,
        [*h, ("x-platform-blob", b"b" * 70_000)],
        "OversizeHeaders",
        "decode",
    )
    k, v, h = encoded("too-many-headers")
    add(
        "too-many-headers",
        k,
        v,
        h + [(f"x-{i}", b"1") for i in range(150)],
        "OversizeHeaders",
        "decode",
    )

    # -- schema violations (reasons must not repeat the sender's names or values) --------
    k, v, h = encoded("extra-field")
    add(
        "extra-field",
        k,
        dumps(body("extra-field", **{SENDER_SECRET: "4111 1111 1111 1111"})),
        h,
        "SchemaViolation",
        "validate",
    )
    k, v, h = encoded("wrong-type")
    add(
        "wrong-type",
        k,
        dumps(body("wrong-type", occurred_at=12345)),
        h,
        "SchemaViolation",
        "validate",
    )
    if "start_s" in type(template).model_fields and "end_s" in type(template).model_fields:
        k, v, h = encoded("end-before-start")
        add(
            "end-before-start",
            k,
            dumps(body("end-before-start", start_s=30.0, end_s=12.5)),
            h,
            "SchemaViolation",
            "validate",
        )

    # -- sizes ---------------------------------------------------------------------------
    k, v, h = encoded("near-size-limit")
    base = dumps(body("near-size-limit", **{SENDER_SECRET: ""}))
    pad = max_message_bytes - len(base) - 16
    near = dumps(body("near-size-limit", **{SENDER_SECRET: "p" * pad}))
    assert len(near) <= max_message_bytes
    add("near-size-limit", k, near, h, "SchemaViolation", "validate")
    over_size = max_message_bytes + 1
    if over_size + 8_192 <= topic_max_bytes:
        k, v, h = encoded("over-size-limit")
        over = dumps(body("over-size-limit", **{SENDER_SECRET: ""}))
        over = over[:-1] + b" " * (over_size - len(over)) + b"}"
        add("over-size-limit", k, over, h, "OversizeMessage", "decode")
    return records


def produce_malformed(
    bootstrap: str, topic: str, records: Iterable[Malformed], partition: int | None = None
) -> list[tuple[int, int]]:
    """Produce the records (in order) and return each one's partition and offset."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "message.max.bytes": 10_000_000,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
        }
    )
    records = list(records)
    where: list[tuple[int, int]] = []
    for record in records:
        slot = len(where)
        where.append((-1, -1))

        def delivered(err: Any, msg: Any, slot: int = slot) -> None:
            if err is None:
                where[slot] = (msg.partition(), msg.offset())

        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        producer.produce(
            topic,
            key=record.key,
            value=record.value,
            headers=cast(Any, record.headers),
            on_delivery=delivered,
            **extra,
        )
        producer.poll(0)
    assert producer.flush(60) == 0, "malformed records were not all delivered"
    missing = [r.name for r, w in zip(records, where, strict=True) if w == (-1, -1)]
    assert not missing, f"not delivered: {missing}"
    return where
