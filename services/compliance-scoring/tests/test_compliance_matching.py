"""ASR-tolerant phrase matching: near misses match, meaning-changing differences do not."""

from __future__ import annotations

import pytest

from loopwise_compliance.matching import MatchOptions, find_phrase, normalise, normalise_phrase


def match(text: str, phrase: str, **options: float | bool | int) -> str | None:
    found = find_phrase(normalise(text), normalise_phrase(phrase), MatchOptions(**options))  # type: ignore[arg-type]
    return None if found is None else text[found.start : found.end]


def test_normalise_keeps_offsets_tokens_and_expands_contractions() -> None:
    text = "Um, I can't pay — it's [CARD_NUMBER]!"
    words = normalise(text)
    assert [w.text for w in words] == ["i", "can", "not", "pay", "it", "is", "[CARD_NUMBER]"]
    assert text[words[-1].start : words[-1].end] == "[CARD_NUMBER]"
    assert text[words[1].start : words[1].end] == "can't"


@pytest.mark.parametrize(
    ("heard", "phrase", "evidence"),
    [
        # substitutions, a split word and a filler from the recogniser
        ("um this coal may be record it", "this call may be recorded", "this coal may be record"),
        ("I want to speak to you manger", "speak to your manager", "speak to you manger"),
        ("THIS CALL'S RECORDED.", "this call is recorded", "THIS CALL'S RECORDED"),
        ("we will garnish you wages", "we will garnish your wages", "we will garnish you wages"),
        ("I lost my, uh, job", "lost my job", "lost my, uh, job"),
        ("I cant afford it", "can't afford", "cant afford"),
    ],
)
def test_near_misses_match(heard: str, phrase: str, evidence: str) -> None:
    assert match(heard, phrase) == evidence


@pytest.mark.parametrize(
    ("heard", "phrase"),
    [
        ("I have an issue", "sue"),  # never inside a word
        ("I'll see you tomorrow", "i will sue"),  # short words must be exact
        ("you have been most helpful", "not helpful"),
        ("I can afford it", "can't afford"),  # a dropped negation is not a match
        ("this call is not recorded", "this call is recorded"),
        ("my husband will call", "my husband died"),
        ("what is your account number", "your account number is"),
        ("the general allotment", "the funeral"),
        ("I need a ride to the hospital", "in the hospital"),
    ],
)
def test_meaning_changes_do_not_match(heard: str, phrase: str) -> None:
    assert match(heard, phrase) is None


def test_threshold_and_fuzzy_are_configurable() -> None:
    heard, phrase = "this coal may be record it", "this call may be recorded"
    assert match(heard, phrase, threshold=95.0) is None
    assert match(heard, phrase, fuzzy=False) is None
    assert match("this call may be recorded", phrase, fuzzy=False) == "this call may be recorded"
    # Phrases shorter than min_fuzzy_chars must be exact even when fuzzy is on.
    assert match("I will cancer it", "cancel", min_fuzzy_chars=7) is None
