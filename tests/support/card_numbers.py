"""Is the test card number anywhere in this text?

The tests feed ``4111 1111 1111 1111`` (and its dashed form) into the pipeline and check
that it comes out nowhere. Searching for bare ``4111`` is not enough of a needle: event
ids (UUIDs), hashes and timestamps with microseconds hold those four digits now and
then by chance (``...T05:00:40.411123Z``), and the check then fails for no reason.
Two groups in a row cannot come from an id or a clock.
"""

from __future__ import annotations

import re

TEST_CARD = "4111 1111 1111 1111"
_CARD = re.compile(r"4111[ -]?1111")


def holds_test_card(text: str | bytes) -> bool:
    """True where the test card number (two groups or more, any separator) is in ``text``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return _CARD.search(text) is not None
