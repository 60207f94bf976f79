"""Compliance scoring's state on the changelog: the written parts rebuild the state exactly.

The store writes, after each batch, the header and one part per id remembered since the last
write; only those are looked at, so a batch costs the same however long the call is. Here
calls go through the handler in random batches (redeliveries, late segments after the call
ended, the oldest ids dropped at the front) and after every batch the parts written so far
must load back into the state the service holds.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from loopwise.events import Envelope, TenantEvent
from loopwise.kafka.intake import Incoming
from loopwise_compliance import app, handler
from loopwise_compliance.app import ComplianceState, dirty_parts, load_parts, mark_clean
from loopwise_compliance.engine import CallState
from loopwise_compliance.handler import ComplianceScorer

TEXTS = [
    "thank you for calling this call is recorded for quality",
    "my card number is [CARD_NUMBER]",
    "can you confirm your date of birth",
    "this is ridiculous I want to speak to your manager",
    "is there anything else I can help you with",
]


def _incoming(event_id: str, event: TenantEvent) -> Incoming:
    envelope = Envelope(
        type=event.event_type,
        source="test",
        id=event_id,
        tenant_id=event.tenant_id,
        call_id=getattr(event, "call_id", None),
    )
    return Incoming(envelope, event, "transcripts", 0, 0)


def _lists(state: CallState) -> dict[str, Any]:
    return state.model_dump(mode="json")


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("max_ids", [5_000, 7])
def test_written_parts_rebuild_the_state_after_every_batch(
    scorer: ComplianceScorer, kit: Any, seed: int, max_ids: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a small limit drops the oldest ids at the front, as a very long call would
    monkeypatch.setattr(handler, "MAX_SEEN_IDS", max_ids)
    monkeypatch.setattr(app, "MAX_SEEN_IDS", max_ids)
    rng = random.Random(seed)
    stateful = ComplianceState(scorer, "compliance")
    script = kit.script(f"call-{seed}", tenant_id="acme-bank")
    events = [script.started()]
    for n in range(rng.randint(5, 25)):
        text = rng.choice(TEXTS)
        spans = [kit.card_span(text)] if "[CARD_NUMBER]" in text else []
        events.append(script.say(rng.choice(["agent", "customer"]), n * 5.0, text, spans))
    ended = script.ended()
    # the call ends somewhere in the middle: the segments after it are late ones
    events.insert(rng.randint(2, len(events)), ended)
    # some events are delivered twice
    for _ in range(rng.randint(1, 4)):
        events.insert(rng.randint(1, len(events)), rng.choice(events[1:]))

    state: CallState | None = None
    written: dict[str, bytes] = {}
    position = 0
    while position < len(events):
        batch = events[position : position + rng.randint(1, 6)]
        position += len(batch)
        for event_id, event in batch:
            state, _ = stateful.handle(state, _incoming(event_id, event), 0.0)
        assert state is not None
        parts = dirty_parts(state)
        for name, raw in parts.items():
            assert raw is not None
            written[name] = raw
        mark_clean(state)
        restored = load_parts(written)
        assert _lists(restored) == _lists(state)
        # nothing but the header is left to write until the state changes again
        assert list(dirty_parts(state)) == [""]
    assert state is not None and state.ended_event_id == ended[0]


def test_only_new_ids_are_written(scorer: ComplianceScorer, kit: Any) -> None:
    """A batch writes the ids it added, not the call's earlier ones."""
    stateful = ComplianceState(scorer, "compliance")
    script = kit.script(f"call-{uuid.uuid4().hex[:6]}", tenant_id="acme-bank")
    state: CallState | None = None
    for event_id, event in [
        script.started(),
        *(script.say("agent", i * 5.0, "hello") for i in range(30)),
    ]:
        state, _ = stateful.handle(state, _incoming(event_id, event), 0.0)
    assert state is not None
    assert len(dirty_parts(state)) == 1 + 31 + 30  # header, event ids, segment ids
    mark_clean(state)
    event_id, event = script.say("customer", 200.0, "one more thing")
    state, _ = stateful.handle(state, _incoming(event_id, event), 0.0)
    assert state is not None
    assert sorted(dirty_parts(state)) == sorted(
        ["", f"e/{event_id}", f"g/{event.segment_id}"]  # type: ignore[attr-defined]
    )
