"""PII/PCI redaction shared by every service: typed tokens in place of sensitive values.

`redact(text)` replaces card numbers, CVVs, expiry dates, SSNs, bank account and
routing numbers, IBANs, phone numbers, email addresses and dates of birth with
tokens such as `[CARD_NUMBER]`, and says where each token stands in the result.
`redact_words(words)` does the same for a recogniser's word list, merging the
words a value was spread over ("four", "one", "one", ...) into one token word
that knows which input words it covers, so their timings can be merged.

Policy, in short: card numbers are found by Luhn check and shape (numerals,
groups, spoken digits, mixed), or by card words plus a card-sized number; CVV,
expiry, routing and account numbers, and dates of birth need their own words
nearby; a long digit string of unknown kind, an identity-document number or a
PIN becomes `[REDACTED]` (OTHER_PII); times, amounts, counts, years, plain
dates and our own record numbers ("order number 1234567") stay.

Each token counts once in `loopwise_redactions_total{type}`; pass `count=False`
when redacting a second view of the same segment (its words after its text).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import get_args

from prometheus_client import Counter

from loopwise.events.transcripts import RedactionSpan, RedactionType
from loopwise.redaction.detect import Detection, detect

__all__ = [
    "ALL_TYPES",
    "REDACTIONS_TOTAL",
    "TOKENS",
    "Detection",
    "RedactedWord",
    "Redaction",
    "WordRedaction",
    "detect",
    "redact",
    "redact_words",
]

ALL_TYPES: frozenset[RedactionType] = frozenset(get_args(RedactionType))

TOKENS: dict[RedactionType, str] = {
    "CARD_NUMBER": "[CARD_NUMBER]",
    "CVV": "[CVV]",
    "CARD_EXPIRY": "[EXPIRY]",
    "US_SSN": "[SSN]",
    "BANK_ACCOUNT": "[BANK_ACCOUNT]",
    "ROUTING_NUMBER": "[ROUTING_NUMBER]",
    "IBAN": "[IBAN]",
    "PHONE": "[PHONE]",
    "EMAIL": "[EMAIL]",
    "DATE_OF_BIRTH": "[DATE_OF_BIRTH]",
    "OTHER_PII": "[REDACTED]",
}
"""The token that replaces each kind of value."""

REDACTIONS_TOTAL = Counter(
    "loopwise_redactions_total",
    "Sensitive values replaced by a token, by type",
    ["type"],
)
for _kind in sorted(ALL_TYPES):
    REDACTIONS_TOTAL.labels(_kind)


@dataclass(frozen=True, slots=True)
class Redaction:
    """Redacted text and where each token stands in it."""

    text: str
    spans: list[RedactionSpan] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RedactedWord:
    """One output word: an input word, or a token standing for input words first..last."""

    word: str
    first: int
    last: int
    type: RedactionType | None = None


@dataclass(frozen=True, slots=True)
class WordRedaction:
    """Redacted words, the redacted text they join into, and the token spans in that text."""

    words: list[RedactedWord]
    text: str
    spans: list[RedactionSpan]


def _types(types: Collection[RedactionType] | None) -> Collection[RedactionType]:
    if types is None:
        return ALL_TYPES
    unknown = set(types) - ALL_TYPES
    if unknown:
        raise ValueError(f"unknown redaction types: {sorted(unknown)}")
    return frozenset(types)


def _apply(text: str, found: Sequence[Detection], *, count: bool) -> Redaction:
    parts: list[str] = []
    spans: list[RedactionSpan] = []
    pos = 0
    out_len = 0
    for d in found:
        parts.append(text[pos : d.start])
        out_len += d.start - pos
        token = TOKENS[d.type]
        spans.append(
            RedactionSpan(
                type=d.type, start=out_len, end=out_len + len(token), confidence=d.confidence
            )
        )
        parts.append(token)
        out_len += len(token)
        pos = d.end
        if count:
            REDACTIONS_TOTAL.labels(d.type).inc()
    parts.append(text[pos:])
    return Redaction(text="".join(parts), spans=spans)


def redact(
    text: str,
    *,
    types: Collection[RedactionType] | None = None,
    context: str = "",
    count: bool = True,
) -> Redaction:
    """Replace every sensitive value in text by its typed token.

    Pass the previous (unredacted, never published) segment of the same speaker as
    `context` so that a card number read across two segments is caught in both.
    """
    return _apply(text, detect(text, _types(types), context=context), count=count)


def redact_words(
    words: Sequence[str],
    *,
    types: Collection[RedactionType] | None = None,
    context: str = "",
    count: bool = True,
) -> WordRedaction:
    """Redact a word list (as a recogniser gives it) so that no value survives in any word.

    The words are joined into one text (a space is put between two words unless
    the second starts with whitespace, as faster-whisper's words do), redacted as
    a whole, and cut back into words: words a value touches collapse into one
    output word holding the token (with any text of those words outside the
    value kept around it), and `first`/`last` name the input words it covers.
    `context` is as for `redact`.
    """
    pieces: list[tuple[int, int]] = []
    chunks: list[str] = []
    pos = 0
    for i, w in enumerate(words):
        if i > 0 and not w[:1].isspace():
            chunks.append(" ")
            pos += 1
        pieces.append((pos, pos + len(w)))
        chunks.append(w)
        pos += len(w)
    text = "".join(chunks)
    found = detect(text, _types(types), context=context)
    redaction = _apply(text, found, count=count)

    out: list[RedactedWord] = []
    k = 0  # next detection
    i = 0
    while i < len(words):
        w0, w1 = pieces[i]
        while k < len(found) and found[k].end <= w0:
            k += 1
        if k < len(found) and found[k].start < max(w1, w0 + 1):
            # this word is touched by detection k (and maybe more): gather all words they cover
            j = i
            first_det = k
            stop = found[k].end
            while True:
                while j + 1 < len(words) and pieces[j + 1][0] < stop:
                    j += 1
                while k + 1 < len(found) and found[k + 1].start < pieces[j][1]:
                    k += 1
                    stop = max(stop, found[k].end)
                if j + 1 < len(words) and pieces[j + 1][0] < stop:
                    continue
                break
            seg_start, seg_end = pieces[i][0], pieces[j][1]
            parts: list[str] = []
            cursor = seg_start
            for d in found[first_det : k + 1]:
                parts.append(text[cursor : d.start])
                parts.append(TOKENS[d.type])
                cursor = d.end
            parts.append(text[cursor:seg_end])
            out.append(RedactedWord("".join(parts), i, j, found[first_det].type))
            k += 1
            i = j + 1
            continue
        out.append(RedactedWord(words[i], i, i))
        i += 1
    return WordRedaction(words=out, text=redaction.text, spans=redaction.spans)
