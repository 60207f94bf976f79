"""The store: migrations match the tables, and two reviewers never hold the same task.

The claim race runs on SQLite always and on PostgreSQL when a server answers at
LOOPWISE_AUDIT_TEST_POSTGRES_URL (`make pg-up`; CI starts one), in its own schema.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from loopwise_console.api import create_app
from loopwise_console.auth import Principal
from loopwise_console.console import Console, ConsoleError
from loopwise_console.schema import metadata
from loopwise_console.store import ConsoleStore

URL_VARIABLE = "LOOPWISE_AUDIT_TEST_POSTGRES_URL"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search path is a fresh schema, dropped afterwards."""
    base = os.environ.get(URL_VARIABLE)
    if not base:
        pytest.skip(f"{URL_VARIABLE} is not set (make pg-up starts a server)")
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    schema = f"console_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError as exc:
        pytest.skip(f"no PostgreSQL server answers at {base}: {exc.orig}")
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def _drift(store: ConsoleStore) -> list[Any]:
    with store.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def test_migrations_build_exactly_the_tables_and_rerun_is_a_no_op(tmp_path: Path) -> None:
    store = ConsoleStore(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        assert _drift(store) == []
        current, head = store.schema_revision()
        assert current == head == "0001"
        store.migrate()  # again: nothing to do, nothing breaks
        assert store.schema_revision() == (head, head)
    finally:
        store.close()


def _race(store: ConsoleStore, kit: Any, contenders: int = 8) -> None:
    """Many reviewers claim the same task at once: exactly one wins, the rest get 409."""
    console = Console(store, kit.settings)
    kit_task = kit.task("race-1")
    from loopwise.events import Envelope

    store.materialise([(Envelope(type=kit_task.event_type, source="t"), kit_task)])
    barrier = threading.Barrier(contenders)
    results: list[str] = []

    def claim(n: int) -> None:
        who = Principal(subject=f"rev-{n}", role="reviewer", tenants=("acme",), auth="token")
        barrier.wait()
        try:
            console.claim(who, "race-1")
            results.append("won")
        except ConsoleError as exc:
            results.append(f"{exc.status}:{exc.code}")

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["409:already_claimed"] * (contenders - 1) + ["won"]


def test_claim_race_on_sqlite(kit: Any) -> None:
    _race(kit.store, kit)


def test_claim_race_and_api_on_postgresql(pg_url: str, kit: Any) -> None:
    store = ConsoleStore(pg_url)
    try:
        assert store.dialect == "postgresql" and _drift(store) == []
        _race(store, kit)
        # the API works the same on PostgreSQL
        from fastapi.testclient import TestClient

        from loopwise_console.auth import create_token

        with store.write() as conn:
            token, _ = create_token(conn, subject="pg-rev", role="reviewer", tenants=["acme"])
        client = TestClient(create_app(kit.settings, store))
        auth = {"Authorization": f"Bearer {token}"}
        listed = client.get("/api/v1/tasks", headers=auth).json()
        assert listed["total"] == 1 and listed["items"][0]["claimed_by"].startswith("rev-")
        assert client.post("/api/v1/tasks/race-1/claim", headers=auth).status_code == 409
    finally:
        store.close()
