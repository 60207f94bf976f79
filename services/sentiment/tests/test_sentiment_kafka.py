"""The sentiment service on a real broker: scores out, call sentiment at the end, dead letters,
and per-call state that survives a SIGKILL and a restart without double counting."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import Consumer

from loopwise.events import CallSentimentV1, SegmentSentimentV1, TenantEvent, encode
from loopwise_sentiment.config import SentimentSettings
from loopwise_sentiment.worker import build_worker
from tests.support.kafka_io import Record, produce_events, produce_raw, read_topic

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.kafka


def _load_events() -> Any:
    """The shared event builders next to this file (tests here are not a package)."""
    if "sentiment_events" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "sentiment_events", Path(__file__).with_name("sentiment_events.py")
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["sentiment_events"] = module
        spec.loader.exec_module(module)
    return sys.modules["sentiment_events"]


ev = _load_events()


def read_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[tuple[str, dict[str, Any], Record]]], bool],
    timeout_s: float = 90.0,
) -> list[tuple[str, dict[str, Any], Record]]:
    """Read a topic from the start until `done` holds for what was read (or time runs out)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not done(decode(records)):
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            headers = cast(list[tuple[str, bytes]], msg.headers() or [])
            records.append(
                Record(
                    msg.topic() or "",
                    msg.partition() or 0,
                    msg.offset() or 0,
                    msg.key(),
                    msg.value(),
                    dict(headers),
                )
            )
    finally:
        consumer.close()
    return decode(records)


def count(kind: type[TenantEvent], reason: str | None = None) -> Callable[..., int]:
    """Counter of decoded outputs of one event type (and call-sentiment reason)."""

    def of(outputs: list[tuple[str, dict[str, Any], Record]]) -> int:
        return sum(
            1
            for t, b, _ in outputs
            if t == kind.event_type and (reason is None or b.get("reason") == reason)
        )

    return of


def decode(records: list[Record]) -> list[tuple[str, dict[str, Any], Record]]:
    """(ce_type, body, record) of each output record."""
    return [(r.headers["ce_type"].decode(), json.loads(r.value or b"{}"), r) for r in records]


@pytest.fixture
def topics(new_topic: Callable[..., str], group_id: str, tmp_path: Path) -> dict[str, str]:
    return {
        "segments": new_topic("transcripts"),
        "calls": new_topic("calls"),
        "out": new_topic("sentiment"),
        "dlq": new_topic("dlq"),
        "group": group_id,
        "state": str(tmp_path / "state.sqlite3"),
    }


def env_for(bootstrap: str, topics: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LOOPWISE_SENTIMENT_GROUP_ID": topics["group"],
        "LOOPWISE_SENTIMENT_INPUT_TOPICS": json.dumps([topics["segments"], topics["calls"]]),
        "LOOPWISE_SENTIMENT_OUTPUT_TOPIC": topics["out"],
        "LOOPWISE_SENTIMENT_DEAD_LETTER_TOPIC": topics["dlq"],
        "LOOPWISE_SENTIMENT_STATE_PATH": topics["state"],
        "LOOPWISE_SENTIMENT_OBSERVABILITY__PORT": "0",
        "LOOPWISE_SENTIMENT_BATCH_SIZE": "4",
    }


@pytest.fixture
def running(kafka_bootstrap: str, topics: dict[str, str]) -> Iterator[None]:
    """The service's worker in a thread of this process."""
    settings = SentimentSettings(
        kafka={"bootstrap_servers": kafka_bootstrap},  # type: ignore[arg-type]
        group_id=topics["group"],
        input_topics=[topics["segments"], topics["calls"]],
        output_topic=topics["out"],
        dead_letter_topic=topics["dlq"],
        state_path=Path(topics["state"]),
        observability={"host": "127.0.0.1", "port": 0},  # type: ignore[arg-type]
    )
    worker, store = build_worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield
    worker.stop()
    thread.join(60)
    store.close()
    assert not thread.is_alive()


def test_scripted_angry_call_through_the_broker(
    kafka_bootstrap: str, topics: dict[str, str], running: None
) -> None:
    segments = [ev.segment("call-k1", i, t, s) for i, (s, t) in enumerate(ev.ANGRY_CALL)]
    seg_ids = produce_events(kafka_bootstrap, topics["segments"], segments)
    n_scored = count(SegmentSentimentV1)
    first = read_until(kafka_bootstrap, topics["out"], lambda o: n_scored(o) >= len(segments))
    scored = [b for t, b, _ in first if t == SegmentSentimentV1.event_type]
    assert len(scored) == len(segments)
    assert sorted(b["derived_from"][0] for b in scored) == sorted(seg_ids)
    by_segment = {b["segment_id"]: b for b in scored}
    assert by_segment["call-k1-seg-0004"]["label"] == "negative"
    assert (
        by_segment["call-k1-seg-0006"]["confidence"] < by_segment["call-k1-seg-0004"]["confidence"]
    )
    assert all(b["producer"]["name"] == "vader-ngram" for b in scored)

    end_id = produce_events(kafka_bootstrap, topics["calls"], [ev.ended("call-k1")])[0]
    outputs = decode(
        read_topic(kafka_bootstrap, topics["out"], expect=len(segments) + 2, settle_s=1)
    )
    calls = [b for t, b, _ in outputs if t == CallSentimentV1.event_type]
    changes = [b for b in calls if b["reason"] == "significant_change"]
    finals = [b for b in calls if b["reason"] == "call_ended"]
    assert changes and changes[0]["label"] == "negative"
    assert len(finals) == 1
    final = finals[0]
    assert final["segments_scored"] == sum(1 for s, _ in ev.ANGRY_CALL if s == "customer")
    assert final["label"] == "negative" and final["final"] < -0.5 and final["trend"] < 0
    assert end_id in final["derived_from"]
    for _, body, record in outputs:
        assert record.key == b"call-k1"
        model = CallSentimentV1 if body.get("reason") else SegmentSentimentV1
        model.model_validate_json(record.value or b"")  # every output honours the contract


def test_bad_input_is_dead_lettered_and_the_service_goes_on(
    kafka_bootstrap: str, topics: dict[str, str], running: None
) -> None:
    good = ev.segment("call-k2", 0, "This is awful.")
    key, value, headers, _ = encode(good, source="test")
    broken_schema = json.loads(value)
    broken_schema["start_s"] = -5
    produce_raw(
        kafka_bootstrap,
        topics["segments"],
        [
            (key, b"{not json", headers),
            (key, json.dumps(broken_schema).encode(), headers),
            (key, value, headers),
        ],
    )
    dead = read_topic(kafka_bootstrap, topics["dlq"], expect=2)
    assert sorted(r.headers["dlq_error_class"].decode() for r in dead) == [
        "InvalidJson",
        "SchemaViolation",
    ]
    assert all(r.headers["dlq_service"] == b"sentiment" for r in dead)
    out = decode(read_topic(kafka_bootstrap, topics["out"], expect=1))
    assert [b["segment_id"] for _, b, _ in out] == ["call-k2-seg-0000"]


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "loopwise_sentiment", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_call_state_survives_sigkill_and_redelivery_counts_once(
    kafka_bootstrap: str, topics: dict[str, str]
) -> None:
    n = 24
    texts = ["I am unhappy with this.", "That is fine, thank you.", "This is awful!"]
    segments: list[TenantEvent] = [ev.segment("call-r", i, texts[i % 3]) for i in range(n)]
    encoded = [encode(s, source="test") for s in segments]
    produce_raw(kafka_bootstrap, topics["segments"], [(k, v, h) for k, v, h, _ in encoded])
    env = env_for(kafka_bootstrap, topics)

    first = _start(env)
    try:
        seen = read_topic(kafka_bootstrap, topics["out"], expect=n // 2, timeout_s=120)
        assert len(seen) >= n // 2, "the service made no progress before the kill"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)

    # Exact redeliveries of already-applied segments (same event ids) must not count again.
    produce_raw(kafka_bootstrap, topics["segments"], [(k, v, h) for k, v, h, _ in encoded[:6]])
    n_scored = count(SegmentSentimentV1)
    n_final = count(CallSentimentV1, "call_ended")
    second = _start(env)
    try:
        read_until(kafka_bootstrap, topics["out"], lambda o: n_scored(o) >= n + 6, 120)
        produce_events(kafka_bootstrap, topics["calls"], [ev.ended("call-r", 200.0)])
        outputs = read_until(kafka_bootstrap, topics["out"], lambda o: n_final(o) >= 1, 120)
    finally:
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=60)
    assert second.returncode == 0, stderr.decode()[-2000:]
    finals = [b for t, b, _ in outputs if b.get("reason") == "call_ended"]
    assert len(finals) == 1, finals
    assert finals[0]["segments_scored"] == n
    scored_ids = {r.headers["ce_id"] for t, _, r in outputs if t == SegmentSentimentV1.event_type}
    assert len(scored_ids) == n  # redelivered segments got the same output ids
