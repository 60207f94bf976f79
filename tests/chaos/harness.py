"""Chaos run of the text path: every service killed once, the broker restarted, bad input mixed in.

    uv run python -m tests.chaos.harness [--calls N] [--runs K] [--replica-runs R] [--broker-kill]

A dedicated single-node KRaft broker (its own port, so restarting it disturbs nothing
else) carries the text path as an operator runs it: external transcripts ->
transcription -> sentiment + compliance-scoring -> review-router -> decisions, tasks,
outcomes, with the audit writer reading every topic. Calls of four kinds (calm, angry,
a card number read out, the recording notice never given) are fed in waves; between
waves each service is SIGKILLed once and started again, and the broker is restarted
(SIGTERM, or SIGKILL with --broker-kill). Malformed records of every kind in
`tests.support.malformed` are mixed into the topics. A scripted reviewer approves every
hold. A second scenario (`replica_scenario`, after the K runs) runs two instances of the
router and of compliance scoring and freezes them in turn with SIGSTOP past the session
timeout, so partitions and states move while the frozen instance still holds its own.
`check` then counts what the issue asks for and returns the figures; the test
(`test_chaos.py`) asserts them, the long run prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from confluent_kafka import Consumer, Producer, TopicPartition

from loopwise.events import (
    ExternalTranscriptSegmentV1,
    ModelRef,
    ReviewDecisionV1,
    TenantEvent,
    encode,
)
from loopwise.events.envelope import Headers
from loopwise.replay import CallOptions, TranscriptLine, transcript_events
from loopwise.topics import topic
from loopwise_router.outputs import item_id
from tests.support.malformed import Malformed, malformed_records

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
KAFKA = ROOT / "deploy" / "local" / "kafka.sh"
TENANT = "acme-bank"
NOTICE = "Hello, thank you for calling Acme Bank, this call is recorded for quality purposes."

CALLS: dict[str, list[tuple[str, str]]] = {
    "calm": [
        ("agent", NOTICE),
        ("customer", "Hi, I would just like to change the address you send my letters to."),
        ("agent", "Of course, that is done for you now. Is there anything else I can do?"),
        ("customer", "No, that was quick, thank you so much for your help."),
    ],
    "angry": [
        ("agent", NOTICE),
        ("customer", "This is ridiculous. You charged me twice and nobody called me back."),
        ("customer", "I want to speak to your manager right now, this is unacceptable."),
        ("agent", "I am sorry about that. Let me find the payment for you."),
        ("customer", "Terrible service, honestly. I will take my business elsewhere."),
    ],
    "card": [
        ("agent", NOTICE),
        ("customer", "I need to pay my bill today please."),
        ("agent", "Certainly. What is your card number?"),
        ("customer", "It is 4111 1111 1111 1111, expiry 09/28."),
        ("agent", "Thank you, the payment has gone through."),
    ],
    "nodisclosure": [
        ("agent", "Hi, Acme Bank, what can I do for you?"),
        ("customer", "I want to check when my new card will arrive."),
        ("agent", "It was posted yesterday, it should be with you in two days."),
        ("customer", "Great, thanks."),
    ],
}
CARD_TURN = 3
"""The turn of a card call in which the number is read out."""


def routed_segment(turn: int) -> str:
    """The id the router sees for a turn: transcription names external segments `ext-<id>`."""
    return f"ext-turn-{turn:03d}"


def is_late_task(task: dict[str, Any]) -> bool:
    """A task the router opened after its item was released (its id names it late)."""
    segments = task.get("segments") or []
    item = segments[0]["segment_id"] if task["scope"] == "segment" and segments else "call"
    return bool(task["task_id"] == item_id("task", task["call_id"], item, task["kind"], "late"))


SERVICES = ("transcription", "sentiment", "compliance-scoring", "review-router", "audit-writer")
CONSUMES: dict[str, tuple[str, ...]] = {
    "transcription": ("cx.calls", "cx.audio", "cx.transcripts.external"),
    "sentiment": ("cx.transcripts", "cx.calls"),
    "compliance-scoring": ("cx.calls", "cx.transcripts"),
    "review-router": (
        "cx.calls",
        "cx.transcripts",
        "cx.sentiment",
        "cx.compliance",
        "hitl.decisions",
    ),
}
SEGMENT_WINDOW_S = 20
"""The router's segment join window here: how long a segment waits for its scores."""
FAST_GROUP = json.dumps({"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})


def _released_items(outcome: dict[str, Any]) -> tuple[str, list[str]]:
    """What an outcome releases, and how."""
    return outcome["release"], [seg["segment_id"] for seg in outcome.get("segments", [])]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Proc:
    """A service as a child process, restarted only when the harness killed it."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    log: Path
    prefix: str = ""
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    unexpected_exits: list[str] = field(default_factory=list)  # exit code and last words

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.starts += 1

    def probe(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def check_alive(self) -> None:
        """Note an exit the harness did not cause (a crash), and start it again."""
        if self.proc is not None and self.proc.poll() is not None:
            # what it said last, before the next start appends to the same log
            self.unexpected_exits.append(
                f"{self.name} exited {self.proc.returncode}:\n{self.tail(4000)}"
            )
            self.start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def _free_port() -> int:
    """A port free now, below the kernel's ephemeral range (32768 on): a port picked from
    that range can meanwhile become the local end of some client's outgoing connection,
    and the service that was to listen on it then fails to start."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20_000, 32_000)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


class Chaos:
    """One chaos run on its own broker."""

    def __init__(self, workdir: Path, *, kafka_port: int | None = None) -> None:
        self.workdir = workdir
        self.kafka_port = kafka_port or _free_port()
        self.kafka_env = {
            **os.environ,
            "KAFKA_PORT": str(self.kafka_port),
            "KAFKA_CONTROLLER_PORT": str(_free_port()),
            "LOOPWISE_KAFKA_DATA": str(workdir / "kafka"),
        }
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        self.run_id = uuid.uuid4().hex[:8]
        self.procs: dict[str, Proc] = {}
        self.calls: dict[str, str] = {}  # call id -> kind
        self.malformed: list[tuple[Malformed, str, int, int]] = []
        self.decided_tasks: set[str] = set()
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._reviewer: threading.Thread | None = None
        self.timeline: list[str] = []
        self._t0 = time.monotonic()

    # ---- the broker ------------------------------------------------------------------------

    def _kafka(self, *args: str) -> None:
        done = subprocess.run(
            ["bash", str(KAFKA), *args],
            env=self.kafka_env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka.sh {' '.join(args)} failed:\n{done.stderr[-3000:]}")

    def broker_up(self) -> None:
        self._kafka("up")

    def broker_restart(self, hard: bool = False) -> None:
        """Stop the broker (SIGTERM via kafka.sh, or SIGKILL) and start it on the same data."""
        if hard:
            pid = int((self.workdir / "kafka" / "kafka.pid").read_text().strip())
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
        else:
            self._kafka("down")
        self.note(f"broker {'SIGKILL' if hard else 'SIGTERM'}")
        time.sleep(2)
        self._kafka("up")
        self.note("broker up again")

    def broker_down(self) -> None:
        self._kafka("down", "--purge")

    # ---- services --------------------------------------------------------------------------

    def note(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self._t0:7.1f}s {what}")

    def start_services(self, hmac_key: str = "chaos-" + "k" * 40) -> None:
        subprocess.run(
            [str(BIN / "loopwise"), "topics", "apply"],
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap},
            check=True,
            capture_output=True,
        )
        state = self.workdir / "state"
        state.mkdir(parents=True, exist_ok=True)
        specs: dict[str, tuple[str, str, dict[str, str]]] = {
            "transcription": ("loopwise-transcription", "LOOPWISE_TRANSCRIPTION_", {}),
            "sentiment": (
                "loopwise-sentiment",
                "LOOPWISE_SENTIMENT_",
                {"STATE_PATH": str(state / "sentiment.sqlite3")},
            ),
            "compliance-scoring": (
                "loopwise-compliance",
                "LOOPWISE_COMPLIANCE_",
                {
                    "RULE_PACKS": str(ROOT / "deploy" / "rule-packs" / "index.yaml"),
                    "SESSION_TIMEOUT_S": "6",
                },
            ),
            "review-router": (
                "loopwise-router",
                "LOOPWISE_ROUTER_",
                {
                    "POLICY_PATH": str(ROOT / "deploy" / "policies" / "default.yaml"),
                    "SEGMENT_WINDOW_S": str(SEGMENT_WINDOW_S),
                    "CALL_WINDOW_S": "30",
                    "CALL_GRACE_S": "2",
                    "TICK_INTERVAL_S": "0.5",
                    "SESSION_TIMEOUT_S": "6",
                    "HEARTBEAT_INTERVAL_S": "1",
                },
            ),
            "audit-writer": (
                "loopwise-audit",
                "LOOPWISE_AUDIT_",
                {
                    "DATABASE_URL": f"sqlite:///{state / 'audit.db'}",
                    "CHECKPOINT_DIR": str(state / "checkpoints"),
                    "HMAC_KEY": hmac_key,
                    "KEY_ID": "chaos-1",
                    "CHECKPOINT_EVERY_S": "5",
                },
            ),
        }
        for name, (script, prefix, own) in specs.items():
            port = _free_port()
            env = {
                **os.environ,
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "PYTHONUNBUFFERED": "1",
                prefix + "GROUP_ID": f"chaos-{self.run_id}-{name}",
                prefix + "OBSERVABILITY__HOST": "127.0.0.1",
                prefix + "OBSERVABILITY__PORT": str(port),
                prefix + "OBSERVABILITY__LOG_LEVEL": "WARNING",
                prefix + "CONSUMER_OVERRIDES": FAST_GROUP,
                **{prefix + k: v for k, v in own.items()},
            }
            self.procs[name] = Proc(
                name,
                [str(BIN / script), "run"],
                env,
                port,
                self.workdir / "logs" / f"{name}.log",
                prefix,
            )
        for proc in self.procs.values():
            proc.start()
        self.wait_ready()
        self.note("services ready")

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(self.procs)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                self.procs[name].check_alive()
                if self.procs[name].probe("/readyz"):
                    pending.discard(name)
            time.sleep(0.3)
        if pending:
            tails = "\n".join(f"--- {n}\n{self.procs[n].tail()}" for n in sorted(pending))
            raise RuntimeError(f"not ready after {timeout_s:.0f} s: {sorted(pending)}\n{tails}")

    def kill_and_restart(self, name: str, *, down_s: float = 0.0) -> None:
        """SIGKILL one service mid-stream and start it again (as an orchestrator would),
        after `down_s` seconds; the timeline notes how much input it had not yet committed."""
        unread = self.unread(name)
        self.procs[name].kill()
        self.note(f"SIGKILL {name} ({unread} input records not committed)")
        if down_s:
            time.sleep(down_s)
            self.note(f"{name} started again after {down_s:.0f} s down")
        self.procs[name].start()

    def pause(self, name: str, seconds: float) -> None:
        """SIGSTOP a service for `seconds` (longer than its session timeout: the group moves
        its partitions on while it is frozen), then SIGCONT: it wakes a zombie, holding
        state and fetched input for partitions it no longer owns."""
        proc = self.procs[name].proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)
        self.note(f"SIGSTOP {name}")
        time.sleep(seconds)
        proc.send_signal(signal.SIGCONT)
        self.note(f"SIGCONT {name} after {seconds:.0f} s")

    def add_replica(self, name: str, replica: str) -> None:
        """Start another instance of a service in the same consumer group (a scale-out)."""
        src = self.procs[name]
        port = _free_port()
        env = {**src.env, src.prefix + "OBSERVABILITY__PORT": str(port)}
        log = self.workdir / "logs" / f"{replica}.log"
        self.procs[replica] = Proc(replica, list(src.command), env, port, log, src.prefix)
        self.procs[replica].start()
        self.note(f"started {replica} (second instance of {name})")

    def unread(self, name: str) -> int:
        """Records on a service's input topics past its group's committed offsets."""
        labels = CONSUMES.get(name)
        if labels is None:  # the audit writer reads every topic
            from loopwise_audit.config import pipeline_topics

            names = list(pipeline_topics())
        else:
            names = [topic(label) for label in labels]
        group = self.procs[name].env[self.procs[name].prefix + "GROUP_ID"]
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            parts = [
                TopicPartition(n, p)
                for n in names
                for p in consumer.list_topics(n, timeout=10).topics[n].partitions
            ]
            total = 0
            for tp in consumer.committed(parts, timeout=10):
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                total += high - (tp.offset if tp.offset >= 0 else low)
            return total
        except Exception:  # a figure for the timeline only
            return -1
        finally:
            consumer.close()

    def watch(self) -> None:
        for proc in self.procs.values():
            proc.check_alive()

    # ---- feeding ---------------------------------------------------------------------------

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "enable.idempotence": True,
                    "partitioner": "murmur2_random",
                    "linger.ms": 5,
                    "message.timeout.ms": 120_000,
                    "message.max.bytes": 2_000_000,  # the near-limit malformed records
                }
            )
        return self._producer

    def send(self, label: str, event: TenantEvent) -> None:
        key, value, headers, _ = encode(event, source="chaos-cx-platform")
        self.producer.produce(topic(label), key=key, value=value, headers=cast(Any, headers))
        self.producer.poll(0)

    def feed(self, count: int, wave: str) -> None:
        """Feed `count` calls, the four kinds in turn, as `loopwise-replay` sends a transcript."""
        kinds = list(CALLS)
        calls: dict[str, list[TranscriptLine]] = {}
        for i in range(count):
            kind = kinds[i % len(kinds)]
            call_id = f"chaos-{self.run_id}-{wave}-{i:03d}-{kind}"
            self.calls[call_id] = kind
            calls[call_id] = [
                TranscriptLine(
                    call_id=call_id,
                    speaker=speaker,  # type: ignore[arg-type]
                    start=turn * 3.5,
                    end=turn * 3.5 + 3.0,
                    text=text,
                    tenant=TENANT,
                    segment_id=f"turn-{turn:03d}",
                    channel=0 if speaker == "agent" else 1,
                    confidence=0.9,
                    language="en",
                )
                for turn, (speaker, text) in enumerate(CALLS[kind])
            ]
        options = CallOptions(tenant=TENANT, queue="billing", language="en")
        for out in transcript_events(calls, options=options):
            self.send(out.label, out.event)
        assert self.producer.flush(120) == 0, "calls not delivered"
        self.note(f"fed {count} calls ({wave})")

    def inject_malformed(self) -> None:
        """Produce every kind of malformed record to each topic it targets; note where it went."""
        landed: list[tuple[Malformed, str, int, int]] = []

        def on_delivery(rec: Malformed, name: str) -> Any:
            def done(err: Any, msg: Any) -> None:
                if err is None:
                    landed.append((rec, name, msg.partition(), msg.offset()))

            return done

        templates = self._templates()
        for label, template in templates.items():
            name = topic(label)
            prefix = f"chaos-bad-{self.run_id}-{len(self.malformed)}"
            for rec in malformed_records(template, prefix=prefix):
                headers: Headers = list(rec.headers)
                self.producer.produce(
                    name,
                    key=rec.key,
                    value=rec.value,
                    headers=headers,  # type: ignore[arg-type]
                    on_delivery=on_delivery(rec, name),
                )
        assert self.producer.flush(120) == 0, "malformed records not delivered"
        self.malformed.extend(landed)
        self.note(f"injected {len(landed)} malformed records")

    def _templates(self) -> dict[str, TenantEvent]:
        """A valid event per topic that malformed records are derived from."""
        from loopwise.events import TranscriptSegmentV1

        base: dict[str, Any] = {"tenant_id": TENANT, "call_id": "template", "occurred_at": _now()}
        model = ModelRef(name="chaos", version="1")
        return {
            "cx.transcripts.external": ExternalTranscriptSegmentV1(
                **base,
                segment_id="s-1",
                speaker="customer",
                channel=1,
                start_s=0.0,
                end_s=1.0,
                text="hello",
                engine="chaos",
            ),
            "cx.transcripts": TranscriptSegmentV1(
                **base,
                producer=model,
                segment_id="s-1",
                speaker="customer",
                start_s=0.0,
                end_s=1.0,
                text="hello",
                confidence=0.9,
                language="en",
                source="external",
            ),
            "hitl.decisions": ReviewDecisionV1(
                **base,
                producer=model,
                decision_id="d-1",
                task_id="t-1",
                reviewer_id="r-1",
                verdict="approve",
            ),
        }

    # ---- the reviewer ----------------------------------------------------------------------

    def start_reviewer(self) -> None:
        self._reviewer = threading.Thread(target=self._review, name="reviewer", daemon=True)
        self._reviewer.start()

    def _review(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"chaos-reviewer-{self.run_id}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
            }
        )
        consumer.subscribe([topic("hitl.review-tasks")])
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                headers = dict(msg.headers() or [])
                if headers.get("ce_type") != b"io.loopwise.review.task.created.v1":
                    continue
                body = json.loads(msg.value() or b"{}")
                task_id = body["task_id"]
                if body.get("kind") != "hold" or task_id in self.decided_tasks:
                    continue
                self.decided_tasks.add(task_id)
                self.send(
                    "hitl.decisions",
                    ReviewDecisionV1(
                        tenant_id=body["tenant_id"],
                        call_id=body["call_id"],
                        occurred_at=_now(),
                        producer=ModelRef(name="chaos-reviewer", version="1"),
                        decision_id=f"dec-{task_id}",
                        task_id=task_id,
                        reviewer_id="chaos-reviewer",
                        verdict="approve",
                    ),
                )
                self.producer.flush(30)
        finally:
            consumer.close()

    def stop_reviewer(self) -> None:
        self._stop.set()
        if self._reviewer is not None:
            self._reviewer.join(30)

    # ---- reading back ----------------------------------------------------------------------

    def read(self, label: str) -> list[tuple[dict[str, bytes], dict[str, Any], int, int]]:
        """(headers, body, partition, offset) of every record of a catalogue topic (by label)."""
        return self.read_name(topic(label))

    def read_name(self, name: str) -> list[tuple[dict[str, bytes], dict[str, Any], int, int]]:
        """(headers, body, partition, offset) of every record of a topic, up to its end."""
        from tests.support.kafka_io import read_all

        out = []
        for r in read_all(self.bootstrap, name, 120):
            try:
                body = json.loads(r.value or b"{}")
            except (ValueError, RecursionError):  # the malformed records are on these topics
                body = {}
            out.append((r.headers, body if isinstance(body, dict) else {}, r.partition, r.offset))
        return out

    def released_calls(self) -> set[str]:
        return {
            b["call_id"]
            for h, b, _, _ in self.read("hitl.outcomes")
            if b.get("scope") == "call" and b.get("call_id") in self.calls
        }

    def wait_released(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.watch()
            if self.released_calls() >= set(self.calls):
                return True
            time.sleep(2)
        return False

    def wait_audit_caught_up(self, timeout_s: float = 120.0) -> None:
        """Until the audit store stops growing (the writer read every topic to its end)."""
        db = self.workdir / "state" / "audit.db"
        last, still = -1, 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and still < 3:
            self.watch()
            try:
                with sqlite3.connect(db) as conn:
                    n = conn.execute("SELECT COUNT(*) FROM audit_records").fetchone()[0]
            except sqlite3.Error:
                n = -1
            still = still + 1 if n == last else 0
            last = n
            time.sleep(3)

    def stop_services(self) -> dict[str, int | None]:
        return {name: proc.stop() for name, proc in self.procs.items()}

    def finish(self) -> dict[str, Any]:
        """The end of a scenario: every call released, the audit writer caught up, the
        services stopped with SIGTERM; then the figures, with their exit codes and the
        timeline."""
        released = self.wait_released(timeout_s=360)
        self.note(f"every call released: {released}")
        self.wait_audit_caught_up()
        self.stop_reviewer()
        exits = self.stop_services()
        figures = self.check()
        figures["drain_exit_codes"] = exits
        figures["timeline"] = self.timeline
        return figures

    # ---- the figures ----------------------------------------------------------------------

    def check(self) -> dict[str, Any]:
        """Count what the pipeline did; every figure named *_bad or *_missing must be zero."""
        ours = set(self.calls)
        decisions = [
            b for _, b, _, _ in self.read("hitl.routing-decisions") if b.get("call_id") in ours
        ]
        tasks = [
            (h.get("ce_type", b"").decode(), b)
            for h, b, _, _ in self.read("hitl.review-tasks")
            if b.get("call_id") in ours
        ]
        outcomes = [
            {**b, "_at": f"{p}:{o}"}  # partition:offset, for the report
            for _, b, p, o in self.read("hitl.outcomes")
            if b.get("call_id") in ours
        ]
        segments = {
            (b["call_id"], b["segment_id"])
            for _, b, _, _ in self.read("cx.transcripts")
            if b.get("call_id") in ours
        }
        expected_segments = {
            (c, routed_segment(t)) for c, k in self.calls.items() for t in range(len(CALLS[k]))
        }

        first = [d for d in decisions if d.get("redecision_of") is None]
        ids_per_item: dict[tuple[str, str, str | None], set[str]] = defaultdict(set)
        for d in first:
            ids_per_item[(d["call_id"], d["scope"], d.get("segment_id"))].add(d["decision_id"])
        seg_items = {(c, s) for (c, scope, s) in ids_per_item if scope == "segment"}
        call_items = {c for (c, scope, _) in ids_per_item if scope == "call"}

        created = {b["task_id"]: b for t, b in tasks if t.endswith("task.created.v1")}
        hold_decisions = [d for d in decisions if d["outcome"] == "hold"]
        # a post-call segment hold has no task of its own: its call's hold task covers it
        hold_without_task = [
            d["decision_id"]
            for d in hold_decisions
            if (d.get("task_id") or d["scope"] == "call") and d.get("task_id") not in created
        ]
        task_ids_per_item: dict[tuple[str, str, str | None, bool], set[str]] = defaultdict(set)
        for b in created.values():
            segs = [seg["segment_id"] for seg in b.get("segments", [])]
            item = segs[0] if b["scope"] == "segment" and segs else None
            key = (b["call_id"], b["scope"], item, is_late_task(b))
            task_ids_per_item[key].add(b["task_id"])

        # Redelivered outcomes keep their id and consumers drop them by id, keeping the first
        # (the audit trail, the console); a second release is a second id for one item. A
        # late review's outcome (its task is `late`) is apart. A replay after a router kill
        # can meet the inputs of several topics in another order than the first time and so
        # send an id again with other content (a call's release listing a segment that was
        # reviewed meanwhile): what consumers see is the first, so that is what is checked;
        # the re-sent ones are counted.
        first_outcomes: dict[str, dict[str, Any]] = {}
        resent_other = 0
        for o in outcomes:
            kept = first_outcomes.setdefault(o["outcome_id"], o)
            if kept is not o and _released_items(kept) != _released_items(o):
                resent_other += 1
        released_segments: dict[tuple[str, str], list[str]] = defaultdict(list)
        releases: dict[tuple[str, str, str | None], set[str]] = defaultdict(set)
        call_releases: dict[str, set[str]] = defaultdict(set)
        for b in first_outcomes.values():
            for seg in b.get("segments", []):
                released_segments[(b["call_id"], seg["segment_id"])].append(b["release"])
            if b.get("task_id") in created and is_late_task(created[b["task_id"]]):
                continue
            segs = [seg["segment_id"] for seg in b.get("segments", [])]
            item = (segs[0] if segs else b.get("task_id")) if b["scope"] == "segment" else None
            releases[(b["call_id"], b["scope"], item)].add(b["outcome_id"])
            if b["scope"] == "call":
                call_releases[b["call_id"]].add(b["outcome_id"])

        card_segments = {
            (c, routed_segment(CARD_TURN)) for c, k in self.calls.items() if k == "card"
        }
        card_unreviewed = sorted(
            f"{c}/{s}"
            for (c, s) in card_segments
            # its first release (a call's outcomes are in order on one partition) is the
            # reviewed one; a call released after it lists it again, already reviewed
            if released_segments.get((c, s), ["reviewed"])[0] != "reviewed"
        )
        card_never_released = sorted(
            f"{c}/{s}" for (c, s) in card_segments if (c, s) not in released_segments
        )

        # per service, where each dead letter's record stood -> its reason
        dead_lettered = {
            service: {
                tuple(
                    h.get(name, b"").decode()
                    for name in (
                        "dlq_original_topic",
                        "dlq_original_partition",
                        "dlq_original_offset",
                    )
                ): h.get("dlq_reason", b"").decode()
                for h, _, _, _ in self.read(f"dlq.{service}")
            }
            for service in CONSUMES
        }
        malformed_missing = [
            f"{service}: {rec.name} @ {name}[{partition}]@{offset}"
            for rec, name, partition, offset in self.malformed
            for service, labels in CONSUMES.items()
            if name in {topic(label) for label in labels}
            and not dead_lettered[service].get((name, str(partition), str(offset)))
        ]
        # a dead letter of input the harness sent well-formed: valid input given up on
        injected = {(name, str(part), str(offset)) for _, name, part, offset in self.malformed}
        valid_dead_lettered = sorted(
            f"{service}: {t}[{p}]@{o}: {reason}"
            for service, origins in dead_lettered.items()
            for (t, p, o), reason in origins.items()
            if (t, p, o) not in injected
        )

        audit_missing, audit_dupes, audit_total = self._audit_check()
        verify = subprocess.run(
            [str(BIN / "loopwise-audit"), "verify"],
            env=self.procs["audit-writer"].env,
            capture_output=True,
            text=True,
            check=False,
        )
        restarts = {n: p.starts - 1 for n, p in self.procs.items()}
        return {
            "calls": len(ours),
            "segments": len(expected_segments),
            "segments_transcribed_missing": len(expected_segments - segments),
            "segment_decisions_missing": len(expected_segments - seg_items),
            "segment_decisions_bad": sum(
                1
                for (c, scope, s), ids in ids_per_item.items()
                if scope == "segment" and len(ids) != 1
            ),
            "call_decisions_missing": len(ours - call_items),
            "call_decisions_bad": sum(
                1
                for (c, scope, s), ids in ids_per_item.items()
                if scope == "call" and len(ids) != 1
            ),
            "holds": len(hold_decisions),
            "hold_tasks_missing": len(hold_without_task),
            "task_items_bad": sum(1 for ids in task_ids_per_item.values() if len(ids) != 1),
            "outcomes_released_twice_bad": sum(1 for ids in releases.values() if len(ids) > 1),
            "outcomes_resent_with_other_content": resent_other,
            "calls_released_missing": len(ours - set(call_releases)),
            "card_calls": len(card_segments),
            "card_released_unreviewed_bad": len(card_unreviewed),
            "card_never_released_missing": len(card_never_released),
            "missing_input_decisions": sum(1 for d in first if d.get("missing_inputs")),
            "missing_inputs_by_kind": dict(
                Counter(m for d in first for m in d.get("missing_inputs") or [])
            ),
            # fail closed: a decision made without compliance scores holds (never "no finding")
            "missing_compliance_not_held_bad": sum(
                1
                for d in first
                if "compliance" in (d.get("missing_inputs") or []) and d["outcome"] != "hold"
            ),
            "malformed_injected": len(self.malformed),
            "malformed_dead_letter_missing": len(malformed_missing),
            "valid_input_dead_lettered_bad": len(valid_dead_lettered),
            "audit_records": audit_total,
            "audit_events_missing": audit_missing,
            "audit_duplicates_bad": audit_dupes,
            "audit_verify_bad": 0 if verify.returncode == 0 else 1,
            "unexpected_exits_bad": sum(len(p.unexpected_exits) for p in self.procs.values()),
            "restarts": restarts,
            "examples": {
                "card_unreviewed": card_unreviewed[:5],
                "card_unreviewed_story": self._story(card_unreviewed[:2], decisions, outcomes),
                "malformed_missing": malformed_missing[:10],
                "valid_dead_lettered": valid_dead_lettered[:10],
                "verify": (verify.stdout + verify.stderr)[-1500:] if verify.returncode else "",
                "unexpected_exits": [t for p in self.procs.values() for t in p.unexpected_exits][
                    :3
                ],
            },
        }

    @staticmethod
    def _story(
        items: list[str], decisions: list[dict[str, Any]], outcomes: list[dict[str, Any]]
    ) -> dict[str, list[str]]:
        """What the router decided and released for some `call/segment` items (for a report)."""
        story: dict[str, list[str]] = {}
        for entry in items:
            call_id, segment_id = entry.split("/", 1)
            lines = [
                f"decision {d['scope']} {d.get('segment_id')} {d['outcome']}"
                f" rule={d.get('rule_id')}"
                f" id={d['decision_id']}"
                f" missing={d.get('missing_inputs')} redecision={bool(d.get('redecision_of'))}"
                f" at={d['occurred_at']}"
                for d in decisions
                if d["call_id"] == call_id and d.get("segment_id") in (None, segment_id)
            ]
            lines += [
                f"outcome {o['scope']} {o['release']} id={o['outcome_id']} record={o['_at']}"
                f" task={o.get('task_id')} at={o['occurred_at']}"
                f" segs={[x['segment_id'] for x in o.get('segments', [])]}"
                for o in outcomes
                if o["call_id"] == call_id
                and (
                    o["scope"] == "call"
                    or any(x["segment_id"] == segment_id for x in o.get("segments", []))
                )
            ]
            story[entry] = lines
        return story

    def _audit_check(self) -> tuple[int, int, int]:
        """Valid events on the audited topics missing from the store, duplicates, total."""
        from loopwise_audit.config import pipeline_topics

        want: set[str] = set()
        for name in pipeline_topics():
            for h, b, _, _ in self.read_name(name):
                event_id = h.get("ce_id", b"").decode("utf-8", errors="replace")
                if b.get("call_id") in self.calls and event_id:
                    want.add(event_id)
        with sqlite3.connect(self.workdir / "state" / "audit.db") as conn:
            rows = conn.execute("SELECT event_id FROM audit_records").fetchall()
        counts = Counter(r[0] for r in rows)
        dupes = sum(1 for n in counts.values() if n > 1)
        return len(want - set(counts)), dupes, len(rows)


@contextmanager
def chaos_run(workdir: Path) -> Iterator[Chaos]:
    """A chaos run with its own broker, cleaned up whatever happens."""
    chaos = Chaos(workdir)
    chaos.broker_up()
    try:
        yield chaos
    finally:
        chaos.stop_reviewer()
        for proc in chaos.procs.values():
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.kill()
        chaos._producer = None  # its broker is going: no reconnect noise after the run
        chaos.broker_down()


def scenario(chaos: Chaos, calls: int, *, hard_broker: bool = False) -> dict[str, Any]:
    """The run: four waves of calls, every service SIGKILLed once, the broker restarted."""
    per_wave = max(4, calls // 4)
    chaos.start_services()
    chaos.start_reviewer()
    chaos.feed(per_wave, "a")
    chaos.inject_malformed()
    time.sleep(1)
    chaos.kill_and_restart("compliance-scoring")
    chaos.feed(per_wave, "b")
    time.sleep(1)
    chaos.kill_and_restart("review-router")
    chaos.broker_restart(hard=hard_broker)
    chaos.feed(per_wave, "c")
    time.sleep(1)
    for name in ("sentiment", "transcription", "audit-writer"):
        chaos.kill_and_restart(name)
        time.sleep(1)
    # Compliance scoring down for longer than the router's segment window while a wave
    # arrives: the router must decide without it and fail closed (hold, never "no finding").
    outage = threading.Thread(
        target=chaos.kill_and_restart,
        args=("compliance-scoring",),
        kwargs={"down_s": SEGMENT_WINDOW_S + 10},
    )
    outage.start()
    chaos.feed(calls - 3 * per_wave, "d")
    chaos.inject_malformed()
    outage.join()
    return chaos.finish()


PAUSE_S = 14
"""How long a paused service stays frozen: more than twice the 6 s session timeout."""


def replica_scenario(chaos: Chaos, calls: int) -> dict[str, Any]:
    """Two instances of each stateful service: scale-out, zombies, scale-in.

    The router and compliance scoring get a second instance in the same group (partitions
    and their changelog-backed states move), both first instances are frozen with SIGSTOP
    past the session timeout while a wave arrives and then woken (the second instances
    took their partitions meanwhile), the second router is frozen the same way, and then
    the first router is SIGKILLed while a wave arrives and started again.
    """
    per_wave = max(4, calls // 4)
    chaos.start_services()
    chaos.start_reviewer()
    chaos.feed(per_wave, "a")
    chaos.add_replica("review-router", "review-router-2")
    chaos.add_replica("compliance-scoring", "compliance-scoring-2")
    time.sleep(8)  # both groups rebalanced onto two members
    frozen = [
        threading.Thread(target=chaos.pause, args=(name, PAUSE_S))
        for name in ("review-router", "compliance-scoring")
    ]
    for thread in frozen:
        thread.start()
    chaos.feed(per_wave, "b")
    chaos.inject_malformed()
    for thread in frozen:
        thread.join()
    time.sleep(3)
    second = threading.Thread(target=chaos.pause, args=("review-router-2", PAUSE_S))
    second.start()
    chaos.feed(per_wave, "c")
    second.join()
    time.sleep(2)
    chaos.procs["review-router"].kill()
    chaos.note("SIGKILL review-router")
    chaos.feed(calls - 3 * per_wave, "d")
    chaos.procs["review-router"].start()
    return chaos.finish()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per run (4 kinds)")
    parser.add_argument("--runs", type=int, default=3, help="runs in a row")
    parser.add_argument("--broker-kill", action="store_true", help="SIGKILL the broker")
    parser.add_argument(
        "--replica-runs",
        type=int,
        default=1,
        help="runs of the two-instance scenario (pauses past the session timeout) after them",
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "chaos")
    args = parser.parse_args()
    # stopped from outside: leave through the runs' cleanup (services and broker stopped)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    worst = 0
    for run in range(args.runs + args.replica_runs):
        workdir = args.workdir / f"run-{run}"
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
        started = time.monotonic()
        with chaos_run(workdir) as chaos:
            if run >= args.runs:
                figures = replica_scenario(chaos, args.calls)
                figures["scenario"] = "two instances, paused past the session timeout"
            else:
                hard = args.broker_kill or run % 2 == 1
                figures = scenario(chaos, args.calls, hard_broker=hard)
                figures["scenario"] = "kills, broker " + ("SIGKILL" if hard else "SIGTERM")
        figures["seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps({"run": run, **figures}, indent=2))
        bad = {k: v for k, v in figures.items() if k.endswith(("_bad", "_missing")) and v}
        print(f"run {run}: {'CLEAN' if not bad else f'FAILED {bad}'}", flush=True)
        worst = worst or int(bool(bad))
    return worst


if __name__ == "__main__":
    sys.exit(main())
