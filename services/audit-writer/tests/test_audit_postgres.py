"""The same store on PostgreSQL, when a server answers at LOOPWISE_AUDIT_TEST_POSTGRES_URL.

Each test gets its own schema. Without the variable (or without an answering
server) these tests are skipped with the reason; the SQLite tests always run.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DatabaseError, OperationalError

from loopwise_audit.checkpoints import CheckpointSet, KeyRing
from loopwise_audit.samples import sample_entries
from loopwise_audit.store import AuditStore
from loopwise_audit.verify import verify_store

URL_VARIABLE = "LOOPWISE_AUDIT_TEST_POSTGRES_URL"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search path is a fresh schema, dropped afterwards."""
    base = os.environ.get(URL_VARIABLE)
    if not base:
        pytest.skip(f"{URL_VARIABLE} is not set (e.g. postgresql://postgres@127.0.0.1:5432/audit)")
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    schema = f"audit_test_{uuid.uuid4().hex[:10]}"
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


def test_postgres_chain_is_append_only_and_idempotent(pg_url: str, audit_keys: KeyRing) -> None:
    store = AuditStore(pg_url)
    try:
        entries = list(sample_entries(120))
        assert store.append(entries[:100]).appended == 100
        again = store.append(entries)
        assert (again.appended, again.duplicates) == (20, 100)
        for statement in (
            "UPDATE audit_records SET body = '{}' WHERE seq = 2",
            "DELETE FROM audit_records WHERE seq = 120",
            "TRUNCATE audit_records",
        ):
            with pytest.raises(DatabaseError, match="append-only"), store.engine.begin() as conn:
                conn.exec_driver_sql(statement)
        report = verify_store(store, CheckpointSet(), audit_keys)
        assert report.ok and report.chains[0].records == 120
    finally:
        store.close()


def test_postgres_concurrent_writers_and_tamper(pg_url: str, audit_keys: KeyRing) -> None:
    AuditStore(pg_url).close()
    entries = list(sample_entries(300))
    errors: list[BaseException] = []

    def write(part: list) -> None:  # type: ignore[type-arg]
        store = AuditStore(pg_url, create=False)
        try:
            for start in range(0, len(part), 10):
                store.append(part[start : start + 10])
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=write, args=(entries[i::3],)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    store = AuditStore(pg_url)
    try:
        assert verify_store(store, CheckpointSet(), audit_keys).ok
        with store.engine.begin() as conn:  # an owner who switches the guard off
            conn.exec_driver_sql(
                "ALTER TABLE audit_records DISABLE TRIGGER audit_records_no_change"
            )
            conn.exec_driver_sql("DELETE FROM audit_records WHERE seq = 150")
        (fault,) = verify_store(store, CheckpointSet(), audit_keys).faults
        assert (fault.kind, fault.seq) == ("deleted", 150)
    finally:
        store.close()


def test_postgres_writer_runs_as_a_select_insert_role(pg_url: str) -> None:
    from loopwise_audit.store import UnguardedStore

    owner = AuditStore(pg_url)  # the owner creates table and guards once
    role = f"audit_writer_{uuid.uuid4().hex[:8]}"
    schema = pg_url.rsplit("%3D", 1)[1]
    with owner.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.exec_driver_sql(f"GRANT SELECT, INSERT ON audit_records TO {role}")
        conn.exec_driver_sql(f"GRANT USAGE ON SEQUENCE audit_records_id_seq TO {role}")
    user = pg_url.split("://", 1)[1].split("@", 1)[0]
    writer_url = pg_url.replace(f"://{user}@", f"://{role}@", 1)
    try:
        writer = AuditStore(writer_url)  # starts without DDL rights
        assert writer.append(list(sample_entries(5))).appended == 5
        with pytest.raises(DatabaseError), writer.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE audit_records SET body = '{}'")
        writer.close()
        with owner.engine.begin() as conn:
            conn.exec_driver_sql(
                "ALTER TABLE audit_records DISABLE TRIGGER audit_records_no_change"
            )
        with pytest.raises(UnguardedStore, match="audit_records_no_change"):
            AuditStore(writer_url)
    finally:
        with owner.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        owner.close()
