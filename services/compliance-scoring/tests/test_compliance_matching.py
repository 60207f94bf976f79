"""ASR-tolerant phrase matching: near misses match, meaning-changing differences do not."""

from __future__ import annotations

import pytest

from loopwise_compliance.matching import (
    MatchOptions,
    find_all,
    find_any,
    find_phrase,
    normalise,
    normalise_phrase,
)


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


def test_phrases_scored_together_match_as_scored_alone() -> None:
    # find_any / find_all score every phrase of a list in one call per window size; each
    # phrase must still get exactly the match it gets on its own, and the list's order decides
    # ties (find_any: the earliest of the best).
    phrases = [
        normalise_phrase(p)
        for p in [
            "this call may be recorded",
            "sue",
            "i will sue",
            "cancel",
            "my husband died",
            "card number",
            "not helpful",
            "speak to a manager",
            "this call is recorded",
        ]
    ]
    heard = [
        "um this coal may be record it for training and I will sue if you cancel",
        "my husband died last week, can I speak to the manager, your card number please",
        "you have been not helpful at all, this call is recorded",
        "nothing relevant here",
        "",
    ]
    for options in (MatchOptions(), MatchOptions(threshold=70.0), MatchOptions(fuzzy=False)):
        for text in heard:
            words = normalise(text)
            alone = [find_phrase(words, p, options) for p in phrases]
            assert find_all(words, phrases, options) == [m for m in alone if m is not None]
            best = None
            for m in alone:
                if m is not None and (best is None or m.similarity > best.similarity):
                    best = m
            assert find_any(words, phrases, options) == best
    assert find_all(normalise(heard[0]), phrases, MatchOptions())  # some do match


def test_a_list_scored_from_a_shared_universe_matches_as_scored_alone() -> None:
    # The rules of a pack take their phrases' windows from one scoring of the text against
    # every phrase of the pack (the universe); a list, a repeated phrase and a phrase the
    # universe lacks (scored on its own) must still match exactly as without it.
    universe = tuple(
        normalise_phrase(p)
        for p in ["this call may be recorded", "cancel", "my husband died", "speak to a manager"]
    )
    lists = [
        [universe[0], universe[1]],
        [universe[2], universe[2], universe[3]],
        [universe[1], normalise_phrase("card number")],  # not in the universe
        [normalise_phrase("sue")],  # exact only (too short to fuzz)
    ]
    heard = [
        "um this coal may be record it and I will sue if you cancel",
        "my husband died, can I speak to the manager, your card number please",
        "",
    ]
    for options in (MatchOptions(), MatchOptions(threshold=70.0)):
        for text in heard:
            words = normalise(text)  # one Words object: its shared scoring is cached
            for phrases in lists:
                assert find_all(words, phrases, options, universe) == find_all(
                    normalise(text), phrases, options
                )
                assert find_any(words, phrases, options, universe) == find_any(
                    normalise(text), phrases, options
                )
    assert find_all(normalise(heard[1]), lists[1], MatchOptions(), universe)  # some match
