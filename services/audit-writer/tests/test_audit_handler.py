"""What an audit record says about each event: every PCI DSS 10.2.2 field, never free text."""

from __future__ import annotations

import json

import pytest

from loopwise.events import (
    AuditCheckpointV1,
    Envelope,
    ExternalTranscriptSegmentV1,
    ReviewDecisionV1,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise.events.examples import example_events
from loopwise.kafka import Incoming
from loopwise_audit.chain import canonical_json, record_hash
from loopwise_audit.handler import describe

PIPELINE = [e for e in example_events() if not isinstance(e, AuditCheckpointV1)]


def incoming(event: TenantEvent, offset: int = 0) -> Incoming:
    envelope = Envelope(
        type=event.event_type,
        source="svc-under-test",
        tenant_id=event.tenant_id,
        call_id=getattr(event, "call_id", None),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    return Incoming(envelope, event, "loopwise.topic.v1", 2, offset)


@pytest.mark.parametrize("event", PIPELINE, ids=lambda e: e.event_type)
def test_every_record_answers_pci_dss_10_2_2(event: TenantEvent) -> None:
    item = incoming(event)
    facts = describe(item).facts
    # user identification; type of event; date and time; success or failure; origination;
    # identity of the affected data, component or resource.
    assert facts["actor"]["type"] in ("service", "user") and facts["actor"]["id"]
    assert facts["event_type"] == event.event_type and facts["action"]
    assert facts["occurred_at"].endswith("Z") and facts["event_time"].endswith("Z")
    assert facts["outcome"] in ("success", "failure") and facts["result"]
    assert facts["origin"] == {
        "source": "svc-under-test",
        "topic": "loopwise.topic.v1",
        "partition": 2,
        "offset": 0,
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
    }
    assert facts["resource"].startswith("call:call-0001")
    assert facts["event_id"] == item.envelope.id and facts["tenant_id"] == "acme"
    assert len(facts["event_sha256"]) == 64
    producer = getattr(event, "producer", None)
    if producer is not None:
        assert facts["producer"] == {"name": producer.name, "version": producer.version}
    canonical_json(facts)  # no floats anywhere: the record hashes the same in any language


def test_review_decision_names_the_reviewer() -> None:
    (decision,) = [e for e in PIPELINE if isinstance(e, ReviewDecisionV1)]
    facts = describe(incoming(decision)).facts
    assert facts["actor"] == {"type": "user", "id": "rev-7"}
    assert facts["via"] == "svc-under-test"
    assert facts["result"] == "approve"
    assert facts["details"]["finding_verdicts"][0]["verdict"] == "confirmed"


def test_policy_version_is_recorded() -> None:
    routing = next(e for e in PIPELINE if e.event_type == "io.loopwise.routing.decision.v1")
    facts = describe(incoming(routing)).facts
    assert facts["policy_version"] == "sha256:ab12"
    assert facts["result"] == "hold"
    assert facts["details"]["fired"][0]["rule_id"] == "card-data-hold"


def test_no_free_text_reaches_a_record() -> None:
    secrets = [
        "4111 1111 1111 1111",
        "4111111111111111",
        "really unhappy",
        "my card is",
        "private reviewer remark",
        "customer sounded confused",
        "Card number spoken",
    ]
    decision = next(e for e in PIPELINE if isinstance(e, ReviewDecisionV1))
    with_comment = decision.model_copy(
        update={
            "comment": "private reviewer remark",
            "finding_verdicts": [
                v.model_copy(update={"note": "customer sounded confused"})
                for v in decision.finding_verdicts
            ],
        }
    )
    external = next(e for e in PIPELINE if isinstance(e, ExternalTranscriptSegmentV1))
    assert "4111 1111 1111 1111" in external.text
    for event in [*PIPELINE, with_comment]:
        text = json.dumps(describe(incoming(event)).facts)
        for secret in secrets:
            assert secret not in text, (event.event_type, secret)


def test_transcript_record_keeps_counts_not_words() -> None:
    segment = next(e for e in PIPELINE if isinstance(e, TranscriptSegmentV1))
    details = describe(incoming(segment)).facts["details"]
    assert details["chars"] == len(segment.text)
    assert details["redactions"] == ["CARD_NUMBER"]


def test_record_hash_is_domain_separated() -> None:
    import hashlib

    body = canonical_json({"a": 1})
    plain = hashlib.sha256(bytes(32) + body.encode()).hexdigest()
    assert record_hash("0" * 64, body) != plain
    assert (
        record_hash("0" * 64, body)
        == hashlib.sha256(b"loopwise.audit.v1\x00" + bytes(32) + b'{"a":1}').hexdigest()
    )
    with pytest.raises(TypeError):
        canonical_json({"score": 0.5})
