"""Finding sensitive values in text: where they are, what kind, how sure.

Order matters: pattern detectors with their own shape (email, IBAN, dates of
birth, card expiry) run first; ordinary numbers that must stay (times, amounts,
plain dates, IP addresses) are then fenced off; what is left is read as digit
runs (numerals and spoken numbers alike) and classified by checksum, shape and
the words just before them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection
from dataclasses import dataclass

from loopwise.events.transcripts import RedactionType
from loopwise.redaction.digits import Run, aba_ok, digit_runs, luhn_ok, ssn_ok
from loopwise.redaction.patterns import (
    ACCOUNT_CONTEXT,
    ALPHANUMERIC_ID,
    ANY_DIGIT,
    ANY_NUMBER_WORD,
    CARD_CONTEXT,
    CONTEXT_CHARS,
    CVV_CONTEXT,
    DOB_CONTEXT,
    EMAIL,
    EXPIRY_CONTEXT,
    EXPIRY_NAMED,
    EXPIRY_NUMERIC,
    IBAN,
    ID_CONTEXT_CHARS,
    MONEY_AFTER,
    NAMED_DATE,
    NUMERIC_DATE,
    PERSONAL_ID_CONTEXT,
    PHONE_CONTEXT,
    PHONE_EXTENSION,
    PHONE_OR_NUMBER,
    PROTECTED,
    RECORD_ID_CONTEXT,
    ROUTING_CONTEXT,
    SPOKEN_EMAIL,
    SPOKEN_EMAIL_HINT,
    SSN_CONTEXT,
)


@dataclass(frozen=True, slots=True)
class Detection:
    """A sensitive value found in the input text (offsets into the input)."""

    start: int
    end: int
    type: RedactionType
    confidence: float


def _before(text: str, start: int, chars: int = CONTEXT_CHARS) -> str:
    return text[max(0, start - chars) : start]


def _near(pattern: re.Pattern[str], text: str, start: int, end: int, after: int = 0) -> bool:
    """Whether pattern occurs just before start (or within `after` chars after end)."""
    if pattern.search(_before(text, start)):
        return True
    return bool(after and pattern.search(text[end : end + after]))


def _last(pattern: re.Pattern[str], text: str) -> int:
    """Where the last match of pattern in text ends (-1 if none): the nearest context wins."""
    last = -1
    for m in pattern.finditer(text):
        last = m.end()
    return last


def _iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in moved))
    except ValueError:
        return False
    return number % 97 == 1


class _Found:
    """Detections so far, with a quick overlap test."""

    def __init__(self, types: Collection[RedactionType]) -> None:
        self.types = types
        self.items: list[Detection] = []

    def free(self, start: int, end: int) -> bool:
        return all(d.end <= start or end <= d.start for d in self.items)

    def add(self, start: int, end: int, kind: RedactionType, confidence: float) -> bool:
        if kind not in self.types or not self.free(start, end):
            return False
        self.items.append(Detection(start, end, kind, round(confidence, 3)))
        return True


def detect(text: str, types: Collection[RedactionType], *, context: str = "") -> list[Detection]:
    """Every sensitive value in text of the given types, sorted by offset, not overlapping.

    `context` is the unredacted text said just before (the previous segment of the
    same speaker): it gives keywords and lets a number read across two segments be
    seen whole. Detections are returned for `text` only, clipped to it.
    """
    if context:
        offset = len(context) + 1
        out = []
        for d in _detect(f"{context} {text}", types):
            if d.end <= offset:
                continue
            start, end = max(d.start, offset) - offset, d.end - offset
            while start < end and not text[start].isalnum():
                start += 1  # a value begun in the context: its tail starts at its first digit
            if start < end:
                out.append(Detection(start, end, d.type, d.confidence))
        return out
    return _detect(text, types)


def _detect(text: str, types: Collection[RedactionType]) -> list[Detection]:
    found = _Found(types)
    # Cheap look-ups first: most segments have no digits, no number words and no "@".
    has_digit = ANY_DIGIT.search(text) is not None
    has_number = has_digit or ANY_NUMBER_WORD.search(text) is not None
    if "@" in text:
        for m in EMAIL.finditer(text):
            found.add(m.start(), m.end(), "EMAIL", 0.99)
    if SPOKEN_EMAIL_HINT.search(text):
        for m in SPOKEN_EMAIL.finditer(text):
            found.add(m.start(), m.end(), "EMAIL", 0.8)
    if not has_number:
        return sorted(found.items, key=lambda d: d.start)
    if has_digit:
        for m in IBAN.finditer(text):
            if _iban_ok(m.group()):
                found.add(m.start(), m.end(), "IBAN", 0.99)
    if DOB_CONTEXT.search(text):
        for pattern, confidence in ((NUMERIC_DATE, 0.9), (NAMED_DATE, 0.85)):
            for m in pattern.finditer(text):
                if _near(DOB_CONTEXT, text, m.start(), m.end(), after=30):
                    found.add(m.start(), m.end(), "DATE_OF_BIRTH", confidence)
    if EXPIRY_CONTEXT.search(text) or CARD_CONTEXT.search(text):
        for pattern in (EXPIRY_NUMERIC, EXPIRY_NAMED):
            for m in pattern.finditer(text):
                if _near(EXPIRY_CONTEXT, text, m.start(), m.end()):
                    found.add(m.start(), m.end(), "CARD_EXPIRY", 0.9)
                elif (
                    pattern is EXPIRY_NUMERIC
                    and _near(CARD_CONTEXT, text, m.start(), m.end())
                    and 20 <= int(m.group()[-2:]) <= 45
                ):
                    # card words only: "10/15" is more likely a day than a card's expiry
                    found.add(m.start(), m.end(), "CARD_EXPIRY", 0.7)

    protected = [m.span() for m in PROTECTED.finditer(text)] if has_digit else []
    if has_digit:
        for m in ALPHANUMERIC_ID.finditer(text):
            if not m.group().isdigit() and all(
                p1 <= m.start() or m.end() <= p0 for p0, p1 in protected
            ):
                found.add(m.start(), m.end(), "OTHER_PII", 0.5)

    blocked = [(d.start, d.end) for d in found.items] + protected
    for run in digit_runs(text, blocked):
        _classify(text, run, found)
    return sorted(found.items, key=lambda d: d.start)


def _card_shaped(run: Run) -> bool:
    """Numerals in one block, or in groups like 4-4-4-4 / 4-6-5, or read out as words."""
    if run.spoken:
        return True
    sizes = [len(e.digits) for e in run.elements]
    if len(sizes) == 1 or run.thousands:
        return True
    if sizes[0] <= 4 and all(s == sizes[0] for s in sizes[:-1]) and sizes[-1] <= sizes[0]:
        return True  # 4-4-4-4, 4-4-4-4-3, 4-1-1-1..., 1-1-1-...
    return sizes in ([4, 6, 5], [4, 6, 4], [4, 6])


def _card_fragment(run: Run) -> bool:
    """Read out as words, one block of 8+ digits, or whole groups of four: part of a card."""
    if run.spoken:
        return True
    sizes = [len(e.digits) for e in run.elements]
    return (len(sizes) == 1 and sizes[0] >= 8) or (len(sizes) > 1 and set(sizes) == {4})


def _best_card(text: str, run: Run, card_ctx: bool) -> tuple[int, int, float] | None:
    """The longest element window of run that reads as a card number."""
    els = run.elements
    best: tuple[int, int, float] | None = None
    best_len = 0
    for i in range(len(els)):
        total = 0
        for j in range(i, len(els)):
            total += len(els[j].digits)
            if total > 19:
                break
            if total < 12 or total <= best_len:
                continue
            window = run.sub(i, j + 1)
            digits = window.digits
            if not luhn_ok(digits) or (digits[0] == "0" and not card_ctx):
                continue
            ctx = card_ctx or CARD_CONTEXT.search(_before(text, window.start, 40)) is not None
            if not ctx and ACCOUNT_CONTEXT.search(_before(text, window.start)):
                continue  # "account number 9931939443153": a bank account, read below
            if total == 12 and not ctx:
                continue
            if not ctx and (window.weak or not _card_shaped(window)):
                continue
            if not ctx and total > 16 and not window.spoken and len(window.elements) == 1:
                # 17-19 digit numerals without card words are more often other identifiers
                conf = 0.8
            else:
                conf = 0.99 if ctx else 0.9
            best, best_len = (i, j + 1, conf), total
    return best


def _classify(text: str, run: Run, found: _Found) -> None:
    """Classify one digit run, splitting it where a card number sits inside it."""
    digits = run.digits
    n = len(digits)
    if n < 3:
        return
    start, end = run.start, run.end
    card_ctx = _near(CARD_CONTEXT, text, start, end)

    if n >= 12:
        whole_card = card_ctx and 13 <= n <= 19 and (run.spoken or _card_shaped(run))
        best = None if whole_card else _best_card(text, run, card_ctx)
        if best is not None:
            i, j, conf = best
            window = run.sub(i, j)
            if found.add(window.start, window.end, "CARD_NUMBER", conf):
                if i > 0:
                    _classify(text, run.sub(0, i), found)
                if j < len(run.elements):
                    _classify_after_card(text, run.sub(j, len(run.elements)), found)
                return
        if whole_card:
            # card words and a card-sized number: a card, even when a misheard digit fails Luhn
            found.add(start, end, "CARD_NUMBER", 0.99 if luhn_ok(digits) else 0.6)
            return

    before = _before(text, start)
    money = MONEY_AFTER.match(text[end : end + 12]) is not None

    if n == 9 and _ssn_shaped(run) and ssn_ok(digits):
        found.add(start, end, "US_SSN", 0.95 if "-" in run.gaps[0] else 0.85)
        return
    if n == 9 and SSN_CONTEXT.search(before) and ssn_ok(digits):
        found.add(start, end, "US_SSN", 0.9)
        return
    if n == 9 and ROUTING_CONTEXT.search(before):
        found.add(start, end, "ROUTING_NUMBER", 0.95 if aba_ok(digits) else 0.6)
        return
    if 3 <= n <= 4 and CVV_CONTEXT.search(before):
        found.add(start, end, "CVV", 0.9)
        return
    if n in (4, 6) and EXPIRY_CONTEXT.search(before) and _mmyy(digits) and _year_ok(digits):
        found.add(start, end, "CARD_EXPIRY", 0.85)
        return
    if 6 <= n <= 8 and DOB_CONTEXT.search(before) and _date_digits(digits):
        found.add(start, end, "DATE_OF_BIRTH", 0.75)
        return
    if 6 <= n <= 17 and not money and _last(ACCOUNT_CONTEXT, before) > _last(PHONE_CONTEXT, before):
        found.add(start, end, "BANK_ACCOUNT", 0.85)
        return
    near = _before(text, start, ID_CONTEXT_CHARS)
    if n >= 4 and PERSONAL_ID_CONTEXT.search(near):
        # "licence number 6940579" is an identity document (or a PIN): redacted, not a phone
        found.add(start, end, "OTHER_PII", 0.7)
        return
    if RECORD_ID_CONTEXT.search(near):
        return  # "order number 1234567" is a record of ours, not the caller's: it stays
    if (
        6 <= n <= 12
        and not money
        and _card_fragment(run)
        and _last(CARD_CONTEXT, before) > _last(PHONE_CONTEXT, before)
    ):
        # part of a card number (the rest in the next segment, or misheard): no part goes out
        found.add(start, end, "CARD_NUMBER", 0.5)
        return
    if 7 <= n <= 15 and not money:
        phone_ctx = _near(PHONE_OR_NUMBER, text, start, end, after=12)
        shaped = _phone_shaped(text, run) or (phone_ctx and len(run.elements) == 1)
        if shaped and (phone_ctx or _phone_evident(text, run)):
            ext = PHONE_EXTENSION.match(text, end)
            stop = ext.end() if ext else end
            if start > 0 and text[start - 1] in "+(":
                start -= 1
            if start > 0 and text[start - 1] == "+":
                start -= 1
            found.add(start, stop, "PHONE", 0.9 if phone_ctx else 0.75)
            return
    if (n >= 9 or (run.spoken and n >= 7)) and not (
        money or _list_of_numbers(run) or _counting(digits)
    ):
        # a long digit string of unknown kind: redact it rather than let it out
        found.add(start, end, "OTHER_PII", 0.5)


def _classify_after_card(text: str, rest: Run, found: _Found) -> None:
    """Digits right after a card number: expiry (MMYY) then security code, else as usual."""
    els = rest.elements
    k = 0
    if len(rest.digits) >= 4:
        # the elements that make the first four digits, if they end on an element boundary
        size = 0
        while k < len(els) and size < 4:
            size += len(els[k].digits)
            k += 1
        if size == 4 and _mmyy(rest.sub(0, k).digits):
            expiry = rest.sub(0, k)
            found.add(expiry.start, expiry.end, "CARD_EXPIRY", 0.7)
        else:
            k = 0
    tail = rest.sub(k, len(els)) if k < len(els) else None
    if tail is None:
        return
    if len(tail.elements) <= 4 and len(tail.digits) in (3, 4):
        found.add(tail.start, tail.end, "CVV", 0.7)
        return
    _classify(text, tail, found)


def _list_of_numbers(run: Run) -> bool:
    """Numerals separated by commas ("2019, 2020, 2021"), or all year-like: a list, not an id."""
    if run.spoken:
        return False
    return run.weak or all(
        len(e.digits) == 4 and e.digits[:2] in ("19", "20") for e in run.elements
    )


def _counting(digits: str) -> bool:
    """Whether digits just count up ("one two three four ..."): counting, not a number."""
    return all(int(b) - int(a) == 1 for a, b in itertools.pairwise(digits))


def _year_ok(digits: str) -> bool:
    """MMYY or MMYYYY: a six-digit form must carry a 20xx year."""
    return len(digits) == 4 or digits[2:4] == "20"


def _date_digits(digits: str) -> bool:
    """Whether digits read as a date: MMDDYY(YY), DDMMYY(YY) or YYYYMMDD."""
    if len(digits) == 8 and digits[:2] in ("19", "20"):
        return 1 <= int(digits[4:6]) <= 12 and 1 <= int(digits[6:]) <= 31
    a, b = int(digits[:2]), int(digits[2:4])
    return (1 <= a <= 12 and 1 <= b <= 31) or (1 <= b <= 12 and 1 <= a <= 31)


def _mmyy(digits: str) -> bool:
    return 1 <= int(digits[:2]) <= 12


def _ssn_shaped(run: Run) -> bool:
    sizes = [len(e.digits) for e in run.elements]
    return (
        sizes == [3, 2, 4]
        and not run.spoken
        and all(g.strip() in ("-", "") and g in ("-", " ") for g in run.gaps)
    )


def _phone_evident(text: str, run: Run) -> bool:
    """A phone number without phone words: +country, (area), or three or more groups."""
    if run.spoken:
        return not _counting(run.digits)
    return _plus_or_bracket(text, run) or len(run.elements) >= 3 or len(run.digits) in (10, 11)


def _plus_or_bracket(text: str, run: Run) -> bool:
    lead = text[max(0, run.start - 2) : run.start]
    return "+" in lead or "(" in lead


def _phone_shaped(text: str, run: Run) -> bool:
    """Numerals grouped the way phone numbers are written (+1-903-140-4508, (08) 8747 6301)."""
    if run.spoken:
        return len(run.digits) in (7, 10, 11)
    sizes = [len(e.digits) for e in run.elements]
    n = sum(sizes)
    if len(sizes) == 1:
        return n in (10, 11) or (8 <= n <= 15 and _plus_or_bracket(text, run))
    # one-digit groups: at most one, or two after a "+" (+46 (0)8 928 571 38)
    singles = sum(1 for s in sizes[1:] if s < 2)
    if _list_of_numbers(run) or max(sizes) > 8 or singles > 1 + _plus_or_bracket(text, run):
        return False
    return 7 <= n <= 15
