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


@dataclass(frozen=True, slots=True)
class Detection:
    """A sensitive value found in the input text (offsets into the input)."""

    start: int
    end: int
    type: RedactionType
    confidence: float


_I = re.IGNORECASE

CARD_CONTEXT = re.compile(
    r"\b(?:card|credit|debit|visa|master\s?card|amex|american\s+express|discover|maestro"
    r"|diners|jcb|cc|pan)\b",
    _I,
)
CVV_CONTEXT = re.compile(
    r"\b(?:cvv2?|cvc2?|cid|csc|security\s+(?:code|number|digits)"
    r"|verification\s+(?:code|number|value)"
    r"|(?:three|four|3|4)[\s-]digit|digits\s+on\s+the\s+back|code\s+on\s+the\s+back"
    r"|back\s+of\s+the\s+card)\b",
    _I,
)
EXPIRY_CONTEXT = re.compile(
    r"\b(?:exp|expiry|expiration|expires?|expiring|expired|valid\s+(?:thru|through|until|till)"
    r"|good\s+(?:thru|through|until|till))\b",
    _I,
)
SSN_CONTEXT = re.compile(r"\b(?:ssn|social\s+security|social|ss\s+number|ss#)", _I)
ROUTING_CONTEXT = re.compile(r"\b(?:routing|aba|transit\s+number|rtn|sort\s+code)\b", _I)
ACCOUNT_CONTEXT = re.compile(
    r"\b(?:account|acct|a/c|checking|savings|bank|iban|deposit)\b",
    _I,
)
PHONE_CONTEXT = re.compile(
    r"\b(?:phone|call|calling|called|mobile|cell|fax|tel|telephone|desk|office|reach|text"
    r"|contact|landline|extension|dial|messages|whatsapp|answering|ring)\b",
    _I,
)
# "number" alone says nothing about which kind; it helps only a phone-shaped run.
PHONE_OR_NUMBER = re.compile(rf"{PHONE_CONTEXT.pattern}|\bnumber\b", _I)
DOB_CONTEXT = re.compile(
    r"\b(?:born|birth|dob|d\.o\.b|birthday|birthdate|bday)\b",
    _I,
)
# Identifier words count only right before the number ("order number is 123", not
# "about order 5 at 555-123-4567").
_ID_TAIL = r"(?:\s+(?:number|no\.?|num|#|id|code))?(?:\s+(?:is|was|of))?\s*[:#]?\s*$"
PERSONAL_ID_CONTEXT = re.compile(
    r"\b(?:licen[cs]e|passport|national\s+id|id\s+card|tax\s+id|tin|ein|itin|medicare"
    rf"|medicaid|member\s+id|membership|policy|pin|password|passcode){_ID_TAIL}",
    _I,
)
RECORD_ID_CONTEXT = re.compile(
    r"\b(?:order|reference|ref|ticket|invoice|confirmation|tracking|case|claim|booking"
    rf"|reservation|transaction|item|sku|model|serial|flight|room|page){_ID_TAIL}",
    _I,
)
MONEY_AFTER = re.compile(
    r"^\s*(?:dollars?|bucks|usd|euros?|eur|pounds?|gbp|cents?|percent|%|k\b|grand)", _I
)

MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_NUMWORD = (
    r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen"
    r"|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty"
    r"|seventy|eighty|ninety|hundred|thousand|first|second|third|fourth|fifth|sixth|seventh"
    r"|eighth|ninth|tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth"
    r"|seventeenth|eighteenth|nineteenth|twentieth|thirtieth)"
)
_SPOKEN_NUMBER = rf"{_NUMWORD}(?:[\s,-]+(?:and\s+)?{_NUMWORD})*"

EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+"
    r"[A-Za-z]{2,24}(?![\w-])"
)
SPOKEN_EMAIL = re.compile(
    r"\b[a-z0-9]+(?:\s+(?:dot|underscore|dash|hyphen)\s+[a-z0-9]+)*\s+at\s+[a-z0-9]+"
    r"(?:\s+dot\s+[a-z0-9]+)*\s+dot\s+(?:com|net|org|edu|gov|io|co|uk|us|ca|de|info|biz)\b",
    _I,
)
IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,4})?\b")

# Dates: numerals (9/24/1946, 1946-09-24, 24.09.1946), month names, or spoken.
NUMERIC_DATE = re.compile(
    r"(?<![\d/.-])(?:\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})|\d{4}-\d{1,2}-\d{1,2})(?![\d/])"
)
NAMED_DATE = re.compile(
    rf"\b(?:{MONTHS}\s+(?:the\s+)?(?:\d{{1,2}}(?:st|nd|rd|th)?|{_SPOKEN_NUMBER})(?:\s*,)?\s+"
    rf"(?:of\s+)?(?:\d{{4}}|{_SPOKEN_NUMBER})"
    rf"|(?:the\s+)?(?:\d{{1,2}}(?:st|nd|rd|th)?|{_SPOKEN_NUMBER})\s+(?:of\s+)?{MONTHS}(?:\s*,)?\s+"
    rf"(?:\d{{4}}|{_SPOKEN_NUMBER}))\b",
    _I,
)
EXPIRY_NUMERIC = re.compile(r"(?<![\d/.])(?:0?[1-9]|1[0-2])\s?[/-]\s?(?:20)?\d{2}(?![\d/])")
EXPIRY_NAMED = re.compile(rf"\b{MONTHS}\s+(?:of\s+)?(?:20\d{{2}}|\d{{2}}|{_SPOKEN_NUMBER})\b", _I)

# Ordinary numbers that must stay: money, times, plain dates, IPs, decimals, thousands.
PROTECTED = re.compile(
    r"(?=[\d$€£¥a-fA-F])(?:[$€£¥]\s?\d[\d,]*(?:\.\d+)?"
    r"|(?<![\d.])\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]\.?m\.?)?(?![\d])"
    r"|(?<![\d./-])\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?(?![\d])"
    r"|(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"
    r"|(?<![\d.,])\d+\.\d{1,2}(?![\d.])"
    r"|(?<![\d,])\d{1,3}(?:,\d{3})+(?![\d,])"
    r"|\b\d+(?:\.\d+)?\s?%"
    r"|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b)",
    _I,
)
# Codes that mix letters and many digits (licence numbers, member ids): kept out of digit runs.
ALPHANUMERIC_ID = re.compile(r"\b(?=[A-Za-z]*\d)(?=(?:[A-Za-z]*\d){9})[A-Za-z\d]{9,40}\b")
ANY_DIGIT = re.compile(r"\d")
ANY_NUMBER_WORD = re.compile(
    r"\b(?:zero|oh|o|nought|naught|nil|one|two|three|four|five|six|seven|eight|nine|ten|eleven"
    r"|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty"
    r"|fou?rty|fifty|sixty|seventy|eighty|ninety)\b",
    _I,
)
SPOKEN_EMAIL_HINT = re.compile(r"\bat\b.*\bdot\b", _I | re.DOTALL)
PHONE_EXTENSION = re.compile(r"\s?(?:x|ext\.?|extension)\s?\d{1,5}\b", _I)

CONTEXT_CHARS = 60
ID_CONTEXT_CHARS = 32


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
    if len(sizes) == 1:
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
    if _list_of_numbers(run) or max(sizes) > 8 or sum(1 for s in sizes[1:] if s < 2) > 1:
        return False
    return 7 <= n <= 15
