"""End to end in a real headless Chromium: a reviewer signs in, claims a held call, corrects a
word, confirms a finding and approves; the decision reaches the topic and the router releases
the call. The console and the router run as processes on the session's real Kafka broker.

Needs Debian's `chromium` (`make install-chromium`); skipped with the reason where it is absent.
Screenshots of the queue and the task view are written to docs/images/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
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
    SegmentComplianceV1,
    SegmentSentimentV1,
    TenantEvent,
    TranscriptSegmentV1,
)
from tests.support.kafka_io import produce_events, read_topic, wait_for

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[3]
SHOTS = ROOT / "docs" / "images"
POLICY = """\
version: 1
name: console-browser-test
defaults:
  priority: p3
  sla: 1h
  mode: post_call
rules:
  - id: hold-queue
    scope: call
    when: "queue == hold-q"
    outcome: hold
    priority: p2
"""
ROUTER_INPUTS = ("calls", "transcripts", "sentiment", "compliance", "decisions")
ROUTER_OUTPUTS = ("routing", "tasks", "outcomes")


def chromium() -> str:
    """Path of Debian's chromium, or skip."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip(
            "Debian's chromium is not installed (make install-chromium; apt-get install chromium)"
        )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


class Proc:
    """A child process with its log."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def call_events(call_id: str) -> list[TenantEvent]:
    """A held call (queue hold-q): two segments, a card finding on the customer's."""
    at = datetime.now(UTC)
    ids: dict[str, Any] = {"tenant_id": "acme", "call_id": call_id, "occurred_at": at}
    asr, sent, pack = (ModelRef(name=n, version="1") for n in ("asr", "sentiment", "pack"))
    texts = ["thank you for calling", "my card is [CARD_NUMBER] and I am relly unhappy"]
    finding = ComplianceFinding(
        finding_id=f"{call_id}/seg-001/card",
        rule_id="card_data.spoken",
        category="card_data",
        severity="high",
        score=0.97,
        evidence=Evidence(segment_id="seg-001", start=11, end=24, text="[CARD_NUMBER]"),
        segment_id="seg-001",
    )
    events: list[TenantEvent] = [
        CallStartedV1(
            **ids,
            queue="hold-q",
            region="eu",
            language_hint="en",
            channels=[ChannelSpec(index=0, role="agent"), ChannelSpec(index=1, role="customer")],
        )
    ]
    for i, text in enumerate(texts):
        seg, speaker = f"seg-{i:03d}", ("agent", "customer")[i]
        events.append(
            TranscriptSegmentV1(
                **ids,
                producer=asr,
                segment_id=seg,
                speaker=speaker,
                start_s=i * 5.0,
                end_s=i * 5.0 + 4,
                text=text,
                confidence=0.9,
                language="en",
                source="realtime",
            )
        )
        events.append(
            SegmentSentimentV1(
                **ids,
                producer=sent,
                segment_id=seg,
                speaker=speaker,
                label=("neutral", "negative")[i],
                score=(0.1, -0.6)[i],
                confidence=0.7,
            )
        )
        events.append(
            SegmentComplianceV1(
                **ids, producer=pack, segment_id=seg, findings=[finding] if i else []
            )
        )
    events += [
        CallSentimentV1(
            **ids,
            producer=sent,
            reason="call_ended",
            segments_scored=2,
            current=-0.3,
            final=-0.3,
            trend=0.0,
            worst=-0.6,
            label="negative",
            confidence=0.7,
        ),
        CallComplianceV1(**ids, producer=pack, findings=[], segments_checked=2),
        CallEndedV1(**ids, reason="completed", duration_s=10.0),
    ]
    return events


@pytest.fixture
def pipeline(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """Router and console processes on fresh topics; yields their addresses and topics."""
    topics = {
        k: new_topic(f"console-{k}", partitions=3)
        for k in (*ROUTER_INPUTS, *ROUTER_OUTPUTS, "audit", "dlq")
    }
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    base = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    router_port = free_port()
    router_env = {
        **base,
        "LOOPWISE_ROUTER_GROUP_ID": f"router-console-test-{os.urandom(4).hex()}",
        "LOOPWISE_ROUTER_POLICY_PATH": str(policy),
        "LOOPWISE_ROUTER_DEAD_LETTER_TOPIC": topics["dlq"],
        "LOOPWISE_ROUTER_SEGMENT_WINDOW_S": "2",
        "LOOPWISE_ROUTER_CALL_WINDOW_S": "2",
        "LOOPWISE_ROUTER_TICK_INTERVAL_S": "0.2",
        "LOOPWISE_ROUTER_OBSERVABILITY__PORT": str(router_port),
        "LOOPWISE_ROUTER_OBSERVABILITY__HOST": "127.0.0.1",
        "LOOPWISE_ROUTER_OBSERVABILITY__LOG_LEVEL": "WARNING",
        **{
            f"LOOPWISE_ROUTER_{k.upper()}_TOPIC": topics[k]
            for k in (*ROUTER_INPUTS, *ROUTER_OUTPUTS)
        },
    }
    http_port, obs_port = free_port(), free_port()
    console_env = {
        **base,
        "LOOPWISE_CONSOLE_DATA_DIR": str(tmp_path / "console"),
        "LOOPWISE_CONSOLE_HTTP_PORT": str(http_port),
        "LOOPWISE_CONSOLE_GROUP_ID": f"console-test-{os.urandom(4).hex()}",
        "LOOPWISE_CONSOLE_INPUT_TOPICS": json.dumps([topics["tasks"], topics["routing"]]),
        "LOOPWISE_CONSOLE_DECISIONS_TOPIC": topics["decisions"],
        "LOOPWISE_CONSOLE_AUDIT_TOPIC": topics["audit"],
        "LOOPWISE_CONSOLE_DEAD_LETTER_TOPIC": topics["dlq"],
        "LOOPWISE_CONSOLE_OBSERVABILITY__PORT": str(obs_port),
        "LOOPWISE_CONSOLE_OBSERVABILITY__HOST": "127.0.0.1",
        "LOOPWISE_CONSOLE_OBSERVABILITY__LOG_LEVEL": "WARNING",
    }
    token = subprocess.run(
        [
            sys.executable,
            "-m",
            "loopwise_console",
            "create-token",
            "--role",
            "reviewer",
            "--tenant",
            "acme",
            "--subject",
            "rev-browser",
        ],
        env=console_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    router = Proc(
        [sys.executable, "-m", "loopwise_router", "run"], router_env, tmp_path / "router.log"
    )
    console = Proc(
        [sys.executable, "-m", "loopwise_console", "run"], console_env, tmp_path / "console.log"
    )
    try:
        assert wait_for(lambda: answers(f"http://127.0.0.1:{router_port}/readyz"), 120), (
            router.tail()
        )
        assert wait_for(lambda: answers(f"http://127.0.0.1:{obs_port}/readyz"), 60), console.tail()
        assert answers(f"http://127.0.0.1:{obs_port}/metrics")
        yield {
            "url": f"http://127.0.0.1:{http_port}",
            "metrics": f"http://127.0.0.1:{obs_port}/metrics",
            "token": token,
            "topics": topics,
            "router": router,
            "console": console,
        }
    finally:
        console.stop()
        router.stop()


def test_reviewer_works_a_held_call_in_chromium_and_the_router_releases_it(
    kafka_bootstrap: str, pipeline: dict[str, Any]
) -> None:
    executable = chromium()
    from playwright.sync_api import expect, sync_playwright

    topics, url = pipeline["topics"], pipeline["url"]
    by_label = {
        "calls": "calls",
        "transcripts": "transcripts",
        "sentiment": "sentiment",
        "compliance": "compliance",
    }
    events = call_events("web-1")
    for event in events:
        kind = {
            "CallStartedV1": "calls",
            "CallEndedV1": "calls",
            "TranscriptSegmentV1": "transcripts",
            "SegmentSentimentV1": "sentiment",
            "CallSentimentV1": "sentiment",
            "SegmentComplianceV1": "compliance",
            "CallComplianceV1": "compliance",
        }[type(event).__name__]
        produce_events(kafka_bootstrap, topics[by_label[kind]], [event])

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{url}/ui/login")
        page.fill("#token", pipeline["token"])
        page.click("#sign-in")
        expect(page.get_by_test_id("who")).to_contain_text("rev-browser")
        # the router holds the call; the console materialises the task (the page polls)
        row = page.locator("tr.row", has_text="web-1")
        expect(row).to_be_visible(timeout=90_000)
        page.screenshot(path=str(SHOTS / "console-queue.png"), full_page=True)
        row.locator("a").click()
        expect(page.get_by_test_id("why")).to_contain_text("queue == hold-q")
        page.click("#claim")
        expect(page.get_by_test_id("claimed-by")).to_have_text("rev-browser")
        page.screenshot(path=str(SHOTS / "console-task.png"), full_page=True)
        segment = page.locator("[data-segment=seg-001]")
        segment.locator(".text").dblclick()
        segment.locator("textarea.edit").fill("my card is [CARD_NUMBER] and I am really unhappy")
        page.locator("[data-testid=finding] input[value=confirmed]").check()
        page.locator("[data-testid=finding] .note").fill("card read out on the line")
        page.keyboard.press("Escape")
        page.keyboard.press("a")  # the approve shortcut
        expect(page.get_by_test_id("message")).to_contain_text("approved: decided", timeout=15_000)
        browser.close()

    decisions = read_topic(kafka_bootstrap, topics["decisions"], 1, timeout_s=60)
    assert len(decisions) == 1, pipeline["console"].tail()
    decision = json.loads(decisions[0].value or b"{}")
    assert decision["reviewer_id"] == "rev-browser" and decision["verdict"] == "approve"
    assert decision["transcript_corrections"] == [
        {"segment_id": "seg-001", "text": "my card is [CARD_NUMBER] and I am really unhappy"}
    ]
    assert decision["finding_verdicts"][0]["verdict"] == "confirmed"

    def released() -> list[dict[str, Any]]:
        records = read_topic(kafka_bootstrap, topics["outcomes"], 3, timeout_s=5)
        bodies = [json.loads(r.value or b"{}") for r in records]
        return [b for b in bodies if b["scope"] == "call" and b["call_id"] == "web-1"]

    assert wait_for(lambda: bool(released()), 90, interval_s=1), pipeline["router"].tail()
    [outcome] = released()
    assert outcome["release"] == "reviewed" and outcome["decision_id"] == decision["decision_id"]
    assert any(s["corrected"] and "really" in s["text"] for s in outcome["segments"])
    audits = read_topic(kafka_bootstrap, topics["audit"], 1, timeout_s=30)
    assert any(json.loads(a.value or b"{}")["action"] == "task.decide" for a in audits)
    metrics = urllib.request.urlopen(pipeline["metrics"], timeout=5).read().decode()
    assert 'loopwise_review_decisions_total{verdict="approve"} 1.0' in metrics
