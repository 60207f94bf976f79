"""Derived output ids: the same on every redelivery and in every release (consumers dedupe)."""

from __future__ import annotations

import uuid

import pytest

from loopwise.kafka.intake import OUTPUT_ID_NAMESPACE, output_id


def test_output_id_is_pinned() -> None:
    # an id computed once by uuid.uuid5: a change here re-ids every replayed output
    assert (
        output_id("12e83ec4-9161-5bc3-8370-35569224e45b", "review-router", 0)
        == "4b7af4d2-c55b-5d48-bc14-64a5ce9a9170"
    )


@pytest.mark.parametrize(
    ("parent", "service", "index"),
    [
        ("12e83ec4-9161-5bc3-8370-35569224e45b", "compliance-scoring", 1),
        ("", "review-router", 0),
        ("call-ä-ü-€-😀", "sentiment", 1_000),
        ("x" * 5_000, "transcription", 123_456_789),
        ("a/b/c", "s/t", -1),
    ],
)
def test_output_id_is_uuid5_of_parent_service_and_index(
    parent: str, service: str, index: int
) -> None:
    expected = uuid.uuid5(OUTPUT_ID_NAMESPACE, f"{parent}/{service}/{index}")
    got = output_id(parent, service, index)
    assert got == str(expected)
    assert uuid.UUID(got).version == 5
    assert uuid.UUID(got).variant == uuid.RFC_4122


def test_output_ids_differ_by_each_part() -> None:
    ids = {output_id(p, s, i) for p in ("a", "b") for s in ("x", "y") for i in (0, 1)}
    assert len(ids) == 8
