"""Fixtures of the audit-writer tests: a keyring and stores in temporary directories."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loopwise_audit.checkpoints import KeyRing
from loopwise_audit.store import AuditStore

TEST_KEY = b"audit-test-key-0123456789abcdef-0123456789"


@pytest.fixture
def audit_keys() -> KeyRing:
    """The key that signs test checkpoints."""
    return KeyRing("test-key", {"test-key": TEST_KEY})


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[[str], AuditStore]]:
    """Factory: a fresh SQLite audit store in this test's directory."""
    stores: list[AuditStore] = []

    def make(name: str = "audit") -> AuditStore:
        store = AuditStore(f"sqlite:///{tmp_path / name}.db")
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
