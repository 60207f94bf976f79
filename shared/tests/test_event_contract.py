"""The event contract: strict models, generated schemas in step, envelopes that round-trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loopwise.events import (
    ALL_MODELS,
    EVENT_TYPES,
    ContractViolation,
    EnvelopeError,
    InvalidJson,
    UnknownEventType,
    decode,
    encode,
)
from loopwise.events.envelope import Envelope
from loopwise.events.examples import example_events
from loopwise.schemas import render_events_doc, schema_drift
from loopwise.topics import catalogue

ROOT = Path(__file__).resolve().parents[2]
CE_HEADERS = {"ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time", "content-type"}


def test_checked_in_schemas_match_the_models() -> None:
    problems = schema_drift(ROOT / "shared" / "schemas")
    assert problems == [], "run `make schemas`: " + "; ".join(problems)


def test_events_doc_matches_catalogue_and_models() -> None:
    doc = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    assert doc == render_events_doc(), "run `make schemas` to regenerate docs/events.md"


def _undescribed(schema: dict[str, Any], where: str) -> list[str]:
    missing = []
    for name, prop in schema.get("properties", {}).items():
        if not prop.get("description"):
            missing.append(f"{where}.{name}")
    for def_name, sub in schema.get("$defs", {}).items():
        missing += _undescribed(sub, def_name)
    return missing


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_every_field_is_described_and_closed(model: Any) -> None:
    schema = model.model_json_schema()
    assert _undescribed(schema, model.__name__) == []
    assert schema.get("additionalProperties") is False
    assert model.__name__.endswith("V1"), "the class name carries the version"


def test_examples_cover_every_event_type_and_every_type_has_a_topic() -> None:
    examples = example_events()
    assert {e.event_type for e in examples} == set(EVENT_TYPES)
    carried = {e for spec in catalogue().topics for e in spec.events}
    assert set(EVENT_TYPES) <= carried
    for spec in catalogue().topics:
        assert spec.key == "call_id" or spec.label.startswith(("dlq.", "audit."))


@pytest.mark.parametrize("event", example_events(), ids=lambda e: e.event_type)
def test_encode_decode_round_trip_with_cloudevents_headers(event: Any) -> None:
    key, value, headers, envelope = encode(event, source="test")
    names = {n for n, _ in headers}
    assert CE_HEADERS | {"tenant_id", "traceparent"} <= names
    if hasattr(event, "call_id"):
        assert key == event.call_id.encode()
        assert dict(headers)["call_id"] == event.call_id.encode()
    assert dict(headers)["ce_specversion"] == b"1.0"
    got_envelope, got = decode(value, headers)
    assert got == event
    assert got_envelope.id == envelope.id
    assert got_envelope.traceparent == envelope.traceparent


def test_unknown_fields_and_loose_types_are_rejected() -> None:
    event = example_events()[0]
    _, value, headers, _ = encode(event, source="test")
    body = json.loads(value)
    # The sender's field name is payload too: the reason says <unknown field>, not the name.
    with pytest.raises(ContractViolation, match="<unknown field>: Extra inputs") as caught:
        decode(json.dumps({**body, "surprise": 1}).encode(), headers)
    assert "surprise" not in str(caught.value)
    with pytest.raises(ContractViolation):
        decode(json.dumps({**body, "tenant_id": 42}).encode(), headers)
    with pytest.raises(InvalidJson):
        decode(b"{nope", headers)
    with pytest.raises(UnicodeDecodeError):
        decode(b'{"a": "\xff"}', headers)


def test_envelope_errors_are_specific() -> None:
    event = example_events()[0]
    _, value, headers, _ = encode(event, source="test")
    with pytest.raises(EnvelopeError):
        decode(value, [h for h in headers if h[0] != "ce_id"])
    wrong_type = [(n, b"io.example.other.v1" if n == "ce_type" else v) for n, v in headers]
    with pytest.raises(UnknownEventType):
        decode(value, wrong_type)
    other_call = [(n, b"another-call" if n == "call_id" else v) for n, v in headers]
    with pytest.raises(ContractViolation, match="call_id"):
        decode(value, other_call)


def test_traceparent_continues_the_parent_trace() -> None:
    first, second = example_events()[:2]
    _, _, _, parent = encode(first, source="a")
    _, _, _, child = encode(second, source="b", parent=parent)
    assert isinstance(child, Envelope)
    assert child.traceparent.split("-")[1] == parent.traceparent.split("-")[1]
    assert child.traceparent.split("-")[2] != parent.traceparent.split("-")[2]
