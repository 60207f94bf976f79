"""The writer verifies its own chains against the checkpoint files and exports the result
(loopwise_audit_verification_faulty_chains, loopwise_audit_last_verification_timestamp_seconds),
which the LoopwiseAuditVerificationFailed / ...Stale alerts watch."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import REGISTRY

from loopwise_audit.checkpoints import Checkpointer, KeyRing
from loopwise_audit.config import AuditWorkerSettings
from loopwise_audit.samples import sample_entries
from loopwise_audit.store import AuditStore
from loopwise_audit.worker import AuditService

KEY = "selfcheck-test-key-0123456789abcdef-0123"


def gauge(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


def test_writer_verifies_its_chains_and_exports_faults(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = AuditStore(url)
    checkpointer = Checkpointer(
        directory=tmp_path / "checkpoints",
        keys=KeyRing("audit-1", {"audit-1": KEY.encode()}),
        every_records=50,
        every_s=3600,
    )
    checkpointer.note(store.append(list(sample_entries(200, "acme"))).heads.values())
    checkpointer.note(store.append(list(sample_entries(20, "globex"))).heads.values())
    checkpointer.run_due(force=True)
    store.close()
    settings = AuditWorkerSettings(
        kafka={"bootstrap_servers": "127.0.0.1:1"},  # type: ignore[arg-type]  # never contacted
        database_url=url,
        checkpoint_dir=tmp_path / "checkpoints",
        hmac_key=KEY,  # type: ignore[arg-type]
        verify_every_s=0.2,
    )
    service = AuditService(settings)
    try:
        assert service.verify() == 0
        assert gauge("loopwise_audit_verification_faulty_chains") == 0
        first = gauge("loopwise_audit_last_verification_timestamp_seconds")
        assert first > 0

        with service.store.engine.begin() as conn:  # someone with the database edits a record
            conn.exec_driver_sql("DROP TRIGGER audit_records_no_update")
            conn.exec_driver_sql(
                "UPDATE audit_records SET body = replace(body, '\"', '''') "
                "WHERE tenant_id = 'acme' AND seq = 17"
            )
        # The periodic verifier (every 0.2 s here) finds it without being asked.
        verifier = service._start_verifier()
        assert verifier is not None
        deadline = time.monotonic() + 30
        while gauge("loopwise_audit_verification_faulty_chains") != 1:
            assert time.monotonic() < deadline, "the periodic verification never ran"
            time.sleep(0.05)
        assert gauge("loopwise_audit_last_verification_timestamp_seconds") > first
        service._stop_timer.set()
        verifier.join(10)
        assert not verifier.is_alive()
    finally:
        service._stop_timer.set()
        service.store.close()
