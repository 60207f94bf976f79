"""Word-level redaction: a value spread over recogniser words becomes one token word."""

from __future__ import annotations

import re

from loopwise.redaction import TOKENS, redact, redact_words

SPOKEN_CARD = (
    " My card is four one one one, one one one one, one one one one, one one one one. Thanks."
)


def whisper_words(text: str) -> list[str]:
    """Split text the way faster-whisper gives words: each with its leading space."""
    return re.findall(r"\s*\S+", text)


def test_spoken_card_collapses_into_one_token_word() -> None:
    words = whisper_words(SPOKEN_CARD)
    result = redact_words(words)
    assert [w.word for w in result.words] == [" My", " card", " is", " [CARD_NUMBER].", " Thanks."]
    token = result.words[3]
    assert (token.first, token.last, token.type) == (3, 18, "CARD_NUMBER")
    assert result.text == " My card is [CARD_NUMBER]. Thanks."
    assert result.text == "".join(w.word for w in result.words)
    assert result.text == redact(SPOKEN_CARD).text
    (span,) = result.spans
    assert result.text[span.start : span.end] == "[CARD_NUMBER]"


def test_every_input_word_is_covered_once_in_order() -> None:
    text = (
        " call me on 555 123 4567 or mail jo@example.com, card 4111 1111 1111 1111 exp 09/27"
        " and my social is 123-45-6789 at 10:30"
    )
    words = whisper_words(text)
    result = redact_words(words)
    covered = [i for w in result.words for i in range(w.first, w.last + 1)]
    assert covered == list(range(len(words)))
    kinds = [w.type for w in result.words if w.type]
    assert kinds == ["PHONE", "EMAIL", "CARD_NUMBER", "CARD_EXPIRY", "US_SSN"]
    assert not any(re.search(r"\d{3}", w.word) for w in result.words if w.type)
    assert result.words[-1].word == " 10:30"


def test_words_without_leading_spaces_are_joined_with_spaces() -> None:
    words = ["my", "cvv", "is", "four", "five", "six"]
    result = redact_words(words)
    assert [w.word for w in result.words] == ["my", "cvv", "is", TOKENS["CVV"]]
    assert result.words[-1].first == 3 and result.words[-1].last == 5
    assert result.text == "my cvv is [CVV]"


def test_no_digit_of_a_spoken_card_survives_in_any_word() -> None:
    digits = "4532015112830366"
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    words = [" card"] + [
        " " + names[int(d)] + ("," if i % 4 == 3 else "") for i, d in enumerate(digits)
    ]
    result = redact_words(words)
    spoken = {n for n in names}
    assert not any(w.word.strip(" ,.") in spoken for w in result.words)
    assert [w.type for w in result.words] == [None, "CARD_NUMBER"]


def test_plain_words_pass_through_untouched() -> None:
    words = whisper_words(" I'll call back at three thirty about the 2 items, costs $45.99.")
    result = redact_words(words)
    assert [w.word for w in result.words] == words
    assert result.spans == []


def test_a_card_read_across_two_segments_is_caught_in_both() -> None:
    first = " Okay, my card number is four one one one, one one one one,"
    second = " one one one one, one one one one. Did you get it?"
    # alone, each half is a card fragment or a long digit string: never published as digits
    assert "one one one one" not in redact(first).text
    assert redact(first).spans[0].type == "CARD_NUMBER"
    # with the previous segment as context, the second half is known as the card's tail
    tail = redact(second, context=first)
    assert tail.text == " [CARD_NUMBER]. Did you get it?"
    words = redact_words(whisper_words(second), context=first)
    assert [w.word for w in words.words] == [" [CARD_NUMBER].", " Did", " you", " get", " it?"]
    assert (words.words[0].first, words.words[0].last) == (0, 7)


def test_context_only_informs_it_is_never_redacted_into_the_result() -> None:
    result = redact(" and the CVV is 123", context=" my email is a@example.com")
    assert result.text == " and the CVV is [CVV]"
    assert redact(" it is 123", context=" the security code on the back").text == " it is [CVV]"


def test_card_fragments_near_card_words_are_redacted_short_card_facts_are_not() -> None:
    assert redact("my card number is 4111 1111").text == "my card number is [CARD_NUMBER]"
    assert redact("the card ending in 4242").text == "the card ending in 4242"
    assert redact("my credit card limit is 5000").text == "my credit card limit is 5000"
    assert redact("call the card company at 555 123 4567").text == (
        "call the card company at [PHONE]"
    )


def test_empty_and_odd_word_lists() -> None:
    assert redact_words([]).words == []
    assert redact_words([]).text == ""
    result = redact_words(["", " card", " 4111111111111111", ""])
    assert [w.word for w in result.words] == ["", " card", " [CARD_NUMBER]", ""]
    glued = redact_words([" email:jo@example.com,", " thanks"])
    assert [w.word for w in glued.words] == [" email:[EMAIL],", " thanks"]
