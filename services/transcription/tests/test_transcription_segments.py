"""Recognised words to redacted segments: a value spoken over many words becomes one token word."""

from __future__ import annotations

from datetime import UTC, datetime

from loopwise.events import ModelRef
from loopwise_transcription.engine import AsrSegment, AsrWord
from loopwise_transcription.segments import asr_segment_event, merge_asr, redact_asr

SPOKEN = "my card is four one one one one one one one one one one one one one one one thanks"


def words(text: str, start: float = 10.0) -> list[AsrWord]:
    return [
        AsrWord(w, start + i * 0.3, start + i * 0.3 + 0.25, 0.9 - 0.01 * i)
        for i, w in enumerate(text.split())
    ]


def test_a_spoken_card_number_becomes_one_token_word_spanning_its_words() -> None:
    red = redact_asr(words(SPOKEN), SPOKEN)
    assert red.text == "my card is [CARD_NUMBER] thanks"
    assert [w.word for w in red.words] == ["my", "card", "is", "[CARD_NUMBER]", "thanks"]
    token = red.words[3]
    assert token.start_s == 10.9 and token.end_s == 10.0 + 18 * 0.3 + 0.25
    assert token.probability == 0.9 - 0.01 * 18  # the weakest word it covers
    assert [s.type for s in red.spans] == ["CARD_NUMBER"]
    assert red.text[red.spans[0].start : red.spans[0].end] == "[CARD_NUMBER]"


def test_segment_event_is_redacted_clamped_and_names_the_model() -> None:
    asr = merge_asr(
        [
            AsrSegment("call me at 415 555 0100", 9.5, 12.0, words("call me at 415 555 0100"), 0.8),
            AsrSegment("ok", 12.0, 20.0, words("ok", 12.1), 0.4),
        ]
    )
    assert asr is not None
    event = asr_segment_event(
        tenant_id="acme",
        call_id="c-1",
        segment_id="ch0-0000160000",
        speaker="customer",
        channel=0,
        asr=asr,
        source="realtime",
        producer=ModelRef(name="whisper-tiny.en-ct2", version="test"),
        occurred_at=datetime.now(UTC),
        flags=["audio_gap", "audio_gap"],
        bounds=(10.0, 13.0),
    )
    assert "415" not in event.text and "[PHONE]" in event.text
    assert all("415" not in w.word for w in event.words)
    assert event.start_s == 10.0 and event.end_s == 13.0
    assert all(10.0 <= w.start_s <= w.end_s <= 13.0 for w in event.words)
    # Word-weighted: six words at 0.8, one at 0.4.
    assert abs(event.confidence - (6 * 0.8 + 0.4) / 7) < 1e-3
    assert event.flags == ["audio_gap"]
