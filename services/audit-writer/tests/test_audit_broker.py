"""The audit writer on the real broker: every example event becomes one record, replay adds none."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from loopwise.events import AuditCheckpointV1, TenantEvent, encode
from loopwise.events.examples import example_events
from loopwise.topics import catalogue
from loopwise_audit.checkpoints import KeyRing, load_checkpoints
from loopwise_audit.config import AuditWorkerSettings, pipeline_topics
from loopwise_audit.store import AuditStore
from loopwise_audit.verify import verify_store
from tests.support.kafka_io import produce_raw, read_topic, wait_for

pytestmark = pytest.mark.kafka
KEY = "broker-test-key-0123456789abcdef-0123"


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> dict[str, str]:
    """A fresh topic for each pipeline topic of the catalogue, plus checkpoints and dead letters."""
    mapping = {name: new_topic("audit-in") for name in pipeline_topics()}
    mapping["checkpoints"] = new_topic("audit-cp", partitions=1)
    mapping["dlq"] = new_topic("audit-dlq", partitions=1)
    return mapping


def topic_of(event: TenantEvent, topics: dict[str, str]) -> str:
    for spec in catalogue().topics:
        if event.event_type in spec.events:
            return topics[spec.name]
    raise AssertionError(event.event_type)


def settings_for(
    bootstrap: str, topics: dict[str, str], group: str, tmp_path: Path
) -> AuditWorkerSettings:
    return AuditWorkerSettings(
        kafka={"bootstrap_servers": bootstrap},  # type: ignore[arg-type]
        group_id=group,
        input_topics=[topics[name] for name in pipeline_topics()],
        dead_letter_topic=topics["dlq"],
        checkpoint_topic=topics["checkpoints"],
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
        checkpoint_dir=tmp_path / "checkpoints",
        hmac_key=KEY,  # type: ignore[arg-type]
        checkpoint_every_records=10,
        checkpoint_every_s=0.5,
        batch_size=20,
        poll_timeout_s=0.2,
        observability={"host": "127.0.0.1", "port": 0},  # type: ignore[arg-type]
    )


@contextmanager
def running(settings: AuditWorkerSettings) -> Iterator[Any]:
    from loopwise_audit.worker import AuditService

    service = AuditService(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop()
        thread.join(60)
        assert not thread.is_alive(), "audit writer did not stop"


def duplicates_skipped() -> float:
    return REGISTRY.get_sample_value("loopwise_audit_duplicates_skipped_total") or 0.0


def count(url: str) -> int:
    store = AuditStore(url)
    try:
        with store.reader() as conn:
            return store.count(conn)
    finally:
        store.close()


def test_every_event_is_recorded_once_and_replay_adds_nothing(
    kafka_bootstrap: str,
    topics: dict[str, str],
    group_id: str,
    tmp_path: Path,
) -> None:
    events = [
        e
        for tenant in ("acme", "globex")
        for call in ("call-a", "call-b")
        for e in example_events(call_id=call, tenant_id=tenant)
        if not isinstance(e, AuditCheckpointV1)
    ]
    encoded = [(topic_of(e, topics), encode(e, source="cx-test")) for e in events]
    by_topic: dict[str, list[Any]] = {}
    for topic, (key, value, headers, _) in encoded:
        by_topic.setdefault(topic, []).append((key, value, headers))
    for topic, records in by_topic.items():
        # Every record twice, same ids: a producer retry the writer must not record again.
        produce_raw(kafka_bootstrap, topic, records + records)
    calls_topic = topics[catalogue().by_label("cx.calls").name]
    produce_raw(kafka_bootstrap, calls_topic, [(b"call-a", b"{broken", encoded[0][1][2])])
    settings = settings_for(kafka_bootstrap, topics, group_id, tmp_path)
    url = settings.database_url

    with running(settings):
        assert wait_for(lambda: count(url) >= len(events), 90), f"{count(url)} of {len(events)}"
        dead = read_topic(kafka_bootstrap, topics["dlq"], expect=1)
        published = read_topic(kafka_bootstrap, topics["checkpoints"], expect=2, timeout_s=30)
    assert count(url) == len(events)

    store = AuditStore(url)
    try:
        with store.reader() as conn:
            records = {
                r.event_id: r.facts() for t in ("acme", "globex") for r in store.records(conn, t)
            }
        assert set(records) == {env.id for _, (_, _, _, env) in encoded}
        for _, (_, _, _, env) in encoded:
            facts = records[env.id]
            assert facts["event_type"] == env.type
            assert facts["tenant_id"] == env.tenant_id
            if env.call_id is not None:  # a console audit event is keyed by tenant, no call id
                assert facts["call_id"] == env.call_id
            for field in ("action", "outcome", "occurred_at", "recorded_at", "origin", "actor"):
                assert facts[field], (field, facts)
            assert facts["origin"]["topic"] in topics.values()
            by_person = ("io.loopwise.review.decision", "io.loopwise.console.audit")
            expected_actor = "user" if env.type.startswith(by_person) else "service"
            assert facts["actor"]["type"] == expected_actor
        keys = KeyRing("audit-1", {"audit-1": KEY.encode()})
        cps = load_checkpoints(tmp_path / "checkpoints")
        report = verify_store(store, cps, keys)
        assert report.ok, report.faults
        assert {c.tenant_id for c in report.chains} == {"acme", "globex"}
        assert all(c.checkpoints >= 1 for c in report.chains)

        # Checkpoints on the topic are the signed heads that the files hold.
        on_topic = [AuditCheckpointV1.model_validate_json(r.value or b"") for r in published]
        assert {c.tenant_id for c in on_topic} == {"acme", "globex"}
        assert all(keys.valid(c) for c in on_topic)
        in_files = {
            (c.checkpoint.tenant_id, c.checkpoint.sequence)
            for v in cps.by_tenant.values()
            for c in v
        }
        assert {(c.tenant_id, c.sequence) for c in on_topic} <= in_files

        # The broken message was dead-lettered without its payload.
        body = json.loads(dead[0].value or b"")
        assert body["payload_b64"] is None and body["error_class"] == "InvalidJson"

        # Replaying every topic from the start with a new group adds no record.
        before = duplicates_skipped()
        replay = settings.model_copy(update={"group_id": f"{group_id}-replay"})
        with running(replay):
            assert wait_for(lambda: duplicates_skipped() - before >= len(events) * 2, 90)
        assert count(url) == len(events)
        assert verify_store(store, load_checkpoints(tmp_path / "checkpoints"), keys).ok
    finally:
        store.close()


def test_failed_commit_rewinds_the_batch_and_loses_nothing(
    kafka_bootstrap: str,
    topics: dict[str, str],
    group_id: str,
    tmp_path: Path,
) -> None:
    from loopwise_audit.worker import AuditService

    events = [e for e in example_events(call_id="call-r") if not isinstance(e, AuditCheckpointV1)]
    for event in events:
        key, value, headers, _ = encode(event, source="cx-test")
        produce_raw(kafka_bootstrap, topic_of(event, topics), [(key, value, headers)])
    settings = settings_for(kafka_bootstrap, topics, group_id, tmp_path)
    service = AuditService(settings)
    real_append = service.store.append
    failures = []

    def failing_once(entries: Any, **kw: Any) -> Any:
        if not failures:
            failures.append(len(entries))
            raise OSError("disk went away")  # the database refused the batch
        return real_append(entries, **kw)

    service.store.append = failing_once  # type: ignore[method-assign]
    retries = (
        REGISTRY.get_sample_value("loopwise_batch_retries_total", {"service": "audit-writer"})
        or 0.0
    )
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: count(settings.database_url) >= len(events), 60)
    finally:
        service.stop()
        thread.join(60)
    assert failures, "the injected failure never happened"
    assert count(settings.database_url) == len(events)
    after = REGISTRY.get_sample_value("loopwise_batch_retries_total", {"service": "audit-writer"})
    assert after is not None and after > retries


def test_console_command_runs_drains_on_sigterm_and_signs_the_head(
    kafka_bootstrap: str,
    topics: dict[str, str],
    group_id: str,
    tmp_path: Path,
) -> None:
    import os
    import signal
    import subprocess
    import sys

    events = [e for e in example_events(call_id="call-p") if not isinstance(e, AuditCheckpointV1)]
    for event in events:
        key, value, headers, _ = encode(event, source="cx-test")
        produce_raw(kafka_bootstrap, topic_of(event, topics), [(key, value, headers)])
    db = tmp_path / "audit.db"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LOOPWISE_AUDIT_GROUP_ID": group_id,
        "LOOPWISE_AUDIT_INPUT_TOPICS": json.dumps([topics[n] for n in pipeline_topics()]),
        "LOOPWISE_AUDIT_DEAD_LETTER_TOPIC": topics["dlq"],
        "LOOPWISE_AUDIT_CHECKPOINT_TOPIC": topics["checkpoints"],
        "LOOPWISE_AUDIT_DATABASE_URL": f"sqlite:///{db}",
        "LOOPWISE_AUDIT_CHECKPOINT_DIR": str(tmp_path / "cp"),
        "LOOPWISE_AUDIT_HMAC_KEY": KEY,
        "LOOPWISE_AUDIT_CHECKPOINT_EVERY_RECORDS": "1000",
        "LOOPWISE_AUDIT_CHECKPOINT_EVERY_S": "3600",
        "LOOPWISE_AUDIT_OBSERVABILITY__PORT": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopwise_audit", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for(lambda: db.exists() and count(f"sqlite:///{db}") >= len(events), 60)
        assert not (tmp_path / "cp").exists() or not list((tmp_path / "cp").iterdir())
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    logs = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    port = next(e["port"] for e in logs if e.get("event") == "probes_listening")
    assert port > 0
    assert any(e.get("event") == "worker_stopped" for e in logs)
    # Neither N records nor T seconds were reached: the drain signed the head anyway.
    (cp_file,) = (tmp_path / "cp").iterdir()
    (line,) = cp_file.read_text().splitlines()
    cp = AuditCheckpointV1.model_validate_json(line)
    assert (cp.tenant_id, cp.sequence) == ("acme", len(events))
    assert KeyRing("audit-1", {"audit-1": KEY.encode()}).valid(cp)


def test_topic_checkpoints_catch_what_doctored_files_hide(
    kafka_bootstrap: str,
    topics: dict[str, str],
    group_id: str,
    tmp_path: Path,
) -> None:
    import os
    import sqlite3
    import subprocess
    import sys

    events = [e for e in example_events(call_id="call-t") if not isinstance(e, AuditCheckpointV1)]
    for event in events:
        key, value, headers, _ = encode(event, source="cx-test")
        produce_raw(kafka_bootstrap, topic_of(event, topics), [(key, value, headers)])
    settings = settings_for(kafka_bootstrap, topics, group_id, tmp_path)
    with running(settings):
        assert wait_for(lambda: count(settings.database_url) >= len(events), 60)
    head = len(events)
    # The attacker owns the database host and the checkpoint directory, not the broker:
    # cut the trail after record 8 and the checkpoint file to match.
    db = sqlite3.connect(tmp_path / "audit.db")
    db.execute("DROP TRIGGER audit_records_no_delete")
    db.execute("DELETE FROM audit_records WHERE seq > 8")
    db.commit()
    db.close()
    (cp_file,) = (tmp_path / "checkpoints").iterdir()
    kept = [
        line
        for line in cp_file.read_text().splitlines()
        if AuditCheckpointV1.model_validate_json(line).sequence <= 8
    ]
    cp_file.write_text("".join(f"{line}\n" for line in kept))

    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LOOPWISE_AUDIT_DATABASE_URL": settings.database_url,
        "LOOPWISE_AUDIT_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "LOOPWISE_AUDIT_CHECKPOINT_TOPIC": topics["checkpoints"],
        "LOOPWISE_AUDIT_HMAC_KEY": KEY,
    }

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "loopwise_audit", "verify", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    fooled = verify()
    assert fooled.returncode == 0, fooled.stdout  # the files alone agree with the cut trail
    caught = verify("--topic")
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert "acme: truncated at seq 9" in caught.stdout
    assert f"signed record {head}" in caught.stdout


def test_batch_command_exits_once_caught_up(
    kafka_bootstrap: str,
    topics: dict[str, str],
    group_id: str,
    tmp_path: Path,
) -> None:
    import os
    import subprocess
    import sys

    events = [e for e in example_events(call_id="call-b") if not isinstance(e, AuditCheckpointV1)]
    for event in events:
        key, value, headers, _ = encode(event, source="cx-test")
        produce_raw(kafka_bootstrap, topic_of(event, topics), [(key, value, headers)])
    db = tmp_path / "audit.db"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LOOPWISE_AUDIT_GROUP_ID": group_id,
        "LOOPWISE_AUDIT_INPUT_TOPICS": json.dumps([topics[n] for n in pipeline_topics()]),
        "LOOPWISE_AUDIT_DEAD_LETTER_TOPIC": topics["dlq"],
        "LOOPWISE_AUDIT_CHECKPOINT_TOPIC": topics["checkpoints"],
        "LOOPWISE_AUDIT_DATABASE_URL": f"sqlite:///{db}",
        "LOOPWISE_AUDIT_CHECKPOINT_DIR": str(tmp_path / "cp"),
        "LOOPWISE_AUDIT_HMAC_KEY": KEY,
        "LOOPWISE_AUDIT_OBSERVABILITY__LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "loopwise_audit", "batch", "--idle-s", "2"]
    first = subprocess.run(
        [*command, "--timeout-s", "90"], env=env, capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"consumed {len(events)} events" in first.stdout
    assert count(f"sqlite:///{db}") == len(events)
    # Run again: the group's offsets were committed, so nothing is read twice.
    again = subprocess.run(
        [*command, "--timeout-s", "60"], env=env, capture_output=True, text=True, timeout=90
    )
    assert again.returncode == 0 and "consumed 0 events" in again.stdout
    assert count(f"sqlite:///{db}") == len(events)
