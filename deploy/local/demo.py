"""Run the whole Loopwise pipeline on a local broker and tell the story of three calls.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 uv run python deploy/local/demo.py

(`make demo` starts the broker and runs this.) It applies the topic catalogue,
starts every service as a child process (`run`), state under ./var/demo/, feeds
calls as a CX platform would, plays the reviewer through the review console's API,
waits for every call's released outcome, prints what happened to each call, stops the
services (SIGTERM) and prints `loopwise-audit verify` and `loopwise-feedback report`
of the demo's state. The broker and the review console stay up (URL and a token are
printed; `make demo-down` stops both). Exit status 0 only if every call came out.

Settings (environment): KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092),
LOOPWISE_DEMO_PORT_BASE (first probe port, default 18081), LOOPWISE_DEMO_TIMEOUT_S
(how long to wait for the outcomes, default 300), LOOPWISE_DEMO_READY_TIMEOUT_S
(how long each service may take to become ready, default 300), LOOPWISE_DEMO_STATE_DIR
(state and logs, default ./var/demo; emptied at the start of a run), LOOPWISE_DEMO_CLIP
(the stereo recording of the audio call: left agent, right customer), LOOPWISE_DEMO_METRICS_DIR
(if set, each service's /metrics is saved there as <service>.prom before the services stop),
LOOPWISE_DEMO_CONSOLE_PORT (the review console's web port, default 8400),
LOOPWISE_DEMO_KEEP_CONSOLE (0: stop the review console with the other services; default 1,
it stays up for you to sign in).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from loopwise.events import (
    AudioFormat,
    CallEndedV1,
    CallStartedV1,
    ChannelSpec,
    ExternalTranscriptSegmentV1,
    ReleasedOutcomeV1,
    ReviewDecisionV1,
    ReviewTaskCreatedV1,
    TenantEvent,
    TranscriptCorrection,
    decode,
    encode,
)
from loopwise.events.base import PartyRole
from loopwise.events.envelope import Envelope
from loopwise.events.review import FindingVerdict, RoutingDecisionV1, SentimentRelabel
from loopwise.events.scores import (
    CallComplianceV1,
    CallSentimentV1,
    ComplianceFinding,
    SegmentComplianceV1,
    SegmentSentimentV1,
)
from loopwise.events.transcripts import TranscriptSegmentV1
from loopwise.topics import catalogue, topic, wait_for_leaders

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
CLIP = Path(
    os.environ.get("LOOPWISE_DEMO_CLIP")
    or DATA / "asr" / "clips" / "fasterwhisper_stereo_diarization.wav"
)
MANIFEST = DATA / "asr" / "manifest.jsonl"
STATE = Path(os.environ.get("LOOPWISE_DEMO_STATE_DIR") or ROOT / "var" / "demo").resolve()
BIN = Path(sys.executable).parent
POLICY = ROOT / "deploy" / "policies" / "default.yaml"
TENANT = "acme-bank"  # its policy holds calls without the recording notice (see POLICY)
SOURCE = "cx-platform-demo"


BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
PORT_BASE = int(os.environ.get("LOOPWISE_DEMO_PORT_BASE", "18081"))
OUTCOME_TIMEOUT_S = float(os.environ.get("LOOPWISE_DEMO_TIMEOUT_S", "300"))
READY_TIMEOUT_S = float(os.environ.get("LOOPWISE_DEMO_READY_TIMEOUT_S", "300"))
STOP_TIMEOUT_S = 60.0
CONSOLE_PORT = int(os.environ.get("LOOPWISE_DEMO_CONSOLE_PORT", "8400"))
CONSOLE_PID = STATE.parent / "console.pid"  # outside STATE: a new run empties STATE
KEEP_CONSOLE = os.environ.get("LOOPWISE_DEMO_KEEP_CONSOLE", "1") != "0"

OBSERVED = (
    "cx.transcripts",
    "cx.sentiment",
    "cx.compliance",
    "hitl.routing-decisions",
    "hitl.review-tasks",
    "hitl.decisions",
    "hitl.outcomes",
)
DEAD_LETTERS = tuple(
    f"dlq.{s}"
    for s in (
        "transcription",
        "sentiment",
        "compliance-scoring",
        "review-router",
        "feedback-exporter",
        "audit-writer",
        "review-console",
    )
)


class DemoFailed(Exception):
    """The pipeline did not do what the demo waited for."""


class Interrupted(Exception):
    """SIGINT or SIGTERM reached the demo."""


def say(text: str = "", *, out: TextIO = sys.stdout) -> None:
    """Print a line at once (the demo is watched live)."""
    print(text, file=out, flush=True)


def now() -> datetime:
    return datetime.now(UTC)


# ---- the services ---------------------------------------------------------------------------


@dataclass
class Service:
    """One Loopwise service as a child process."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    group: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_after_s: float | None = None
    outlives_demo: bool = False  # the review console stays up for a person after the demo

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # Own session: a Ctrl-C in the terminal reaches the demo only; it stops the
            # services in order with SIGTERM.
            self.proc = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # set before the demo starts any thread
                preexec_fn=None if self.outlives_demo else die_with_parent,
            )
        self.started_at = time.monotonic()

    def probe(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"  {self.name} did not stop within {STOP_TIMEOUT_S:.0f} s: killed")
            self.proc.kill()
            return self.proc.wait(timeout=10)


def die_with_parent() -> None:
    """In the child: get SIGTERM if the demo dies without cleaning up (Linux; else nothing)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def end_offset(consumer: Consumer, tp: TopicPartition, timeout_s: float = 60.0) -> int:
    """The high watermark of a partition; retried while a new topic elects its leaders."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=10)[1])
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise DemoFailed(f"no end offset for {tp.topic}[{tp.partition}]: {exc}") from None
            time.sleep(0.5)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the probe servers do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pick_port(wanted: int) -> int:
    return wanted if port_free(wanted) else free_port()


def build_services(run_id: str, hmac_key: str) -> list[Service]:
    """Every service with its probe port, its state under var/demo and this run's groups."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_DEMO_")}
    base_env["KAFKA_BOOTSTRAP_SERVERS"] = BOOTSTRAP
    base_env["PYTHONUNBUFFERED"] = "1"
    specs: list[tuple[str, str, str, dict[str, str]]] = [
        (
            "transcription",
            "loopwise-transcription",
            "LOOPWISE_TRANSCRIPTION_",
            {"GROUP_ID": "{group}"},
        ),
        (
            "sentiment",
            "loopwise-sentiment",
            "LOOPWISE_SENTIMENT_",
            {
                "GROUP_ID": "{group}",
                "STATE_PATH": str(STATE / "sentiment" / "state.sqlite3"),
            },
        ),
        (
            "compliance-scoring",
            "loopwise-compliance",
            "LOOPWISE_COMPLIANCE_",
            {
                "GROUP_ID": "{group}",
                "RULE_PACKS": str(ROOT / "deploy" / "rule-packs" / "index.yaml"),
            },
        ),
        (
            "review-router",
            "loopwise-router",
            "LOOPWISE_ROUTER_",
            {
                "GROUP_ID": "{group}",
                "POLICY_PATH": str(POLICY),
                # Generous join windows for a loaded 2-core machine: the router decides as
                # soon as every score is in, so they only matter when a service lags.
                "SEGMENT_WINDOW_S": "30",
                "CALL_WINDOW_S": "60",
            },
        ),
        (
            "audit-writer",
            "loopwise-audit",
            "LOOPWISE_AUDIT_",
            {
                "GROUP_ID": "{group}",
                "DATABASE_URL": f"sqlite:///{STATE / 'audit' / 'audit.db'}",
                "CHECKPOINT_DIR": str(STATE / "audit" / "checkpoints"),
                "HMAC_KEY": hmac_key,
                "KEY_ID": "demo-1",
                "CHECKPOINT_EVERY_S": "5",
            },
        ),
        (
            "feedback-exporter",
            "loopwise-feedback",
            "LOOPWISE_FEEDBACK_",
            {
                "GROUP_ID": "{group}",
                "ROOT": str(STATE / "feedback"),
                "PUBLISH_INTERVAL_S": "5",
            },
        ),
        (
            "review-console",
            "loopwise-console",
            "LOOPWISE_CONSOLE_",
            {
                "GROUP_ID": "{group}",
                "DATA_DIR": str(STATE / "console"),
                "HTTP_PORT": str(pick_port(CONSOLE_PORT)),
            },
        ),
    ]
    services = []
    for i, (name, script, prefix, own) in enumerate(specs):
        port = pick_port(PORT_BASE + i)
        group = f"loopwise-demo-{run_id}-{name}"
        env = dict(base_env)
        env.update({prefix + k: v.replace("{group}", group) for k, v in own.items()})
        env[prefix + "OBSERVABILITY__HOST"] = "127.0.0.1"
        env[prefix + "OBSERVABILITY__PORT"] = str(port)
        services.append(
            Service(
                name=name,
                command=[str(BIN / script), "run"],
                env=env,
                port=port,
                log_path=STATE / "logs" / f"{name}.log",
                group=group,
                outlives_demo=name == "review-console",
            )
        )
    return services


def start_groups_at_end(services: list[Service]) -> None:
    """Commit each run's consumer groups at the end of every pipeline topic.

    Every run has its own groups (and so its own state changelogs: no state is restored
    from an earlier run's); starting them at the end keeps a reused broker's history
    (earlier runs, other work) out of this run.
    """
    probe = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "loopwise-demo-probe"})
    try:
        meta = probe.list_topics(timeout=30)
        ends = []
        for spec in catalogue().topics:
            if spec.label.startswith("dlq."):
                continue
            for p in meta.topics[spec.name].partitions:
                tp = TopicPartition(spec.name, p)
                ends.append(TopicPartition(spec.name, p, end_offset(probe, tp)))
    finally:
        probe.close()
    for svc in services:
        committer = Consumer(
            {"bootstrap.servers": BOOTSTRAP, "group.id": svc.group, "enable.auto.commit": False}
        )
        deadline = time.monotonic() + 90
        try:
            while True:
                try:
                    committer.commit(offsets=ends, asynchronous=False)
                    break
                except KafkaException as exc:  # a new broker still creating __consumer_offsets
                    if time.monotonic() > deadline:
                        raise DemoFailed(f"could not start group {svc.group}: {exc}") from None
                    time.sleep(1)
        finally:
            committer.close()


def prepare_topics() -> None:
    """Wait until every catalogue topic has leaders (services create their own changelogs)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 4})
    try:
        wait_for_leaders(admin, (spec.name for spec in catalogue().topics), timeout_s=90)
    except TimeoutError as exc:
        raise DemoFailed(str(exc)) from None


def forget_run(run_id: str, services: list[Service]) -> None:
    """Delete this run's state changelogs and consumer groups (best effort)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 4})
    try:
        names = [
            t
            for t in admin.list_topics(timeout=15).topics
            if t.startswith(f"loopwise-demo-{run_id}-")
        ]
        futures = list(admin.delete_topics(names, operation_timeout=30).values()) if names else []
        futures += list(admin.delete_consumer_groups([s.group for s in services]).values())
        for future in futures:
            try:
                future.result(timeout=30)
            except Exception:  # noqa: BLE001, S112 - a group that never formed, a slow broker
                continue
    except Exception as exc:  # noqa: BLE001 - tidying up must not fail the demo
        say(f"  (could not delete this run's topics and groups: {exc})")


def trail_env(services: list[Service]) -> dict[str, str]:
    """The audit writer's environment, for `loopwise-audit verify`."""
    return next(s.env for s in services if s.name == "audit-writer")


def wait_ready(services: list[Service]) -> None:
    """Poll every service's /readyz (consumer group joined, model loaded) until all answer."""
    pending = {s.name: s for s in services}
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_note = time.monotonic()
    while pending:
        for name, svc in list(pending.items()):
            code = svc.exited()
            if code is not None:
                raise DemoFailed(
                    f"{name} exited with status {code} while starting; its log "
                    f"({svc.log_path}) ends:\n{textwrap.indent(svc.log_tail(), '    ')}"
                )
            if svc.probe("/readyz"):
                svc.ready_after_s = time.monotonic() - svc.started_at
                say(f"  ready: {name:<20} {svc.ready_after_s:5.1f} s   :{svc.port}/readyz")
                del pending[name]
        if not pending:
            break
        if time.monotonic() > deadline:
            raise DemoFailed(
                f"not ready after {READY_TIMEOUT_S:.0f} s: {', '.join(sorted(pending))} "
                f"(logs in {STATE / 'logs'}; LOOPWISE_DEMO_READY_TIMEOUT_S waits longer)"
            )
        if time.monotonic() - last_note > 30:
            say(f"  still waiting for {', '.join(sorted(pending))} ...")
            last_note = time.monotonic()
        time.sleep(0.5)


def save_metrics(services: list[Service]) -> None:
    """With LOOPWISE_DEMO_METRICS_DIR, keep every service's /metrics (tests/deploy reads them)."""
    where = os.environ.get("LOOPWISE_DEMO_METRICS_DIR")
    if not where:
        return
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    for svc in services:
        with urllib.request.urlopen(f"http://127.0.0.1:{svc.port}/metrics", timeout=10) as r:
            (out / f"{svc.name}.prom").write_bytes(r.read())
    say(f"metrics of {len(services)} services saved in {out}")


def stop_services(services: list[Service]) -> None:
    """SIGTERM every running service (they drain and commit), then wait; kill stragglers."""
    running = [s for s in services if s.exited() is None and s.proc is not None]
    if not running:
        return
    say(f"stopping {len(running)} services (SIGTERM) ...")
    for svc in running:
        svc.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for svc in running:
        code = svc.wait_stopped(deadline)
        say(f"  stopped: {svc.name:<20} exit status {code}")


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM (and SIGINT) into an exception so the services are always stopped."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---- watching the pipeline and playing the reviewer --------------------------------------------


@dataclass
class CallStory:
    """Everything the pipeline said about one call."""

    call_id: str
    title: str
    segment_ids: list[str] = field(default_factory=list)
    transcripts: dict[str, TranscriptSegmentV1] = field(default_factory=dict)
    segment_sentiment: dict[str, SegmentSentimentV1] = field(default_factory=dict)
    call_sentiment: list[CallSentimentV1] = field(default_factory=list)
    segment_compliance: dict[str, SegmentComplianceV1] = field(default_factory=dict)
    call_compliance: list[CallComplianceV1] = field(default_factory=list)
    routing: list[RoutingDecisionV1] = field(default_factory=list)
    tasks: list[ReviewTaskCreatedV1] = field(default_factory=list)
    other_task_events: list[TenantEvent] = field(default_factory=list)
    decisions: list[ReviewDecisionV1] = field(default_factory=list)
    outcomes: list[ReleasedOutcomeV1] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    reference: dict[str, str] = field(default_factory=dict)  # speaker -> true text
    duration_s: float = 0.0

    def call_outcome(self) -> ReleasedOutcomeV1 | None:
        return next((o for o in reversed(self.outcomes) if o.scope == "call"), None)


class Pipeline:
    """Produces the platform's events, watches every output topic, decides review tasks."""

    def __init__(self) -> None:
        self.producer = Producer(
            {
                "bootstrap.servers": BOOTSTRAP,
                "enable.idempotence": True,
                "partitioner": "murmur2_random",  # as the services: one partition per call
                "client.id": "loopwise-demo",
            }
        )
        self.calls: dict[str, CallStory] = {}
        self.console: ConsoleClient | None = None
        self.consumer = Consumer(
            {
                "bootstrap.servers": BOOTSTRAP,
                "group.id": f"loopwise-demo-watch-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "client.id": "loopwise-demo-watch",
            }
        )
        # Read from the current end of every output topic: only this run's events matter.
        names = [topic(label) for label in (*OBSERVED, *DEAD_LETTERS)]
        metadata = self.consumer.list_topics(timeout=30)
        assignment = []
        for name in names:
            meta = metadata.topics.get(name)
            if meta is None or meta.error is not None:
                raise DemoFailed(f"topic {name} is missing on {BOOTSTRAP}")
            for partition in meta.partitions:
                high = end_offset(self.consumer, TopicPartition(name, partition))
                assignment.append(TopicPartition(name, partition, high))
        self.consumer.assign(assignment)
        self.dead_letter_topics = {topic(label) for label in DEAD_LETTERS}

    # -- producing ------------------------------------------------------------------------------

    def send(self, label: str, event: TenantEvent, *, source: str = SOURCE) -> Envelope:
        key, value, headers, envelope = encode(event, source=source)
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(err.str())

        self.producer.produce(
            topic(label), key=key, value=value, headers=cast(Any, headers), on_delivery=delivered
        )
        self.producer.poll(0)
        if errors:
            raise DemoFailed(f"could not produce to {topic(label)}: {errors[0]}")
        return envelope

    def flush(self) -> None:
        if self.producer.flush(30) != 0:
            raise DemoFailed(f"the broker at {BOOTSTRAP} did not take the demo's events")

    # -- consuming ------------------------------------------------------------------------------

    def pump(self, seconds: float) -> None:
        """Read and handle output events for about `seconds`."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            msgs = self.consumer.consume(num_messages=200, timeout=max(0.0, min(left, 0.5)))
            for msg in msgs:
                if msg.error() is None:
                    self._handle(msg)
            if self.console is not None:
                self.console.work()
            self.producer.poll(0)
            if time.monotonic() >= end:
                return

    def wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                return False
            self.pump(0.5)
        return True

    def _handle(self, msg: Any) -> None:
        key = msg.key().decode("utf-8", "replace") if msg.key() else ""
        if msg.topic() in self.dead_letter_topics:
            story = self.calls.get(key)
            if story is not None:
                headers = {k: (v or b"").decode("utf-8", "replace") for k, v in msg.headers() or []}
                story.dead_letters.append(
                    f"{headers.get('dlq_service', '?')}: {headers.get('dlq_stage', '?')} "
                    f"{headers.get('dlq_error_class', '?')}: {headers.get('dlq_reason', '?')}"
                )
            return
        try:
            envelope, event = decode(msg.value(), msg.headers())
        except Exception as exc:  # noqa: BLE001 - a stranger's bad record is not the demo's
            if key in self.calls:
                self.calls[key].dead_letters.append(f"undecodable output on {msg.topic()}: {exc}")
            return
        story = self.calls.get(getattr(event, "call_id", ""))
        if story is None:
            return
        if isinstance(event, TranscriptSegmentV1):
            story.transcripts[event.segment_id] = event
        elif isinstance(event, SegmentSentimentV1):
            story.segment_sentiment[event.segment_id] = event
        elif isinstance(event, CallSentimentV1):
            story.call_sentiment.append(event)
        elif isinstance(event, SegmentComplianceV1):
            story.segment_compliance[event.segment_id] = event
        elif isinstance(event, CallComplianceV1):
            story.call_compliance.append(event)
        elif isinstance(event, RoutingDecisionV1):
            story.routing.append(event)
        elif isinstance(event, ReviewTaskCreatedV1):
            story.tasks.append(event)
            self.review(story, event, envelope)
        elif isinstance(event, ReviewDecisionV1):
            if all(d.decision_id != event.decision_id for d in story.decisions):
                story.decisions.append(event)
        elif isinstance(event, ReleasedOutcomeV1):
            story.outcomes.append(event)
        else:
            story.other_task_events.append(event)

    # -- the reviewer ---------------------------------------------------------------------------

    def review(self, story: CallStory, task: ReviewTaskCreatedV1, envelope: Envelope) -> None:
        """Decide a task as a reviewer in the console would: approve, correct, judge findings."""
        if any(d.task_id == task.task_id for d in story.decisions):
            return  # a redelivered task
        corrections = []
        relabels = []
        for seg in task.segments:
            fixed = corrected_text(story, seg.speaker, seg.text)
            if fixed is not None:
                corrections.append(TranscriptCorrection(segment_id=seg.segment_id, text=fixed))
            if seg.speaker == "customer" and seg.sentiment_label is not None:
                # The reviewer reads the customer's turn and gives the label they hear.
                heard = "negative" if ANGRY.search(seg.text) else seg.sentiment_label
                relabels.append(SentimentRelabel(segment_id=seg.segment_id, label=heard))
        findings = [f for seg in task.segments for f in seg.findings] + list(task.call_findings)
        verdicts = []
        seen = set()
        for finding in findings:
            if finding.finding_id in seen:
                continue
            seen.add(finding.finding_id)
            verdicts.append(verdict_on(finding))
        if self.console is None:
            raise DemoFailed("a review task arrived before the review console was reachable")
        # Decided through the console's API (claim, then decide); the console publishes the
        # ReviewDecisionV1, which comes back to the demo on hitl.decisions.
        self.console.pending[task.task_id] = {
            "verdict": "approve",
            "transcript_corrections": [c.model_dump() for c in corrections],
            "sentiment_labels": [r.model_dump() for r in relabels],
            "finding_verdicts": [
                {"finding_id": v.finding_id, "verdict": v.verdict, "note": v.note} for v in verdicts
            ],
            "comment": "Checked in the demo: redaction is complete, findings judged.",
        }

    def close(self) -> None:
        self.producer.flush(10)
        self.consumer.close()


@dataclass
class ConsoleClient:
    """The review console's API as the scripted reviewer uses it (and the person's token)."""

    url: str
    reviewer_token: str
    person_token: str
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # task id -> decision
    failures: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 - the local console's http URL
            f"{self.url}/api/v1{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.reviewer_token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                return int(answer.status), json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return int(exc.code), json.loads(exc.read() or b"{}")
        except (urllib.error.URLError, OSError) as exc:
            return 0, {"error": str(exc)}

    def work(self) -> None:
        """Claim and decide every pending task the console has materialised by now."""
        for task_id, body in list(self.pending.items()):
            path = f"/tasks/{urllib.parse.quote(task_id, safe='')}"
            status, answer = self.call("POST", f"{path}/claim")
            if status in (0, 404):
                continue  # not in the console yet (its consumer is a moment behind)
            if status == 200:
                status, answer = self.call("POST", f"{path}/decision", body)
            if status != 200:
                self.failures.append(f"{task_id}: HTTP {status} {answer}")
                say(f"  the console refused the decision on {task_id}: HTTP {status} {answer}")
            del self.pending[task_id]


def console_tokens(svc: Service) -> tuple[str, str]:
    """A token for the scripted reviewer and one for a person (supervisor), from the CLI."""
    tokens = []
    for role, subject in (("reviewer", "reviewer-demo-1"), ("supervisor", "demo-person")):
        made = subprocess.run(
            [
                str(BIN / "loopwise-console"),
                "create-token",
                *("--role", role, "--tenant", TENANT, "--subject", subject),
            ],
            env=svc.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0:
            raise DemoFailed(f"loopwise-console create-token failed: {made.stderr[-2000:]}")
        tokens.append(made.stdout.strip())
    return tokens[0], tokens[1]


def stop_previous_console() -> None:
    """Stop a review console an earlier demo left running (its port and state are reused)."""
    try:
        pid = int(CONSOLE_PID.read_text().strip())
    except (OSError, ValueError):
        return
    with suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
    CONSOLE_PID.unlink(missing_ok=True)


ANGRY = re.compile(
    r"ridiculous|unacceptable|never have happened|terrible|business elsewhere", re.IGNORECASE
)


def verdict_on(finding: ComplianceFinding) -> FindingVerdict:
    """The demo reviewer confirms compliance findings and dismisses weak escalation cues."""
    dismissed = finding.category == "escalation" and finding.severity == "low"
    return FindingVerdict(
        finding_id=finding.finding_id,
        rule_id=finding.rule_id,
        verdict="dismissed" if dismissed else "confirmed",
        note="only irritation, no escalation" if dismissed else None,
    )


def normalised(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def corrected_text(story: CallStory, speaker: str, text: str) -> str | None:
    """What the reviewer types where the transcript is wrong (None: nothing to correct)."""
    reference = story.reference.get(speaker)
    if reference is not None:
        return reference if normalised(reference) != normalised(text) else None
    if "manger" in text:  # the platform's recogniser misheard "manager"
        return text.replace("manger", "manager")
    return None


# ---- the calls ----------------------------------------------------------------------------------


def call_started(call_id: str, queue: str, audio: AudioFormat | None = None) -> CallStartedV1:
    return CallStartedV1(
        tenant_id=TENANT,
        call_id=call_id,
        occurred_at=now(),
        queue=queue,
        region="eu-west",
        language_hint="en",
        agent_id="agent-0042",
        audio=audio,
        channels=[ChannelSpec(index=0, role="agent"), ChannelSpec(index=1, role="customer")],
        metadata={"demo": True},
    )


ANGRY_CALL: list[tuple[PartyRole, str]] = [
    ("agent", "Good morning, Acme Bank, this is Sam. How can I help you today?"),
    (
        "customer",
        "This is ridiculous. You charged me twice for the same flight and nobody called "
        "me back. I want to speak to your manger.",
    ),
    ("agent", "I am sorry about that. Let me find the payment. What is your card number?"),
    (
        "customer",
        "It is 4111 1111 1111 1111, expiry 09/28. Fix it today or I will take my business "
        "elsewhere.",
    ),
    ("agent", "Thank you. I have refunded the duplicate charge, you will see it in three days."),
    ("customer", "It should never have happened. Terrible service, honestly."),
]

CALM_CALL: list[tuple[PartyRole, str]] = [
    (
        "agent",
        "Hello, thank you for calling Acme Bank, this call is recorded for quality and "
        "training purposes. How can I help?",
    ),
    ("customer", "Hi, I would just like to change the address you send my letters to."),
    ("agent", "Of course, that is done for you now. Is there anything else I can do?"),
    ("customer", "No, that was quick, thank you so much for your help. Have a lovely day."),
]


def feed_external_call(
    pipe: Pipeline, story: CallStory, queue: str, turns: list[tuple[PartyRole, str]]
) -> None:
    """A call whose transcript comes from the platform's own recogniser, turn by turn."""
    pipe.send("cx.calls", call_started(story.call_id, queue))
    at = 0.0
    for i, (speaker, text) in enumerate(turns):
        duration = max(2.0, len(text.split()) * 0.35)
        seg_id = f"turn-{i:03d}"
        story.segment_ids.append(seg_id)
        pipe.send(
            "cx.transcripts.external",
            ExternalTranscriptSegmentV1(
                tenant_id=TENANT,
                call_id=story.call_id,
                occurred_at=now(),
                segment_id=seg_id,
                speaker=speaker,
                channel=0 if speaker == "agent" else 1,
                start_s=round(at, 2),
                end_s=round(at + duration, 2),
                text=text,
                confidence=0.91,
                language="en",
                engine="platform-asr-demo",
            ),
        )
        at += duration + 0.5
    pipe.flush()
    story.duration_s = round(at, 1)


def end_call(pipe: Pipeline, story: CallStory, last: dict[str, int] | None = None) -> None:
    pipe.send(
        "cx.calls",
        CallEndedV1(
            tenant_id=TENANT,
            call_id=story.call_id,
            occurred_at=now(),
            reason="completed",
            duration_s=story.duration_s,
            last_audio_sequence=last,
        ),
    )
    pipe.flush()


def read_reference() -> dict[str, str]:
    """The clip's true text per channel (agent left, customer right), from the data manifest."""
    import json

    if not MANIFEST.exists():
        return {}
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("file", "").endswith(CLIP.name):
            texts = entry.get("channel_texts", {})
            return {"agent": texts.get("left", ""), "customer": texts.get("right", "")}
    return {}


def feed_audio_call(pipe: Pipeline, story: CallStory) -> dict[str, int]:
    """Stream the stereo clip as 8 kHz mu-law, one channel per party, 200 ms chunks.

    The events are `loopwise-replay`'s (loopwise.replay.recording_events); the demo
    sends them itself, reading its watcher meanwhile, and hangs up later (end_call).
    """
    from loopwise.replay import CallOptions, recording_events

    options = CallOptions(tenant=TENANT, queue="support", region="eu-west", language="en")
    # The platform streams until the hang-up: two seconds of line silence after the clip
    # let voice activity detection close the last utterance while the call is still on.
    events = recording_events(
        CLIP,
        call_id=story.call_id,
        options=options,
        encoding="mulaw",
        sample_rate=8000,
        chunk_ms=200,
        tail_silence_s=2.0,
    )
    last: dict[str, int] = {}
    sent_until = 0.0
    for item in events:
        if isinstance(item.event, CallEndedV1):
            last = dict(item.event.last_audio_sequence or {})
            story.duration_s = item.event.duration_s or 0.0
            continue  # the demo hangs up once both parties were heard (end_call)
        if item.at_s > sent_until:
            pipe.pump(item.at_s - sent_until)  # real-time pace; the watcher keeps reading
            sent_until = item.at_s
        pipe.send(item.label, item.event)
    pipe.flush()
    return last


# ---- telling the story ---------------------------------------------------------------------------


def fmt_score(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def print_story(story: CallStory) -> None:
    say()
    say("=" * 100)
    say(f"{story.title}   call {story.call_id}")
    say("=" * 100)
    say("transcript (redacted), sentiment, findings per segment:")
    segs = sorted(story.transcripts.values(), key=lambda s: (s.start_s, s.segment_id))
    if not segs:
        say("  (no transcript segment arrived)")
    for seg in segs:
        sent = story.segment_sentiment.get(seg.segment_id)
        comp = story.segment_compliance.get(seg.segment_id)
        label = f"{sent.label} {fmt_score(sent.score)}" if sent else "no sentiment"
        say(
            f"  [{seg.start_s:5.1f}-{seg.end_s:5.1f}s] {seg.speaker:<8} {seg.source:<9} "
            f"conf {seg.confidence:.2f}  sentiment {label}"
        )
        for line in textwrap.wrap(seg.text, 90):
            say(f"      | {line}")
        if seg.redactions:
            say("      redacted: " + ", ".join(r.type for r in seg.redactions))
        for f in comp.findings if comp else []:
            say(f"      finding: {f.category}/{f.rule_id} ({f.severity}, score {f.score:.2f})")
    for cs in story.call_sentiment:
        if cs.reason == "call_ended":
            say(
                f"call sentiment: final {fmt_score(cs.final)} ({cs.label}), worst "
                f"{fmt_score(cs.worst)}, {cs.segments_scored} customer turn(s) scored"
            )
    if story.call_compliance:
        cc = story.call_compliance[-1]
        findings = ", ".join(f"{f.category}/{f.rule_id} ({f.severity})" for f in cc.findings)
        say(
            f"call compliance: {cc.segments_checked} segment(s) checked, "
            f"rev {cc.revision}: {findings or 'no call-level findings'}"
        )
        for f in cc.findings:
            if f.explanation:
                say(f"      {f.rule_id}: {f.explanation}")
    say("routing decisions:")
    for d in sorted(story.routing, key=lambda d: (d.scope != "call", d.segment_id or "")):
        where = "call" if d.scope == "call" else f"segment {d.segment_id}"
        extra = f" -> task {d.task_id}" if d.task_id else ""
        missing = f" (decided without {', '.join(d.missing_inputs)})" if d.missing_inputs else ""
        rule = d.rule_id or "no rule fired"
        prio = f" {d.priority}" if d.priority else ""
        say(f"  {where:<20} {d.outcome:<6} {rule}{prio}{extra}{missing}")
    say("review tasks and the reviewer's decisions:")
    if not story.tasks:
        say("  (no review task)")
    for task in story.tasks:
        say(
            f"  task {task.task_id}: {task.kind} {task.scope} {task.mode} {task.priority}, "
            f"rules {', '.join(task.rule_ids)}"
        )
        for reason in task.reasons:
            say(f"      why: {reason}")
        for dec in (d for d in story.decisions if d.task_id == task.task_id):
            verdicts = ", ".join(f"{v.rule_id}={v.verdict}" for v in dec.finding_verdicts)
            say(
                f"      decision: {dec.verdict}; {len(dec.transcript_corrections)} correction(s)"
                f"; findings: {verdicts or 'none'}"
            )
            for c in dec.transcript_corrections:
                say(f"      corrected {c.segment_id}: {c.text}")
            for r in dec.sentiment_labels:
                model = story.segment_sentiment.get(r.segment_id)
                if model is not None and model.label != r.label:
                    say(f"      relabelled {r.segment_id}: {r.label} (model said {model.label})")
    for other in story.other_task_events:
        say(f"  {type(other).__name__}: {getattr(other, 'task_id', '')}")
    say("released outcomes:")
    if not story.outcomes:
        say("  (none arrived)")
    for out in story.outcomes:
        where = "call" if out.scope == "call" else f"segment {out.segments[0].segment_id}"
        corrected = sum(1 for s in out.segments if s.corrected)
        verdict = f", verdict {out.verdict}" if out.verdict else ""
        say(
            f"  {where:<20} release={out.release}{verdict}, {len(out.segments)} segment(s) "
            f"({corrected} corrected), {len(out.findings)} finding(s) standing"
            if out.segments or out.scope == "call"
            else f"  {out.scope} release={out.release}"
        )
    for dl in story.dead_letters:
        say(f"  DEAD LETTER {dl}")


# ---- main ---------------------------------------------------------------------------------------


def run_tool(title: str, command: list[str], env: dict[str, str] | None = None) -> int:
    say()
    say(f"$ {' '.join(Path(command[0]).name if i == 0 else a for i, a in enumerate(command))}")
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    for line in (result.stdout + result.stderr).rstrip().splitlines():
        say(f"  {line}")
    if result.returncode != 0:
        say(f"  ({title} exited with status {result.returncode})")
    return result.returncode


def apply_topics() -> None:
    say(f"applying the topic catalogue on {BOOTSTRAP} ...")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP}
    result = subprocess.run(
        [str(BIN / "loopwise"), "topics", "apply"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1:] or [result.stderr.strip()]
    say(f"  {summary[0]}")
    if result.returncode != 0:
        raise DemoFailed(f"loopwise topics apply failed:\n{result.stdout}{result.stderr}")


def wait_for_sinks(pipe: Pipeline, services: list[Service], timeout_s: float = 120.0) -> None:
    """Wait until the audit writer and the feedback exporter committed every event so far."""
    groups = {s.name: s.group for s in services if s.name in ("audit-writer", "feedback-exporter")}
    inputs = {
        "audit-writer": [
            t
            for t in (
                "cx.calls",
                "cx.audio",
                "cx.transcripts.external",
                *OBSERVED,
            )
        ],
        "feedback-exporter": ["hitl.review-tasks", "hitl.decisions", "hitl.outcomes"],
    }
    deadline = time.monotonic() + timeout_s
    for name, group in groups.items():
        probe = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group})
        try:
            meta = probe.list_topics(timeout=30)
            parts = [
                TopicPartition(topic(label), p)
                for label in inputs[name]
                for p in meta.topics[topic(label)].partitions
            ]
            ends = {(tp.topic, tp.partition): end_offset(probe, tp) for tp in parts}
            while True:
                committed = probe.committed(parts, timeout=30)
                behind = sum(
                    max(0, ends[(tp.topic, tp.partition)] - max(tp.offset, 0)) for tp in committed
                )
                if behind == 0:
                    break
                if time.monotonic() > deadline:
                    say(f"  {name} is still {behind} event(s) behind; its report may miss them")
                    break
                pipe.pump(0.5)
        finally:
            probe.close()


def main() -> int:
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:6]
    say(f"Loopwise demo, run {run_id}: broker {BOOTSTRAP}, state in {STATE}")
    stop_previous_console()
    if STATE.exists():
        if any(STATE.iterdir()) and not (STATE / "logs").is_dir():
            say(f"{STATE} holds something else than demo state; not emptying it", out=sys.stderr)
            return 2
        shutil.rmtree(STATE)
    for sub in ("logs", "sentiment", "audit", "feedback", "console"):
        (STATE / sub).mkdir(parents=True)
    services = build_services(run_id, secrets.token_hex(32))
    console = next(s for s in services if s.name == "review-console")
    others = [s for s in services if s is not console]
    keep_console = False
    pipe: Pipeline | None = None
    complete = False
    failed_tools = 0
    started_services = False
    try:
        with signals_interrupt():
            apply_topics()
            prepare_topics()
            start_groups_at_end(services)
            started_services = True
            reviewer_token, person_token = console_tokens(console)
            say("starting the services ...")
            for svc in services:
                svc.start()
                say(f"  started {svc.name:<20} pid {svc.proc.pid if svc.proc else '?'}")
            wait_ready(services)
            pipe = Pipeline()
            console_url = f"http://127.0.0.1:{console.env['LOOPWISE_CONSOLE_HTTP_PORT']}"
            pipe.console = ConsoleClient(console_url, reviewer_token, person_token)
            stories = feed_calls(pipe, run_id)
            complete = wait_for_outcomes(pipe, stories)
            if pipe.console.failures:
                complete = False
            for story in stories:
                print_story(story)
            dead = sum(len(story.dead_letters) for story in stories)
            say()
            if dead:
                say(f"{dead} event(s) of the demo's calls were dead-lettered (DEAD LETTER above)")
                complete = False
            say("waiting for the audit writer and feedback exporter to catch up ...")
            wait_for_sinks(pipe, services)
            save_metrics(services)
            stop_services(others)
            failed_tools = report(services)
            keep_console = KEEP_CONSOLE and console.exited() is None
            elapsed = time.monotonic() - started
            say()
            if complete and not failed_tools:
                say(f"demo complete in {elapsed:.0f} s: every call was released.")
            else:
                say(f"demo INCOMPLETE after {elapsed:.0f} s (see above; logs below).")
    except Interrupted as exc:
        say(f"\ninterrupted ({exc}): stopping the services")
        complete = False
        failed_tools = 1
    except DemoFailed as exc:
        say(f"\nDEMO FAILED: {exc}", out=sys.stderr)
        complete = False
        failed_tools = 1
    finally:
        # Never leave a service behind, whatever happened (signals ignored meanwhile).
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            stop_services(others if keep_console else services)
            if pipe is not None:
                pipe.close()
            if started_services:
                forget_run(run_id, others)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    if keep_console and console.proc is not None and pipe is not None and pipe.console:
        CONSOLE_PID.write_text(f"{console.proc.pid}\n")
        say()
        say(f"the review console stays up: {pipe.console.url}/ui/login")
        say(f"  sign in with this token (supervisor of {TENANT}): {pipe.console.person_token}")
        say("  'make demo-down' stops the console and the broker")
    say(f"logs: {STATE / 'logs'}; the broker is still up ('make kafka-down' stops it)")
    return 0 if complete and not failed_tools else 1


def feed_calls(pipe: Pipeline, run_id: str) -> list[CallStory]:
    stories: list[CallStory] = []
    angry = CallStory(f"demo-{run_id}-angry", "(b) external transcripts: angry customer, card")
    calm = CallStory(f"demo-{run_id}-calm", "(c) external transcripts: calm call")
    audio = CallStory(f"demo-{run_id}-audio", "(a) audio call: stereo clip, 8 kHz mu-law")
    have_audio = CLIP.exists()
    if have_audio:
        audio.reference = read_reference()
        stories.append(audio)
    else:
        say(f"SKIPPING the audio call: {CLIP} is not there (the dev data sits beside the repo)")
    stories += [angry, calm]
    for story in stories:
        pipe.calls[story.call_id] = story
    say()
    say("feeding the calls as the CX platform would ...")
    if have_audio:
        say(f"  {audio.call_id}: streaming {CLIP.name} as 200 ms mu-law chunks (real time)")
        last = feed_audio_call(pipe, audio)
        # Hang up once both parties' last words came out of the recogniser (as a platform
        # that ends the call after the line went quiet).
        if not pipe.wait_until(both_parties_heard(audio), 120):
            say(f"  {audio.call_id}: not both channels transcribed within 120 s; ending anyway")
        end_call(pipe, audio, last)
        say(f"  {audio.call_id}: ended (last chunk per channel {last})")
    for story, queue, turns in ((angry, "billing", ANGRY_CALL), (calm, "general", CALM_CALL)):
        feed_external_call(pipe, story, queue, turns)
        say(f"  {story.call_id}: {len(turns)} platform transcript segments sent")
    for story in (angry, calm):
        # The platform hangs up after the last turn; the demo waits until that turn went
        # through redaction so the call's end finds every segment.
        if not pipe.wait_until(transcribed(story), 120):
            say(f"  {story.call_id}: not every segment came out of transcription in 120 s")
        end_call(pipe, story)
        say(f"  {story.call_id}: ended")
    return stories


def both_parties_heard(story: CallStory) -> Callable[[], bool]:
    """Whether the agent and the customer channel each gave a transcript segment."""
    return lambda: {t.speaker for t in story.transcripts.values()} >= {"agent", "customer"}


def transcribed(story: CallStory) -> Callable[[], bool]:
    """Whether every segment the platform sent came out redacted."""
    return lambda: (
        sum(1 for t in story.transcripts.values() if t.source == "external")
        >= len(story.segment_ids)
    )


def wait_for_outcomes(pipe: Pipeline, stories: list[CallStory]) -> bool:
    say()
    say(
        f"acting as the reviewer; waiting up to {OUTCOME_TIMEOUT_S:.0f} s for every call's "
        "released outcome ..."
    )
    reported: set[str] = set()

    def all_released() -> bool:
        for story in stories:
            out = story.call_outcome()
            if out is not None and story.call_id not in reported:
                reported.add(story.call_id)
                say(f"  released: {story.call_id} ({out.release})")
        return len(reported) == len(stories)

    pipe.wait_until(all_released, OUTCOME_TIMEOUT_S)
    # Late segment outcomes of the same calls: read what is already there.
    pipe.pump(2.0)
    ok = all_released()
    if not ok:
        for story in stories:
            if story.call_outcome() is None:
                say(f"  NOT RELEASED: {story.call_id}: {missing_steps(story)}")
    return ok


def missing_steps(story: CallStory) -> str:
    """Where in the pipeline a call stopped."""
    if not story.transcripts:
        return "no transcript segment came out of transcription"
    if not story.segment_sentiment:
        return "no sentiment came out of the sentiment service"
    if not story.segment_compliance:
        return "no findings came out of compliance scoring"
    if not any(d.scope == "call" for d in story.routing):
        return "the router made no call-level decision"
    holds = [t.task_id for t in story.tasks if t.kind == "hold"]
    if holds:
        decided = {d.task_id for d in story.decisions}
        state = "all decided" if decided >= set(holds) else "not all decided"
        return f"held by task(s) {', '.join(holds)} ({state}); no call outcome published"
    return "call routed but no call-level outcome published"


def report(services: list[Service]) -> int:
    env = trail_env(services)
    failures = 0
    say()
    say("-" * 100)
    say("audit trail and training data of the demo")
    say("-" * 100)
    failures += run_tool("loopwise-audit verify", [str(BIN / "loopwise-audit"), "verify"], env)
    feedback_env = next(s.env for s in services if s.name == "feedback-exporter")
    failures += run_tool(
        "loopwise-feedback report",
        [str(BIN / "loopwise-feedback"), "report", "--root", str(STATE / "feedback")],
        feedback_env,
    )
    return failures


if __name__ == "__main__":
    sys.exit(main())
