"""The shared confluent-kafka worker on a real broker: dead letters, crash safety, draining."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loopwise.events import CallMetadataV1, CallStartedV1, ChannelSpec, encode
from loopwise.kafka.deadletter import DLQ_HEADERS
from tests.support.echo_worker import EchoSettings, build_worker, running_in_thread
from tests.support.kafka_io import (
    Record,
    produce_events,
    produce_raw,
    read_all,
    read_topic,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.kafka


def metadata_event(i: int, call: str | None = None, **extra: object) -> CallMetadataV1:
    return CallMetadataV1(
        tenant_id="acme",
        call_id=call or f"call-{i % 50}",
        occurred_at=datetime.now(UTC),
        metadata={"n": i, **extra},  # type: ignore[dict-item]
    )


@pytest.fixture
def echo_topics(new_topic: Callable[..., str], group_id: str) -> dict[str, str]:
    return {
        "input": new_topic("in"),
        "output": new_topic("out"),
        "dlq": new_topic("dlq"),
        "group": group_id,
    }


def echo_env(bootstrap: str, topics: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LOOPWISE_ECHO_GROUP_ID": topics["group"],
        "LOOPWISE_ECHO_INPUT_TOPICS": json.dumps([topics["input"]]),
        "LOOPWISE_ECHO_OUTPUT_TOPIC": topics["output"],
        "LOOPWISE_ECHO_DEAD_LETTER_TOPIC": topics["dlq"],
        "LOOPWISE_ECHO_OBSERVABILITY__PORT": "0",
        "LOOPWISE_ECHO_BATCH_SIZE": "50",
        **extra,
    }


@pytest.fixture
def running_echo(kafka_bootstrap: str, echo_topics: dict[str, str]) -> Iterator[object]:
    """An echo worker running in a thread of this process, with its probe server."""
    settings = EchoSettings(
        kafka={"bootstrap_servers": kafka_bootstrap},  # type: ignore[arg-type]
        group_id=echo_topics["group"],
        input_topics=[echo_topics["input"]],
        output_topic=echo_topics["output"],
        dead_letter_topic=echo_topics["dlq"],
        observability={"host": "127.0.0.1", "port": 0},  # type: ignore[arg-type]
        max_message_bytes=4096,
    )
    worker = build_worker(settings)
    worker.start_probes()
    with running_in_thread(worker):
        yield worker


def test_bad_input_is_dead_lettered_and_valid_events_flow(
    kafka_bootstrap: str, echo_topics: dict[str, str], running_echo: object
) -> None:
    good = [metadata_event(i, call="call-dlq") for i in range(7)]
    encoded = [encode(e, source="test") for e in good]
    valid = [(k, v, h) for k, v, h, _ in encoded]
    _, _, headers, _ = encoded[0]
    wrong_schema = CallStartedV1(
        tenant_id="acme",
        call_id="call-dlq",
        occurred_at=datetime.now(UTC),
        queue="q",
        region="r",
        channels=[ChannelSpec(index=0, role="agent")],
    )
    _, started_value, started_headers, _ = encode(wrong_schema, source="test")
    metadata_type = [(n, v) for n, v in headers if n != "ce_type"] + [
        ("ce_type", CallMetadataV1.event_type.encode())
    ]
    boom_key, boom_value, boom_headers, _ = encode(
        metadata_event(99, call="call-dlq", explode=True), source="test"
    )
    bad = {
        "InvalidJson": (b"call-dlq", b"{not json", metadata_type),
        # A valid CallStarted body sent as CallMetadata: JSON, wrong schema.
        "SchemaViolation": (b"call-dlq", started_value, metadata_type),
        # CallStarted is a contract event, but not one this worker accepts.
        "UnknownEventType": (b"call-dlq", started_value, started_headers),
        "OversizeMessage": (b"call-dlq", b"{" + b" " * 10_000 + b"}", metadata_type),
        "InvalidUtf8": (b"call-dlq", b'{"metadata": "\xff\xfe"}', metadata_type),
        "Exploded": (boom_key, boom_value, boom_headers),
        "EnvelopeError": (b"call-dlq", valid[0][1], []),
    }
    # Interleave: valid, bad, valid, bad, ... all on one key so order is kept.
    records = []
    for i, item in enumerate(bad.values()):
        records.append(valid[i])
        records.append(item)
    produce_raw(kafka_bootstrap, echo_topics["input"], records)

    dead = read_topic(kafka_bootstrap, echo_topics["dlq"], expect=len(bad), settle_s=1.0)
    outputs = read_topic(kafka_bootstrap, echo_topics["output"], expect=7, settle_s=1.0)

    assert len(outputs) == 7
    echoed = [json.loads(r.value or b"")["metadata"]["n"] for r in outputs]
    assert echoed == list(range(7))

    assert Counter(r.headers["dlq_error_class"].decode() for r in dead) == Counter(list(bad))
    for record in dead:
        for header in DLQ_HEADERS:
            assert header in record.headers, header
        assert record.headers["dlq_original_topic"].decode() == echo_topics["input"]
        assert record.headers["dlq_service"] == b"echo"
        assert record.headers["ce_type"] == b"io.loopwise.deadletter.v1"
        assert record.key == b"call-dlq"
        body = json.loads(record.value or b"")
        assert body["original_offset"] == int(record.headers["dlq_original_offset"])
        assert body["reason"]
    stages = {r.headers["dlq_error_class"].decode(): r.headers["dlq_stage"].decode() for r in dead}
    assert stages["Exploded"] == "handle"
    assert stages["SchemaViolation"] == "validate"
    assert stages["InvalidJson"] == "decode"
    worker = running_echo
    assert worker.healthy()  # type: ignore[attr-defined]


def test_probes_and_metrics(
    kafka_bootstrap: str, echo_topics: dict[str, str], running_echo: object
) -> None:
    produce_events(kafka_bootstrap, echo_topics["input"], [metadata_event(i) for i in range(20)])
    read_topic(kafka_bootstrap, echo_topics["output"], expect=20)
    port = running_echo._probes.port  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{port}"
    assert wait_for(lambda: urllib.request.urlopen(f"{base}/readyz").status == 200, 30)
    assert urllib.request.urlopen(f"{base}/healthz").status == 200
    text = urllib.request.urlopen(f"{base}/metrics").read().decode()
    consumed = [
        line
        for line in text.splitlines()
        if line.startswith("loopwise_events_consumed_total")
        and echo_topics["input"] in line
        and 'outcome="processed"' in line
    ]
    assert consumed and float(consumed[0].rsplit(" ", 1)[1]) >= 20
    assert "loopwise_handler_duration_seconds_bucket" in text
    assert "loopwise_last_processed_timestamp_seconds" in text


def start_echo_process(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.echo_worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_sigkill_mid_run_loses_nothing_and_redeliveries_keep_ids(
    kafka_bootstrap: str, echo_topics: dict[str, str], record_property: Callable[..., None]
) -> None:
    n = 3000
    ids = produce_events(
        kafka_bootstrap, echo_topics["input"], [metadata_event(i) for i in range(n)]
    )
    env = echo_env(kafka_bootstrap, echo_topics, LOOPWISE_ECHO_DELAY_S="0.002")

    first = start_echo_process(env)
    seen = read_topic(kafka_bootstrap, echo_topics["output"], expect=n // 3, timeout_s=120)
    assert len(seen) >= n // 3, "worker made no progress before the kill"
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert first.returncode == -signal.SIGKILL

    second = start_echo_process(env)
    outputs: list[Record] = []

    def every_input_reflected() -> bool:
        # Redeliveries add outputs, so count distinct inputs, not records.
        outputs[:] = read_all(kafka_bootstrap, echo_topics["output"])
        return {json.loads(r.value or b"")["metadata"]["echo_of"] for r in outputs} >= set(ids)

    try:
        wait_for(every_input_reflected, timeout_s=180, interval_s=1.0)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    echoed = Counter(json.loads(r.value or b"")["metadata"]["echo_of"] for r in outputs)
    assert set(echoed) == set(ids), f"{len(set(ids) - set(echoed))} inputs never reflected"
    redelivered = sum(c - 1 for c in echoed.values())
    # A redelivered input yields the same output event id, so downstream dedup removes it.
    out_ids = Counter(r.headers["ce_id"] for r in outputs)
    assert len(out_ids) == n
    print(f"\nSIGKILL run: {n} inputs, {len(outputs)} outputs, {redelivered} redelivered")
    record_property("redelivered", redelivered)
    assert second.returncode == 0


def test_sigterm_drains_commits_and_restarts_without_duplicates(
    kafka_bootstrap: str, echo_topics: dict[str, str]
) -> None:
    n = 1500
    produce_events(kafka_bootstrap, echo_topics["input"], [metadata_event(i) for i in range(n)])
    env = echo_env(kafka_bootstrap, echo_topics, LOOPWISE_ECHO_DELAY_S="0.002")
    first = start_echo_process(env)
    read_topic(kafka_bootstrap, echo_topics["output"], expect=n // 4, timeout_s=120)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr.decode()[-2000:]

    second = start_echo_process(env)
    try:
        outputs = read_topic(
            kafka_bootstrap, echo_topics["output"], expect=n, timeout_s=180, settle_s=3.0
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    echoed = Counter(json.loads(r.value or b"")["metadata"]["echo_of"] for r in outputs)
    assert len(echoed) == n
    assert max(echoed.values()) == 1, "a graceful stop must not cause redelivery"
