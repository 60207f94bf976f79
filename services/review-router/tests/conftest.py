"""Fixtures of the review-router tests: event builders, a test policy, the router as a process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loopwise.events import (
    CallComplianceV1,
    CallEndedV1,
    CallSentimentV1,
    CallStartedV1,
    ChannelSpec,
    ComplianceFinding,
    Evidence,
    ModelRef,
    ReviewDecisionV1,
    SegmentComplianceV1,
    SegmentSentimentV1,
    TenantEvent,
    TranscriptCorrection,
    TranscriptSegmentV1,
)
from loopwise.events.review import SentimentRelabel

ROOT = Path(__file__).resolve().parents[3]

TEST_POLICY = """\
version: 1
name: router-tests
defaults:
  priority: p3
  sla: 1h
  mode: post_call
  escalations: 1
  on_expiry: keep_held
rules:
  - id: card-live
    scope: segment
    when:
      finding: {category: card_data, min_severity: high}
    outcome: hold
    mode: realtime
    priority: p1
  - id: hold-queue
    scope: call
    when: "queue == hold-q"
    outcome: hold
    priority: p2
  - id: sla-queue
    scope: call
    when: "queue == sla-q"
    outcome: hold
    sla: 1s
  - id: slow-sla-queue
    scope: call
    when: "queue == slow-sla-q"
    outcome: hold
    sla: 12s
  - id: sample-queue
    scope: call
    when: "queue == sample-q"
    outcome: sample
    rate: 0.3
  - id: notice-missing
    scope: call
    when: {finding: {category: disclosure, min_severity: medium}}
    outcome: hold
    priority: p2
"""

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ASR = ModelRef(name="test-asr", version="1")
SENT = ModelRef(name="test-sentiment", version="1")
PACK = ModelRef(name="test-pack", version="1")


def card_finding(call_id: str, segment_id: str) -> ComplianceFinding:
    """A high-severity card-data finding on a segment."""
    return ComplianceFinding(
        finding_id=f"{call_id}/{segment_id}/card",
        rule_id="card_data.spoken",
        category="card_data",
        severity="high",
        score=0.95,
        evidence=Evidence(segment_id=segment_id, start=0, end=13, text="[CARD_NUMBER]"),
        segment_id=segment_id,
    )


@dataclass
class CallScript:
    """Every input event of one call, by input kind (calls, transcripts, sentiment, compliance)."""

    call_id: str
    tenant_id: str
    events: dict[str, list[TenantEvent]] = field(default_factory=dict)

    def all(self) -> list[TenantEvent]:
        """The events in pipeline order."""
        order = ("calls", "transcripts", "sentiment", "compliance", "ended")
        return [e for kind in order for e in self.events.get(kind, [])]


def call_script(
    call_id: str,
    *,
    tenant_id: str = "acme",
    queue: str = "auto-q",
    segments: int = 2,
    card_on: set[int] | None = None,
    score: float = 0.2,
) -> CallScript:
    """A whole call: start, transcribed and scored segments, call-level scores, end."""
    ids: dict[str, Any] = {"tenant_id": tenant_id, "call_id": call_id, "occurred_at": T0}
    script = CallScript(call_id, tenant_id)
    script.events["calls"] = [
        CallStartedV1(
            **ids,
            queue=queue,
            region="eu",
            language_hint="en",
            channels=[ChannelSpec(index=0, role="agent"), ChannelSpec(index=1, role="customer")],
        )
    ]
    transcripts: list[TenantEvent] = []
    sentiment: list[TenantEvent] = []
    compliance: list[TenantEvent] = []
    for i in range(segments):
        seg = f"seg-{i:03d}"
        speaker = "customer" if i % 2 else "agent"
        transcripts.append(
            TranscriptSegmentV1(
                **ids,
                producer=ASR,
                segment_id=seg,
                speaker=speaker,
                start_s=float(i * 5),
                end_s=float(i * 5 + 4),
                text=f"segment {i} of {call_id}",
                confidence=0.9,
                language="en",
                source="realtime",
            )
        )
        sentiment.append(
            SegmentSentimentV1(
                **ids,
                producer=SENT,
                segment_id=seg,
                speaker=speaker,
                label="neutral",
                score=score,
                confidence=0.8,
            )
        )
        findings = [card_finding(call_id, seg)] if card_on and i in card_on else []
        compliance.append(
            SegmentComplianceV1(**ids, producer=PACK, segment_id=seg, findings=findings)
        )
    sentiment.append(
        CallSentimentV1(
            **ids,
            producer=SENT,
            reason="call_ended",
            segments_scored=segments,
            current=score,
            final=score,
            trend=0.0,
            worst=score,
            label="neutral",
            confidence=0.8,
        )
    )
    compliance.append(
        CallComplianceV1(**ids, producer=PACK, findings=[], segments_checked=segments)
    )
    script.events["transcripts"] = transcripts
    script.events["sentiment"] = sentiment
    script.events["compliance"] = compliance
    script.events["ended"] = [
        CallEndedV1(**ids, reason="completed", duration_s=float(segments * 5))
    ]
    return script


def review_decision(
    call_id: str,
    task_id: str,
    *,
    tenant_id: str = "acme",
    verdict: str = "approve",
    decision_id: str | None = None,
    corrections: dict[str, str] | None = None,
    relabels: dict[str, str] | None = None,
) -> ReviewDecisionV1:
    """A reviewer's decision on a task."""
    return ReviewDecisionV1(
        tenant_id=tenant_id,
        call_id=call_id,
        occurred_at=T0 + timedelta(minutes=5),
        producer=ModelRef(name="review-console", version="1"),
        decision_id=decision_id or f"dec-{task_id}",
        task_id=task_id,
        reviewer_id="rev-1",
        verdict=verdict,  # type: ignore[arg-type]
        transcript_corrections=[
            TranscriptCorrection(segment_id=s, text=t) for s, t in (corrections or {}).items()
        ],
        sentiment_labels=[
            SentimentRelabel(segment_id=s, label=lab)  # type: ignore[arg-type]
            for s, lab in (relabels or {}).items()
        ],
    )


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """The test policy, written to a temporary file."""
    path = tmp_path / "policy.yaml"
    path.write_text(TEST_POLICY, encoding="utf-8")
    return path


# ---- the router as a process on the real broker ----------------------------------------------

INPUT_KINDS = ("calls", "transcripts", "sentiment", "compliance", "decisions")
OUTPUT_KINDS = ("routing", "tasks", "outcomes", "dlq")


def free_port() -> int:
    """A free local TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RouterProcess:
    """A `loopwise-router run` child process."""

    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RouterProcess:
        """Start it and wait until it is ready (partitions assigned)."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loopwise_router", "run"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def ready(self) -> bool:
        """Whether /readyz answers 200."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, no goodbye."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of its log, for failure messages."""
        return self.log_path.read_text(errors="replace")[-chars:]


@pytest.fixture
def router_topics(new_topic: Callable[..., str]) -> dict[str, str]:
    """Fresh input and output topics, all with 3 partitions (co-partitioned)."""
    return {kind: new_topic(f"router-{kind}", partitions=3) for kind in INPUT_KINDS + OUTPUT_KINDS}


@pytest.fixture
def router_factory(
    kafka_bootstrap: str, router_topics: dict[str, str], policy_file: Path, tmp_path: Path
) -> Iterator[Callable[..., RouterProcess]]:
    """Factory of router processes sharing one consumer group (so one state changelog)."""
    group_id = f"router-test-{os.urandom(4).hex()}"
    started: list[RouterProcess] = []

    def make(**extra: str) -> RouterProcess:
        port = free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "LOOPWISE_ROUTER_GROUP_ID": group_id,
            "LOOPWISE_ROUTER_POLICY_PATH": str(policy_file),
            "LOOPWISE_ROUTER_DEAD_LETTER_TOPIC": router_topics["dlq"],
            "LOOPWISE_ROUTER_SEGMENT_WINDOW_S": "3",
            "LOOPWISE_ROUTER_CALL_WINDOW_S": "3",
            "LOOPWISE_ROUTER_DECISION_PARK_S": "3",
            "LOOPWISE_ROUTER_TICK_INTERVAL_S": "0.2",
            "LOOPWISE_ROUTER_RELOAD_INTERVAL_S": "1",
            "LOOPWISE_ROUTER_OBSERVABILITY__PORT": str(port),
            "LOOPWISE_ROUTER_OBSERVABILITY__HOST": "127.0.0.1",
            "LOOPWISE_ROUTER_OBSERVABILITY__LOG_LEVEL": "WARNING",
            **{
                f"LOOPWISE_ROUTER_{kind.upper()}_TOPIC": router_topics[kind] for kind in INPUT_KINDS
            },
            **{
                f"LOOPWISE_ROUTER_{kind.upper()}_TOPIC": router_topics[kind]
                for kind in OUTPUT_KINDS
                if kind != "dlq"
            },
            **extra,
        }
        proc = RouterProcess(env, port, tmp_path / f"router-{len(started)}.log")
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()


def decoded(records: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """(ce_type, body) of consumed records."""
    return [(r.headers.get("ce_type", b"").decode(), json.loads(r.value or b"{}")) for r in records]


@pytest.fixture
def router_kit() -> Any:
    """Builders for tests: call scripts, decisions, record decoding."""

    @dataclass
    class Kit:
        call_script: Callable[..., CallScript] = call_script
        review_decision: Callable[..., ReviewDecisionV1] = review_decision
        decoded: Callable[[list[Any]], list[tuple[str, dict[str, Any]]]] = decoded

    return Kit()
