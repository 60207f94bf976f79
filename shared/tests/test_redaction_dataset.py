"""Every card number in presidio-research's synthetic PII set is redacted, none left whole."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from loopwise.redaction import redact
from loopwise.redaction.digits import luhn_ok

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "pii" / "presidio_research_synth_dataset_v2.jsonl"

# A digit string with separators inside it, as card numbers are written.
DIGITS_WITH_SEPARATORS = re.compile(r"\d(?:[\d \-.]*\d)?")


def _records() -> list[dict[str, Any]]:
    if not DATA.exists():
        pytest.skip(f"dev data set not found at {DATA}")
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]


def full_card_numbers(text: str) -> list[str]:
    """Runs of 13 or more digits (separators stripped) that pass Luhn, at any position."""
    out = []
    for m in DIGITS_WITH_SEPARATORS.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        for size in range(13, 20):
            for i in range(len(digits) - size + 1):
                if luhn_ok(digits[i : i + size]):
                    out.append(digits[i : i + size])
    return out


def test_the_check_itself_finds_a_card_number() -> None:
    assert full_card_numbers("pay with 4111 1111-1111 1111 now") == ["4111111111111111"]
    assert full_card_numbers("nothing here but 12 and 2019") == []


def test_every_card_number_in_the_data_set_is_redacted() -> None:
    records = _records()
    cards = 0
    for rec in records:
        text = rec["text"]
        spans = [s for s in rec["spans"] if s["entity_type"] == "CREDIT_CARD"]
        if not spans:
            continue
        result = redact(text)
        for s in spans:
            cards += 1
            assert s["value"] not in result.text, rec["id"]
        assert "[CARD_NUMBER]" in result.text, rec["id"]
        assert full_card_numbers(result.text) == [], rec["id"]
    assert cards == 136


def test_no_full_card_number_is_left_anywhere_in_the_data_set() -> None:
    leftovers = []
    for rec in _records():
        result = redact(rec["text"])
        if full_card_numbers(result.text):
            leftovers.append((rec["id"], result.text))
    assert leftovers == []
