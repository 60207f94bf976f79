"""Redaction of every form of sensitive value the transcripts carry, and of nothing else."""

from __future__ import annotations

import re

import pytest
from prometheus_client import REGISTRY

from loopwise.events.transcripts import RedactionSpan, RedactionType
from loopwise.redaction import TOKENS, redact

CASES: list[tuple[str, str]] = [
    # card numbers: numerals, grouped, spoken, mixed, ASR punctuation
    ("my card is 4111111111111111 thanks", "my card is [CARD_NUMBER] thanks"),
    ("it's 4111 1111 1111 1111.", "it's [CARD_NUMBER]."),
    ("number 4111-1111-1111-1111, please", "number [CARD_NUMBER], please"),
    ("amex 3782 822463 10005", "amex [CARD_NUMBER]"),
    ("sure it is 5500 0000 0000 0004", "sure it is [CARD_NUMBER]"),
    (
        "it's four one one one one one one one one one one one one one one one",
        "it's [CARD_NUMBER]",
    ),
    (
        "Four, one, one, one. One, one, one, one. One, one, one, one. One, one, one, one.",
        "[CARD_NUMBER].",
    ),
    (
        "the card is four double one one one one one one one one one one one one one",
        "the card is [CARD_NUMBER]",
    ),
    ("five five oh oh oh oh oh oh oh oh oh oh oh oh oh four", "[CARD_NUMBER]"),
    ("card number 4111 one one one 1111 one one one one", "card number [CARD_NUMBER]"),
    ("forty one eleven, eleven eleven, eleven eleven, eleven eleven", "[CARD_NUMBER]"),
    (
        "uh my card four one one one one one one one one one one one one one one two",
        "uh my card [CARD_NUMBER]",
    ),
    ("4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "[CARD_NUMBER]"),
    # recognisers sometimes write a long number with thousands commas
    ("it is 4,111,111,111,111,111 ok", "it is [CARD_NUMBER] ok"),
    # digits glued to letters or underscores are codes, still never left whole
    ("tag card_4111111111111111 x", "tag [REDACTED] x"),
    (
        "my card is " + "".join(chr(0xFF10 + int(d)) for d in "4111111111111111"),
        "my card is [CARD_NUMBER]",
    ),
    ("41 11 11 11 11 11 11 11 and that's it", "[CARD_NUMBER] and that's it"),
    (
        "card ending, sorry, full number 4111111111111111.",
        "card ending, sorry, full number [CARD_NUMBER].",
    ),
    # CVV and expiry near card context
    (
        "card 4111 1111 1111 1111 expires 09/27 cvv 123",
        "card [CARD_NUMBER] expires [EXPIRY] cvv [CVV]",
    ),
    ("the expiration date is oh nine twenty seven", "the expiration date is [EXPIRY]"),
    ("the security code on the back is four five six", "the security code on the back is [CVV]"),
    ("and the CVV is 7 3 1", "and the CVV is [CVV]"),
    ("my card expires in March 2027", "my card expires in [EXPIRY]"),
    ("expiration 12 27", "expiration [EXPIRY]"),
    ("it expires oh nine slash two seven", "it expires [EXPIRY]"),
    ("4111 1111 1111 1111 1227 123", "[CARD_NUMBER] [EXPIRY] [CVV]"),
    # SSN
    ("my social is 123-45-6789", "my social is [SSN]"),
    (
        "social security number one two three four five six seven eight nine",
        "social security number [SSN]",
    ),
    ("SSN 123 45 6789", "SSN [SSN]"),
    # bank account and routing numbers
    ("routing number 021000021", "routing number [ROUTING_NUMBER]"),
    ("my account number is 12345678901", "my account number is [BANK_ACCOUNT]"),
    ("checking account one two three four five six seven eight", "checking account [BANK_ACCOUNT]"),
    ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN [IBAN]"),
    # phone
    ("call me at (555) 123-4567", "call me at [PHONE]"),
    ("my number is 555.123.4567 ok", "my number is [PHONE] ok"),
    ("reach me on +44 7700 900123", "reach me on [PHONE]"),
    ("you can call five five five one two three four five six seven", "you can call [PHONE]"),
    ("the phone is five five five dash one two three four", "the phone is [PHONE]"),
    ("call 5551234 please", "call [PHONE] please"),
    ("fax +1-903-140-4508x769", "fax [PHONE]"),
    # email
    ("email me at john.smith@example.com.", "email me at [EMAIL]."),
    ("it's john dot smith at gmail dot com", "it's [EMAIL]"),
    # date of birth
    ("I was born on 2/8/1935.", "I was born on [DATE_OF_BIRTH]."),
    ("date of birth March 3rd, 1980", "date of birth [DATE_OF_BIRTH]"),
    ("my DOB is 1980-03-03", "my DOB is [DATE_OF_BIRTH]"),
    ("birth date oh three oh three nineteen eighty", "birth date [DATE_OF_BIRTH]"),
    ("born on the 3rd of March, 1980", "born on [DATE_OF_BIRTH]"),
    ("my birthday is september twenty fourth nineteen forty six", "my birthday is [DATE_OF_BIRTH]"),
]

ORDINARY: list[str] = [
    "I'll call you back at 10:30 tomorrow.",
    "Let's say three thirty then.",
    "The total was $45.99 including tax.",
    "It was twenty dollars and fifty cents.",
    "I ordered 2 items last week.",
    "There's an order of 12 boxes waiting.",
    "We opened the account in 2019.",
    "Back in 2019, 2020 and 2021 the prices were lower.",
    "It takes 3 to 5 business days.",
    "That's about 1,250,000 customers.",
    "Your balance is $1,234.56.",
    "The meeting is on 03/15/2024 at 9:00 am.",
    "Press one for English, two for Spanish.",
    "I need one or two more minutes.",
    "Oh, I see, no problem.",
    "It costs four hundred dollars.",
    "Room 101 on the 3rd floor.",
    "The promo runs until March 2027.",
    "It was about 15% more than last year.",
    "My last four digits are 1234.",
    "The order came to 149.99 and arrived on the 21st.",
    "I've been a customer for twenty five years.",
    "the server is at 192.168.1.20",
    # spoken, as the recogniser writes it
    "I called three times last week.",
    "Can we do ten fifteen tomorrow?",
    "That was back in twenty twenty three.",
    "I'm in room four oh five.",
    "It was about a hundred and fifty dollars.",
    "I have two kids, one is three and the other is five.",
    "Press one two three on your keypad.",
    "Okay, one two three four five six seven, are you there?",
    "The card was declined twice on 10/15.",
    "My credit card limit is 5000.",
    "The card ending in 4242 was charged.",
    "I've been with you for 10 years, since 2014.",
    "You owe 3 payments of 45 dollars.",
    "I was born in nineteen eighty five.",
    "Open 24/7, in 2 to 3 weeks, maybe 4 5 days.",
    "Session 0760d47a-5910-1dcd-5054-850633c994ce was opened.",
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_each_form_is_replaced_by_its_token(text: str, expected: str) -> None:
    result = redact(text)
    assert result.text == expected
    assert len(result.spans) == expected.count("[")


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_numbers_stay(text: str) -> None:
    result = redact(text)
    assert result.text == text
    assert result.spans == []


def test_spans_point_at_their_tokens() -> None:
    result = redact(
        "card 4111 1111 1111 1111 exp 09/27, email a.b@example.org, phone (555) 123-4567"
    )
    assert [s.type for s in result.spans] == ["CARD_NUMBER", "CARD_EXPIRY", "EMAIL", "PHONE"]
    for span in result.spans:
        assert isinstance(span, RedactionSpan)
        assert result.text[span.start : span.end] == TOKENS[span.type]
        assert 0.0 < span.confidence <= 1.0


def test_types_limit_what_is_redacted() -> None:
    text = "card 4111111111111111, email a@example.com"
    only_email = redact(text, types={"EMAIL"})
    assert only_email.text == "card 4111111111111111, email [EMAIL]"
    with pytest.raises(ValueError, match="unknown redaction types"):
        redact(text, types={"PASSPORT"})  # type: ignore[arg-type]


def test_cvv_and_expiry_need_card_context() -> None:
    assert redact("we have 123 of them by 09/27").text == "we have 123 of them by 09/27"


def test_invalid_ssn_and_non_luhn_numbers_without_context_are_not_cards() -> None:
    result = redact("ref 4111 1111 1111 1112")
    assert all(s.type != "CARD_NUMBER" for s in result.spans)
    assert all(s.type != "US_SSN" for s in redact("ticket 000-12-3456").spans)


@pytest.mark.parametrize(
    "text",
    [
        "my card number is 4111 1111 1111 1112",
        "the number on my visa is 4111111111111112",
        "card is four one one one one one one one one one one one one one one two",
    ],
)
def test_a_card_number_misheard_by_one_digit_is_still_redacted(text: str) -> None:
    """Kept on purpose (issue 12): a misheard digit fails Luhn, yet 15 real digits remain.

    With card words around it, a card-sized number is redacted as a card number even
    when it fails Luhn: leaving it would publish fifteen digits of a real card.
    """
    result = redact(text)
    assert [s.type for s in result.spans] == ["CARD_NUMBER"]
    assert not re.search(r"\d{4}", result.text)
    assert result.text.endswith("[CARD_NUMBER]")


def test_redactions_are_counted_by_type() -> None:
    def count(kind: RedactionType) -> float:
        value = REGISTRY.get_sample_value("loopwise_redactions_total", {"type": kind})
        return value or 0.0

    before = count("CARD_NUMBER"), count("EMAIL")
    redact("4111 1111 1111 1111 and 4012888888881881, x@example.com")
    assert count("CARD_NUMBER") == before[0] + 2
    assert count("EMAIL") == before[1] + 1
    assert REGISTRY.get_sample_value("loopwise_redactions_total", {"type": "IBAN"}) is not None
    redact("4111 1111 1111 1111", count=False)
    assert count("CARD_NUMBER") == before[0] + 2


def test_no_digit_string_of_seven_or_more_survives_in_speech() -> None:
    text = "and it's seven three nine two eight one four five, got it?"
    result = redact(text)
    assert not re.search(r"\d", result.text)
    assert "seven three nine" not in result.text


def test_identity_numbers_are_redacted_but_our_own_record_numbers_stay() -> None:
    assert redact("my driver's license number is 6940579").text == (
        "my driver's license number is [REDACTED]"
    )
    assert redact("and my pin is 4821").text == "and my pin is [REDACTED]"
    assert redact("your order number is 12345678").text == "your order number is 12345678"
    assert redact("the ticket number is seven three nine two eight one four").spans == []
    # a card number or SSN is redacted whatever it is called
    assert redact("order number 4111 1111 1111 1111").text == "order number [CARD_NUMBER]"
    # record words count only right before the number
    assert redact("about order 5, call 555-123-4567").text == "about order 5, call [PHONE]"
