"""Digit runs in text: numerals and spoken numbers ("four one one one", "double four").

A *run* is a sequence of digit *elements* joined only by separators (spaces,
hyphens, dots, commas, brackets), so that a card number read out as words,
with ASR punctuation between them, is seen as one digit string.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

UNITS = {
    "zero": 0,
    "oh": 0,
    "o": 0,
    "nought": 0,
    "naught": 0,
    "nil": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
TEENS = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fourty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
REPEAT = {"double": 2, "triple": 3}
# "oh" and "o" are zeros, but "forty oh" is not forty: they never end a tens word.
WEAK_ZERO = {"oh", "o"}

# "555-123-4567x89": the number before an extension mark is still a number
EXTENSION_MARKS = {"x", "ext"}

# Spoken separators: "oh nine slash two seven", "five five five dash one two ..."
SEPARATOR_WORDS = {"slash", "dash", "hyphen"}
SEPARATOR_WORD = re.compile(r"\b(?:slash|dash|hyphen)\b", re.IGNORECASE)

TOKEN = re.compile(r"\d+|[A-Za-z]+")
# What may stand between two elements of one run: spaces, ASR punctuation, phone brackets.
SEPARATOR = re.compile(r"[ \t\-.,()+]{0,4}")


@dataclass(frozen=True, slots=True)
class Element:
    """One piece of a digit run: a numeral or a spoken number, with its place in the text."""

    start: int
    end: int
    digits: str
    spoken: bool


@dataclass(frozen=True, slots=True)
class Run:
    """Digit elements joined only by separators; gaps[i] stands between element i and i+1."""

    elements: tuple[Element, ...]
    gaps: tuple[str, ...]

    @property
    def start(self) -> int:
        """Offset of the first element."""
        return self.elements[0].start

    @property
    def end(self) -> int:
        """End offset of the last element."""
        return self.elements[-1].end

    @property
    def digits(self) -> str:
        """All digits of the run, separators removed."""
        return "".join(e.digits for e in self.elements)

    @property
    def spoken(self) -> bool:
        """Whether any element was a spoken number."""
        return any(e.spoken for e in self.elements)

    @property
    def thousands(self) -> bool:
        """Whether the run is one numeral written with thousands commas (4,111,111,...)."""
        sizes = [len(e.digits) for e in self.elements]
        return (
            len(sizes) > 1
            and all(g == "," for g in self.gaps)
            and not self.spoken
            and 1 <= sizes[0] <= 3
            and all(s == 3 for s in sizes[1:])
        )

    @property
    def weak(self) -> bool:
        """Whether numerals are joined by a comma or full stop ("2019, 2020"): maybe a list."""
        if self.thousands:
            return False
        return any(
            ("," in g or ("." in g and g != g.strip()))
            and not self.elements[i].spoken
            and not self.elements[i + 1].spoken
            for i, g in enumerate(self.gaps)
        )

    def sub(self, i: int, j: int) -> Run:
        """Elements i..j-1 as a run."""
        return Run(self.elements[i:j], self.gaps[i : j - 1])


def _spoken_elements(
    words: Sequence[tuple[int, int, str]],
) -> list[tuple[int, Element | None]]:
    """Parse consecutive words into spoken-number elements; None marks a non-number word."""
    out: list[tuple[int, Element | None]] = []
    i = 0
    n = len(words)
    while i < n:
        start, end, raw = words[i]
        w = raw.lower()
        if w in REPEAT and i + 1 < n and words[i + 1][2].lower() in UNITS:
            _, end2, nxt = words[i + 1]
            digit = str(UNITS[nxt.lower()])
            out.append((i, Element(start, end2, digit * REPEAT[w], True)))
            i += 2
            continue
        if w in TENS:
            value = str(TENS[w])
            if i + 1 < n and words[i + 1][2].lower() in UNITS:
                unit = UNITS[words[i + 1][2].lower()]
                if unit != 0 and words[i + 1][2].lower() not in WEAK_ZERO:
                    out.append((i, Element(start, words[i + 1][1], str(TENS[w] + unit), True)))
                    i += 2
                    continue
            out.append((i, Element(start, end, value, True)))
            i += 1
            continue
        if w in TEENS:
            out.append((i, Element(start, end, str(TEENS[w]), True)))
            i += 1
            continue
        if w in UNITS:
            out.append((i, Element(start, end, str(UNITS[w]), True)))
            i += 1
            continue
        if w == "hundred" and out and out[-1][1] is not None and out[-1][0] == i - 1:
            prev = out[-1][1]
            assert prev is not None
            out[-1] = (i, Element(prev.start, end, prev.digits + "00", True))
            i += 1
            continue
        if w not in SEPARATOR_WORDS:
            out.append((i, None))
        i += 1
    return out


def _merge(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping union of character ranges."""
    out: list[tuple[int, int]] = []
    for b0, b1 in sorted(ranges):
        if out and b0 <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b1))
        else:
            out.append((b0, b1))
    return out


def digit_runs(text: str, blocked: Sequence[tuple[int, int]] = ()) -> list[Run]:
    """Find every run of digit elements in text, skipping the blocked character ranges."""
    fences = _merge(blocked)
    starts = [b0 for b0, _ in fences]
    tokens: list[tuple[int, int, str]] = []
    for m in TOKEN.finditer(text):
        k = bisect.bisect_left(starts, m.end()) - 1  # last fence starting before the token ends
        if k >= 0 and fences[k][1] > m.start():
            tokens.append((m.start(), m.end(), "\x00"))  # a breaker
        else:
            tokens.append((m.start(), m.end(), m.group()))

    # Elements in token order; None breaks a run.
    items: list[Element | None] = []
    k = 0
    while k < len(tokens):
        s, e, tok = tokens[k]
        if tok.isdigit():
            # Digits glued to letters ("3rd", "x4587", "U629...") are codes, not numbers.
            after = text[e] if e < len(text) else " "
            glued = (s > 0 and (text[s - 1].isalpha() or text[s - 1] == "_")) or (
                after == "_"
                or (
                    after.isalpha()
                    and not (k + 1 < len(tokens) and tokens[k + 1][2].lower() in EXTENSION_MARKS)
                )
            )
            items.append(None if glued else Element(s, e, tok, False))
            k += 1
            continue
        # a stretch of alphabetic tokens
        j = k
        while j < len(tokens) and not tokens[j][2].isdigit():
            j += 1
        stretch = tokens[k:j]
        for _, el in _spoken_elements(stretch):
            items.append(el)
        k = j

    runs: list[Run] = []
    current: list[Element] = []
    gaps: list[str] = []
    for el in items:
        if el is not None and current:
            gap = text[current[-1].end : el.start]
            if SEPARATOR.fullmatch(SEPARATOR_WORD.sub("", gap)):
                gaps.append(gap)
                current.append(el)
                continue
        if current:
            runs.append(Run(tuple(current), tuple(gaps)))
            current, gaps = [], []
        if el is not None:
            current.append(el)
    if current:
        runs.append(Run(tuple(current), tuple(gaps)))
    return runs


def luhn_ok(digits: str) -> bool:
    """Luhn (mod 10) check used by payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def aba_ok(digits: str) -> bool:
    """ABA routing number checksum (weights 3, 7, 1)."""
    if len(digits) != 9 or not digits.isdigit():
        return False
    weights = (3, 7, 1) * 3
    return sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 10 == 0 and (
        digits[:2] != "00"
    )


def ssn_ok(digits: str) -> bool:
    """Whether nine digits can be a US SSN (no 000/666/9xx area, 00 group, 0000 serial)."""
    if len(digits) != 9:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
