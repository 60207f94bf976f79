"""Builders of input events for the sentiment tests (imported by path-unique module name)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loopwise.events import CallEndedV1, ModelRef, TranscriptSegmentV1
from loopwise.events.base import PartyRole

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ASR = ModelRef(name="test-asr", version="1")


def segment(
    call_id: str,
    index: int,
    text: str,
    speaker: PartyRole = "customer",
    confidence: float = 0.95,
    start_s: float | None = None,
) -> TranscriptSegmentV1:
    """A redacted transcript segment of a call, 5 s per segment unless `start_s` is given."""
    start = float(index * 5) if start_s is None else start_s
    return TranscriptSegmentV1(
        tenant_id="acme",
        call_id=call_id,
        occurred_at=T0 + timedelta(seconds=start + 4),
        producer=ASR,
        segment_id=f"{call_id}-seg-{index:04d}",
        speaker=speaker,
        start_s=start,
        end_s=start + 4,
        text=text,
        confidence=confidence,
        language="en",
        source="realtime",
    )


def ended(call_id: str, duration_s: float = 120.0) -> CallEndedV1:
    """The end of a call."""
    return CallEndedV1(
        tenant_id="acme",
        call_id=call_id,
        occurred_at=T0 + timedelta(seconds=duration_s),
        duration_s=duration_s,
    )


ANGRY_CALL = [
    ("agent", "Thank you for calling, how can I help you today?"),
    ("customer", "Hi, I have a question about my bill."),
    ("agent", "Sure, let me pull up your account."),
    ("customer", "My card is [CARD_NUMBER], I was charged twice and nobody has fixed it."),
    ("customer", "This is ridiculous, I am furious and I want a refund now!"),
    ("agent", "I am sorry about that, let me check."),
    ("customer", "Oh great, another hour on hold. Terrible service, absolutely awful."),
    ("customer", "I hate this, I am cancelling my account, this is the worst company ever."),
]
