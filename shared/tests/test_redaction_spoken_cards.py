"""Card numbers read out the ways callers and recognisers write them: none survives.

Card numbers are generated (seeded, Luhn-valid, 13-19 digits) and rendered in
many spoken and written styles, with and without card words around them; the
redacted text is then read back with the same digit reader, and no Luhn-valid
run of 13 or more digits may be left, in the text or in any word.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pytest

from loopwise.redaction import redact, redact_words
from loopwise.redaction.digits import digit_runs, luhn_ok

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"]
TEENS += ["eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def card_number(rng: random.Random, length: int) -> str:
    """A random Luhn-valid number of the given length with a card-like first digit."""
    body = str(rng.choice([3, 4, 5, 6])) + "".join(
        str(rng.randrange(10)) for _ in range(length - 2)
    )
    for check in "0123456789":
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always fits")


def words(digits: str) -> str:
    return " ".join(NAMES[int(d)] for d in digits)


def words_oh(digits: str) -> str:
    return " ".join("oh" if d == "0" else NAMES[int(d)] for d in digits)


def grouped_words_punctuated(digits: str) -> str:
    groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    return ". ".join(", ".join(NAMES[int(d)] for d in g).capitalize() for g in groups) + "."


def hyphenated(digits: str) -> str:
    return "-".join(NAMES[int(d)] for d in digits)


def doubles(digits: str) -> str:
    out: list[str] = []
    for m in re.finditer(r"(\d)\1*", digits):
        d, n = m.group(1), len(m.group())
        while n >= 3:
            out.append(f"triple {NAMES[int(d)]}")
            n -= 3
        if n == 2:
            out.append(f"double {NAMES[int(d)]}")
        elif n == 1:
            out.append(NAMES[int(d)])
    return " ".join(out)


def pairs(digits: str) -> str:
    # an odd digit is read first: "twenty one" at the end would be 21, not 20 then 1
    out: list[str] = [NAMES[int(digits[0])]] if len(digits) % 2 else []
    for i in range(len(digits) % 2, len(digits) - 1, 2):
        a, b = int(digits[i]), int(digits[i + 1])
        if a == 0:
            out.append(f"oh {NAMES[b]}")
        elif a == 1:
            out.append(TEENS[b])
        elif b == 0:
            out.append(TENS[a])
        else:
            out.append(f"{TENS[a]} {NAMES[b]}")
    return " ".join(out)


def mixed(digits: str) -> str:
    groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    return " ".join(g if i % 2 == 0 else words(g) for i, g in enumerate(groups))


def spaced_numerals(digits: str) -> str:
    return " ".join(digits)


def grouped_numerals(digits: str) -> str:
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def dashed_numerals(digits: str) -> str:
    return "-".join(digits[i : i + 4] for i in range(0, len(digits), 4))


STYLES: dict[str, Callable[[str], str]] = {
    "words": words,
    "words_oh": words_oh,
    "grouped_words_punctuated": grouped_words_punctuated,
    "hyphenated": hyphenated,
    "doubles": doubles,
    "pairs": pairs,
    "mixed": mixed,
    "spaced_numerals": spaced_numerals,
    "grouped_numerals": grouped_numerals,
    "dashed_numerals": dashed_numerals,
}
BEFORE = [
    "my card number is",
    "it's",
    "okay so the number on the card is",
    "sure,",
    "yeah",
    "the long number is",
    "Visa",
    "",
]
AFTER = ["", "thank you", "and it expires oh nine twenty seven", ". Did you get that?", "okay"]


def full_numbers_left(text: str) -> list[str]:
    """Luhn-valid runs of 13+ digits, reading numerals and spoken digits alike."""
    left = []
    for run in digit_runs(text):
        digits = run.digits
        for size in range(13, 20):
            left += [
                digits[i : i + size]
                for i in range(len(digits) - size + 1)
                if luhn_ok(digits[i : i + size])
            ]
    return left


def cases() -> list[tuple[str, str]]:
    rng = random.Random(20261125)
    out = []
    for style in STYLES:
        for _ in range(25):
            digits = card_number(rng, rng.choice([13, 15, 16, 16, 16, 19]))
            out.append((style, digits))
    return out


@pytest.mark.parametrize("style", sorted(STYLES))
def test_spoken_and_written_cards_leave_no_full_number(style: str) -> None:
    rng = random.Random(style)
    for kind, digits in cases():
        if kind != style:
            continue
        spoken = STYLES[style](digits)
        text = f"{rng.choice(BEFORE)} {spoken} {rng.choice(AFTER)}".strip()
        assert full_numbers_left(text), f"the reader must see the card in {text!r}"
        result = redact(text)
        assert "[CARD_NUMBER]" in result.text, text
        assert full_numbers_left(result.text) == [], (text, result.text)


@pytest.mark.parametrize("style", ["words", "pairs", "grouped_words_punctuated", "doubles"])
def test_word_lists_leave_no_full_number_in_any_word(style: str) -> None:
    rng = random.Random(style)
    for kind, digits in cases():
        if kind != style:
            continue
        text = f" {rng.choice(BEFORE)} {STYLES[style](digits)} {rng.choice(AFTER)}"
        asr_words = re.findall(r"\s*\S+", text)
        result = redact_words(asr_words)
        assert any(w.type == "CARD_NUMBER" for w in result.words), text
        assert full_numbers_left("".join(w.word for w in result.words)) == [], text
        # every word of the card went into the token word
        token = next(w for w in result.words if w.type == "CARD_NUMBER")
        inside = "".join(asr_words[token.first : token.last + 1])
        assert digits in "".join(r.digits for r in digit_runs(inside)), (text, inside)
