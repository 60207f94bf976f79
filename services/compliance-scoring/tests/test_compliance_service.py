"""The compliance service through the real broker: findings, dead letters, state across a crash."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from loopwise.events import TenantEvent, encode

pytestmark = pytest.mark.kafka


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """The `loopwise-compliance run` process on uuid topics of the session broker."""

    def __init__(self, bootstrap: str, new_topic: Callable[..., str], tmp: Path, root: Path):
        self.bootstrap = bootstrap
        self.calls, self.transcripts = new_topic("calls", 3), new_topic("transcripts", 3)
        self.output, self.dlq = new_topic("compliance", 3), new_topic("dlq", 1)
        self.tmp = tmp
        self.root = root
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LOOPWISE_COMPLIANCE_GROUP_ID": f"test-compliance-{uuid.uuid4().hex[:10]}",
            "LOOPWISE_COMPLIANCE_CALLS_TOPIC": self.calls,
            "LOOPWISE_COMPLIANCE_TRANSCRIPTS_TOPIC": self.transcripts,
            "LOOPWISE_COMPLIANCE_OUTPUT_TOPIC": self.output,
            "LOOPWISE_COMPLIANCE_DEAD_LETTER_TOPIC": self.dlq,
            "LOOPWISE_COMPLIANCE_RULE_PACKS": str(root / "deploy" / "rule-packs"),
            "LOOPWISE_COMPLIANCE_OBSERVABILITY__LOG_LEVEL": "INFO",
            # A killed instance leaves the group after this, not after the 60 s default.
            "LOOPWISE_COMPLIANCE_SESSION_TIMEOUT_S": "6",
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        self.port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "loopwise_compliance", "run"],
            cwd=self.root,
            env={
                **self.env,
                "LOOPWISE_COMPLIANCE_OBSERVABILITY__PORT": str(self.port),
            },
            stdout=(self.tmp / f"run-{len(self.procs)}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def send(self, topic: str, events: list[tuple[str, TenantEvent]]) -> None:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True})
        for event_id, event in events:
            key, value, headers, _ = encode(event, source="test", event_id=event_id)
            producer.produce(topic, key=key, value=value, headers=headers)  # type: ignore[arg-type]
        assert producer.flush(30) == 0

    def raw(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap})
        producer.produce(topic, key=key, value=value, headers=headers)  # type: ignore[arg-type]
        assert producer.flush(30) == 0

    def read(
        self, topic: str, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 180
    ) -> list[dict[str, Any]]:
        """Read the topic from the start until `done(records)` holds; fail the test on timeout."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        try:
            while not done(records):
                exited = self.procs and self.procs[-1].poll() is not None
                if time.monotonic() > deadline or exited:
                    logs = "\n".join(
                        f"--- {p.name}\n" + p.read_text(errors="replace")[-6000:]
                        for p in sorted(self.tmp.glob("*.log"))
                    )
                    why = "service exited" if exited else "timed out"
                    seen = [
                        (r["headers"]["ce_type"][-10:], r["body"].get("segment_id"))
                        for r in records
                    ]
                    pytest.fail(f"{why} on {topic} with {len(records)} records {seen}\n{logs}")
                msg = consumer.poll(0.2)
                if msg is None or msg.error():
                    continue
                headers = {k: v.decode() for k, v in msg.headers() or [] if v is not None}
                records.append(
                    {"headers": headers, "key": msg.key(), "body": json.loads(msg.value() or b"")}
                )
        finally:
            consumer.close()
        return records

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(30)


@pytest.fixture
def service(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path, kit: Any
) -> Iterator[Service]:
    svc = Service(kafka_bootstrap, new_topic, tmp_path, kit.root)
    yield svc
    svc.stop()


def segments_of(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Segment events by segment id (several when redelivered)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["headers"]["ce_type"] == "io.loopwise.compliance.segment.v1":
            out.setdefault(r["body"]["segment_id"], []).append(r)
    return out


def calls_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["headers"]["ce_type"] == "io.loopwise.compliance.call.v1"]


def scripted_call(kit: Any, call_id: str) -> tuple[Any, list[tuple[str, TenantEvent]]]:
    """CallStarted, then agent and customer segments with a late recording notice."""
    script = kit.script(call_id, queue="billing")
    card = "Fine, my card number is [CARD_NUMBER], now sort it out or I call my lawyer."
    events = [
        script.started(),
        script.say("agent", 2.0, "Thanks for calling Acme billing, how can I help?"),
        script.say("customer", 6.5, "I've been waiting forever, this is ridiculous."),
        script.say("agent", 11.0, "Sorry. Can I take your date of birth and your postcode?"),
        script.say("customer", 15.0, card, redactions=[kit.card_span(card)]),
        script.say("agent", 41.0, "Before we go on, this call may be recorded for training."),
    ]
    return script, events


EXPECTED_SEGMENT_RULES = {
    1: set(),
    2: {"escalation-frustration"},
    3: set(),
    4: {"card-number-spoken", "escalation-legal-regulator"},
    5: set(),
}


def check_results(call_id: str, records: list[dict[str, Any]]) -> None:
    by_segment = segments_of(records)
    for index, rules in EXPECTED_SEGMENT_RULES.items():
        copies = by_segment[f"{call_id}-seg-{index:03d}"]
        # A redelivered segment is scored again under the same event id, never differently.
        assert len({c["headers"]["ce_id"] for c in copies}) == 1
        assert len({json.dumps(c["body"], sort_keys=True) for c in copies}) == 1
        assert {f["rule_id"] for f in copies[0]["body"]["findings"]} == rules, index
    card = by_segment[f"{call_id}-seg-004"][0]["body"]["findings"]
    (card_finding,) = [f for f in card if f["rule_id"] == "card-number-spoken"]
    assert card_finding["severity"] == "critical"
    assert card_finding["evidence"]["text"] == "[CARD_NUMBER]"
    (call,) = {r["headers"]["ce_id"]: r for r in calls_of(records)}.values()
    body = call["body"]
    assert body["producer"] == {"name": "default", "version": "1.0.0"}
    assert body["segments_checked"] == 5
    (late,) = body["findings"]
    assert (late["rule_id"], late["category"], late["severity"]) == (
        "recording-notice",
        "disclosure",
        "medium",
    )
    assert late["segment_id"] == f"{call_id}-seg-005"
    assert "deadline 32" in late["explanation"]


def test_scripted_call_gives_segment_and_call_findings_and_bad_input_is_dead_lettered(
    service: Service, kit: Any
) -> None:
    script, events = scripted_call(kit, "call-live")
    service.start()
    service.send(service.calls, events[:1])
    service.send(service.transcripts, events[1:])
    service.raw(service.transcripts, b"call-live", b"{not json", [])
    bad_id, bad_event = script.say("customer", 50.0, "hello")
    _, value, headers, _ = encode(bad_event, source="test", event_id=bad_id)
    broken = json.loads(value)
    broken["confidence"] = 7.5
    service.raw(service.transcripts, b"call-live", json.dumps(broken).encode(), headers)

    service.read(service.output, lambda rs: len(segments_of(rs)) == 5)
    service.send(service.calls, [script.ended()])
    records = service.read(service.output, lambda rs: len(calls_of(rs)) == 1)
    check_results("call-live", records)

    dead = service.read(service.dlq, lambda rs: len(rs) == 2)
    assert {d["headers"]["dlq_service"] for d in dead} == {"compliance-scoring"}
    assert {d["headers"]["dlq_error_class"] for d in dead} == {"EnvelopeError", "SchemaViolation"}


def test_call_state_survives_a_kill_mid_call(service: Service, kit: Any) -> None:
    script, events = scripted_call(kit, "call-crash")
    first = service.start()
    others = [kit.script(f"other-{i}") for i in range(8)]
    service.send(service.calls, [o.started() for o in others])
    service.send(service.transcripts, [o.say("agent", 1.0, "hello") for o in others])
    service.send(service.calls, events[:1])
    service.send(service.transcripts, events[1:4])  # up to the security questions
    service.read(service.output, lambda rs: len(segments_of(rs)) == 11)
    first.send_signal(signal.SIGKILL)  # no clean shutdown: offsets may not be committed
    first.wait(30)

    service.send(service.transcripts, events[4:])
    service.start()  # one replacement, no retries: it must restore the state and go on
    service.read(service.output, lambda rs: len(segments_of(rs)) == 13)
    service.send(service.calls, [script.ended()])
    records = service.read(service.output, lambda rs: len(calls_of(rs)) >= 1)
    # Without the state from before the kill, the first agent speech would be at 41 s (notice on
    # time) and segments_checked 2; with redeliveries counted twice it would be more than 5.
    check_results("call-crash", records)
