"""Changelog record keys: compaction keeps one record per key, so a key's bytes never change."""

from __future__ import annotations

import json

import pytest

from loopwise.kafka.state import _parse_key, _record_key


@pytest.mark.parametrize(
    ("key", "part"),
    [
        ("acme-bank/call-1", ""),
        ("call-1", "s/seg-0001"),
        ("", ""),
        ('quote " backslash \\ newline \n nul \x00', "t/task\u2028\u2029"),
        ("caf\u00e9-\u20ac-\U0001f600", "e/" + "x" * 2_000),
    ],
)
def test_record_key_is_the_json_of_key_and_part(key: str, part: str) -> None:
    raw = _record_key(key, part)
    assert raw == json.dumps([key, part], separators=(",", ":")).encode("utf-8")
    assert _parse_key(raw) == (key, part)


@pytest.mark.parametrize("raw", [None, b"", b"not json", b'["only-one"]', b"[1,2]", b"\xff"])
def test_unreadable_keys_parse_as_none(raw: bytes | None) -> None:
    assert _parse_key(raw) is None
