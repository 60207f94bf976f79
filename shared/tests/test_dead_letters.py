"""Dead letters that cannot fail: every kind of bad input gets a valid, bounded dead letter.

One test per kind of malformed record (`tests/support/malformed.py`), for three event
types, checks the intake's classification and the dead letter built for it; the
other tests force the shortening, size cut and last-resort paths directly.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import structlog
from pydantic import ValidationError

from loopwise.events import (
    UNKNOWN_FIELD,
    AudioChunkV1,
    CallStartedV1,
    DeadLetterV1,
    Envelope,
    ExternalTranscriptSegmentV1,
    TenantEvent,
    TranscriptSegmentV1,
    encode,
    validation_reason,
)
from loopwise.events.examples import example_events
from loopwise.kafka import deadletter
from loopwise.kafka.deadletter import (
    DLQ_HEADERS,
    MAX_DEAD_LETTER_BYTES,
    MAX_KEY_BYTES,
    dead_letter,
    dead_letter_record,
    exception_reason,
    shorten,
)
from loopwise.kafka.intake import Rejection, admit
from tests.support.card_numbers import holds_test_card
from tests.support.malformed import SENDER_SECRET, Malformed, malformed_records


def _example(model: type[TenantEvent]) -> TenantEvent:
    return next(e for e in example_events() if isinstance(e, model))


TEMPLATES = [ExternalTranscriptSegmentV1, CallStartedV1, AudioChunkV1]
CASES = [
    pytest.param(model, record, id=f"{model.__name__}-{record.name}")
    for model in TEMPLATES
    for record in malformed_records(_example(model), max_message_bytes=200_000, check_key=True)
]


def _record_size(value: bytes, headers: list[tuple[str, bytes]], key: bytes | None) -> int:
    return len(value) + sum(len(n) + len(v) for n, v in headers) + len(key or b"")


@pytest.mark.parametrize(("model", "bad"), CASES)
def test_each_kind_of_bad_input_is_rejected_and_dead_lettered(
    model: type[TenantEvent], bad: Malformed
) -> None:
    admitted = admit(bad.value, bad.headers, {model.event_type: model}, 200_000, key=bad.key)
    assert isinstance(admitted, Rejection), f"{bad.name} was admitted"
    assert (admitted.error_class, admitted.stage) == (bad.error_class, bad.stage), admitted.reason
    assert admitted.reason
    with structlog.testing.capture_logs() as logs:
        out = dead_letter_record(
            service="svc",
            dead_letter_topic="dlq",
            rejection=admitted,
            topic="loopwise.cx.in.v1",
            partition=2,
            offset=41,
            key=bad.key,
            value=bad.value,
            headers=bad.headers,
        )
    record = DeadLetterV1.model_validate_json(out.value)  # a valid dead letter, always
    assert not record.fallback
    assert (record.error_class, record.stage) == (bad.error_class, bad.stage)
    assert (record.original_partition, record.original_offset) == (2, 41)
    assert record.reason == admitted.reason
    assert _record_size(out.value, out.headers, out.key) <= MAX_DEAD_LETTER_BYTES
    headers = dict(out.headers)
    assert set(DLQ_HEADERS) <= set(headers)
    Envelope.from_headers(out.headers)  # its own envelope is valid too
    # Neither the reason nor the log line repeats the sender's field names or values.
    logged = json.dumps(logs, default=str)
    for text in (record.reason, headers["dlq_reason"].decode(), logged):
        assert SENDER_SECRET not in text
        assert not holds_test_card(text)
    if bad.value is not None and record.payload_b64 is not None:
        kept = base64.b64decode(record.payload_b64)
        assert bad.value.startswith(kept)
        assert record.payload_truncated == (len(kept) < len(bad.value))


def test_oversize_ids_are_shortened_with_their_length_noted() -> None:
    template = _example(ExternalTranscriptSegmentV1)
    huge = next(r for r in malformed_records(template) if r.name == "huge-ids")
    out = dead_letter_record(
        service="svc",
        dead_letter_topic="dlq",
        rejection=Rejection("decode", "EnvelopeError", "header call_id is too long"),
        topic="in",
        partition=0,
        offset=0,
        key=huge.key,
        value=huge.value,
        headers=huge.headers,
    )
    record = DeadLetterV1.model_validate_json(out.value)
    assert record.call_id is not None and len(record.call_id) == 128
    assert record.tenant_id is not None and len(record.tenant_id) == 128
    assert record.call_id.startswith("hhh") and "...sha256:" in record.call_id
    assert record.original_lengths["call_id"] == 10_000
    assert record.original_lengths["tenant_id"] == 10_000
    assert record.original_lengths["key"] == 10_000
    assert out.key is not None and len(out.key) == 64  # the key's SHA-256, hex
    assert len(huge.key or b"") > MAX_KEY_BYTES
    # The dead letter's own envelope carries no invalid id.
    envelope = Envelope.from_headers(out.headers)
    assert envelope.call_id is None and envelope.tenant_id is None


def test_shorten_is_stable_and_bounded() -> None:
    assert shorten("abc", 10) == "abc"
    a, b = shorten("x" * 500, 128), shorten("x" * 500, 128)
    assert a == b and len(a) == 128
    assert shorten("x" * 500, 128) != shorten("x" * 499 + "y", 128)
    assert len(shorten("x" * 500, 5)) == 5


def test_a_value_near_the_size_limit_keeps_a_prefix_under_the_limit() -> None:
    value = b'{"a": "' + b"p" * 1_040_000 + b'"}'
    body, headers = dead_letter(
        service="svc",
        stage="validate",
        error_class="SchemaViolation",
        reason="too big to keep",
        topic="in",
        partition=0,
        offset=7,
        value=value,
        headers=[],
    )
    record = DeadLetterV1.model_validate_json(body)
    assert record.payload_truncated and record.payload_bytes == len(value)
    kept = base64.b64decode(record.payload_b64 or "")
    assert 0 < len(kept) < len(value) and value.startswith(kept)
    assert _record_size(body, headers, None) <= MAX_DEAD_LETTER_BYTES


def test_a_failing_payload_filter_falls_back_to_the_last_resort_record() -> None:
    def broken_filter(raw: bytes) -> bytes | None:
        raise RuntimeError("filter bug")

    body, headers = dead_letter(
        service="svc",
        stage="validate",
        error_class="SchemaViolation",
        reason="bad",
        topic="in",
        partition=1,
        offset=9,
        value=b"{}",
        headers=[("call_id", b"c1")],
        payload_filter=broken_filter,
    )
    record = DeadLetterV1.model_validate_json(body)
    assert record.fallback and record.payload_b64 is None
    assert (record.original_partition, record.original_offset) == (1, 9)
    assert record.error_class == "SchemaViolation"
    assert "RuntimeError" in record.reason and "filter bug" not in record.reason
    assert dict(headers)["dlq_error_class"] == b"SchemaViolation"


def test_when_even_the_model_fails_a_plain_json_record_is_produced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken:
        event_type = DeadLetterV1.event_type

        def __init__(self, **_: Any) -> None:
            raise ValueError("model broken")

    monkeypatch.setattr(deadletter, "DeadLetterV1", Broken)
    out = dead_letter_record(
        service="svc",
        dead_letter_topic="dlq",
        rejection=Rejection("decode", "InvalidJson", "not JSON"),
        topic="in",
        partition=0,
        offset=3,
        key=b"k",
        value=b"{nope",
        headers=None,
    )
    monkeypatch.undo()
    record = DeadLetterV1.model_validate_json(out.value)  # still a valid dead letter
    assert record.fallback and record.original_offset == 3 and record.payload_bytes == 5


def test_nonsense_arguments_still_give_a_dead_letter() -> None:
    body, _ = dead_letter(
        service="s" * 500,
        stage="x" * 100,
        error_class="E" * 1000,
        reason="r" * 10_000,
        topic="t",
        partition=-5,  # breaks the model: the fallback clamps it
        offset=-1,
        value=None,
        headers=[("x", None), ("y", "text, not bytes"), ("z", 42)],  # type: ignore[list-item]
    )
    record = DeadLetterV1.model_validate_json(body)
    assert record.fallback and record.original_partition == 0


def test_exception_reason_does_not_echo_input() -> None:
    with pytest.raises(ValidationError) as caught:
        CallStartedV1.model_validate(
            {"tenant_id": "4111111111111111", SENDER_SECRET: "secret value"}
        )
    reason = exception_reason(caught.value)
    assert reason.startswith("CallStartedV1: ")
    assert "1 unknown field(s)" in reason
    assert f"{UNKNOWN_FIELD}: Extra inputs" in validation_reason(caught.value, limit=10)
    assert SENDER_SECRET not in reason and "secret value" not in reason
    assert "4111111111111111" not in reason
    assert exception_reason(RuntimeError("plain")) == "plain"


def test_dict_keys_of_the_sender_are_not_named() -> None:
    started = _example(CallStartedV1)
    _, value, headers, _ = encode(started, source="t")
    body = json.loads(value)
    body["metadata"] = {SENDER_SECRET: [1, 2]}
    admitted = admit(json.dumps(body).encode(), headers, {started.event_type: CallStartedV1}, 10**6)
    assert isinstance(admitted, Rejection)
    assert "metadata.<key>" in admitted.reason and SENDER_SECRET not in admitted.reason


@pytest.mark.parametrize("model", [ExternalTranscriptSegmentV1, TranscriptSegmentV1])
def test_a_segment_ending_before_it_starts_is_rejected(model: type[TenantEvent]) -> None:
    event = _example(model)
    data = event.model_dump()
    data.update(start_s=12.0, end_s=11.5)
    with pytest.raises(ValidationError, match="end_s is before start_s"):
        model.model_validate(data)
    data.update(start_s=12.0, end_s=12.0)  # a zero-length segment is fine
    assert model.model_validate(data).end_s == 12.0


def test_custom_binary_headers_are_ignored_not_fatal() -> None:
    event = _example(ExternalTranscriptSegmentV1)
    _, value, headers, _ = encode(event, source="t")
    headers = [*headers, ("x-platform-trace", b"\xff\x00\xfe")]
    admitted = admit(value, headers, {event.event_type: ExternalTranscriptSegmentV1}, 10**6)
    assert not isinstance(admitted, Rejection)
    assert admitted[1] == event


def test_a_key_that_is_not_the_call_id_is_rejected_where_the_key_is_checked() -> None:
    event = _example(ExternalTranscriptSegmentV1)
    key, value, headers, _ = encode(event, source="t")
    accepted = {event.event_type: ExternalTranscriptSegmentV1}
    assert not isinstance(admit(value, headers, accepted, 10**6, key=key), Rejection)
    for wrong in (b"another-call", None):
        rejected = admit(value, headers, accepted, 10**6, key=wrong)
        assert isinstance(rejected, Rejection)
        assert (rejected.stage, rejected.error_class) == ("validate", "KeyMismatch")
        assert "another-call" not in rejected.reason
    # Callers that do not pass the key (today's worker) are not affected.
    assert not isinstance(admit(value, headers, accepted, 10**6), Rejection)


@pytest.mark.parametrize(
    "broken",
    [[("traceparent", b"0" * 5000)], [("traceparent", b"\xff\xfe")], "duplicate"],
    ids=["oversize", "not-utf8", "duplicate"],
)
def test_a_broken_trace_context_is_dropped_not_fatal(broken: Any) -> None:
    event = _example(ExternalTranscriptSegmentV1)
    _, value, headers, _ = encode(event, source="t")
    if broken == "duplicate":
        headers = [*headers, *[h for h in headers if h[0] == "traceparent"]]
    else:
        headers = [h for h in headers if h[0] != "traceparent"] + broken
    admitted = admit(value, headers, {event.event_type: ExternalTranscriptSegmentV1}, 10**6)
    assert not isinstance(admitted, Rejection)
    assert admitted[0].traceparent is None
