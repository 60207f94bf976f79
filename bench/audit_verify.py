"""Audit trail speed: describing events, appending records, verifying chains (SQLite, optional PG).

    uv run python bench/audit_verify.py [--records 10000] [--large 100000]
    LOOPWISE_AUDIT_BENCH_POSTGRES_URL=postgresql://... uv run python bench/audit_verify.py

Figures printed (medians of repeated runs where cheap):
  describe      events turned into audit facts per second (pure handler)
  append        records per second appended and committed, at batch sizes 1, 50, 500 and one
                transaction for everything (the worker commits once per consumed batch,
                default 500; synchronous=FULL, so every commit reaches the disk)
  verify        seconds to walk N records against their checkpoints (goal: 10,000 in < 1 s)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from loopwise_audit.checkpoints import Checkpointer, KeyRing, load_checkpoints
from loopwise_audit.handler import AuditEntry
from loopwise_audit.samples import sample_entries
from loopwise_audit.store import AuditStore
from loopwise_audit.verify import verify_store

KEYS = KeyRing("bench", {"bench": b"bench-key-0123456789abcdef-0123456789"})


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def append_rate(store: AuditStore, entries: list[AuditEntry], batch: int) -> float:
    def run() -> None:
        for start in range(0, len(entries), batch):
            store.append(entries[start : start + batch])

    return len(entries) / timed(run)


def build(store: AuditStore, entries: list[AuditEntry], cp_dir: Path) -> None:
    checkpointer = Checkpointer(directory=cp_dir, keys=KEYS, every_records=1000, every_s=3600)
    for start in range(0, len(entries), 5000):
        checkpointer.note(store.append(entries[start : start + 5000]).heads.values())
        checkpointer.run_due()
    checkpointer.run_due(force=True)


def verify_seconds(store: AuditStore, cp_dir: Path, repeats: int) -> tuple[float, int]:
    checkpoints = load_checkpoints(cp_dir)
    times, records = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        report = verify_store(store, checkpoints, KEYS)
        times.append(time.perf_counter() - start)
        assert report.ok, report.faults
        records = sum(c.records for c in report.chains)
    return statistics.median(times), records


def bench_backend(name: str, url_for: Callable[[str], str], n: int, large: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    entries = list(sample_entries(max(n, 5000), tenant_id=f"t{uuid.uuid4().hex[:6]}"))
    for batch, count in ((1, 300), (50, 2000), (500, 5000)):
        store = AuditStore(url_for(f"append_{batch}"))
        rate = append_rate(store, list(sample_entries(count, f"b{batch}")), batch)
        print(f"{name:10} append  batch {batch:>5}: {rate:>9,.0f} records/s  ({count} records)")
        store.close()
    store = AuditStore(url_for("bulk"))
    rate = len(entries[:n]) / timed(lambda: store.append(entries[:n]))
    print(f"{name:10} append  one txn    : {rate:>9,.0f} records/s  ({n} records)")
    store.close()

    for size in (n, large):
        if size <= 0:
            continue
        store = AuditStore(url_for(f"verify_{size}"))
        build(store, list(sample_entries(size, "acme")), work / f"cp_{size}")
        seconds, records = verify_seconds(store, work / f"cp_{size}", 5 if size <= n else 3)
        print(
            f"{name:10} verify {records:>8,} records: {seconds:6.3f} s "
            f"({records / seconds:,.0f} records/s)"
        )
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )

    sample = list(sample_entries(16))
    seconds = timed(lambda: list(sample_entries(5000)))
    print(f"describe: {5000 / seconds:,.0f} events/s ({len(sample)} event types per call)")

    tmp = Path(tempfile.mkdtemp(prefix="audit-bench-db-"))
    bench_backend("sqlite", lambda label: f"sqlite:///{tmp / label}.db", args.records, args.large)

    pg = os.environ.get("LOOPWISE_AUDIT_BENCH_POSTGRES_URL")
    if pg:
        from sqlalchemy import create_engine, text

        admin = create_engine(pg.replace("postgresql://", "postgresql+psycopg://", 1))
        schemas = []

        def pg_url(label: str) -> str:
            schema = f"audit_bench_{label}_{uuid.uuid4().hex[:6]}"
            with admin.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA {schema}"))
            schemas.append(schema)
            sep = "&" if "?" in pg else "?"
            return f"{pg}{sep}options=-csearch_path%3D{schema}"

        try:
            bench_backend("postgresql", pg_url, args.records, args.large)
        finally:
            with admin.begin() as conn:
                for schema in schemas:
                    conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()
    else:
        print("postgresql: skipped (set LOOPWISE_AUDIT_BENCH_POSTGRES_URL to include it)")


if __name__ == "__main__":
    main()
