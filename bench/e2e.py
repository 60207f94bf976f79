"""The text path end to end, next to a raw confluent-kafka chain with the same hops (issue 9).

    uv run python bench/e2e.py [--segments 20000] [--rates 25,100] [--rounds 2] [--json]

Text path: external transcript segments (loopwise.cx.transcripts.external, plus CallStarted
and CallEnded on loopwise.cx.calls, all sent by `loopwise.replay`) -> transcription ->
sentiment and compliance scoring -> review router -> routing decisions. The four services
run as the real processes (`loopwise-transcription run` and so on) with their shipped
settings, the default policy and rule packs; only the group ids, probe ports, state paths
and the router's join windows are set here (windows of 300/600 s: the router decides a
segment as soon as its transcript, sentiment and compliance result are in, and a window
only closes when an input lags; long windows keep every decision a complete join under a
backlog, and the table counts decisions that still missed an input).

Raw chain: the same hops as processes of this script (`raw-stage`) on plain confluent-kafka:
hop1 reads the calls and the external segments, two scorers read calls and hop1's output,
a joiner reads calls, hop1 and both scorers and emits once all three results of a segment
are in. Each stage consumes a batch (poll up to 100 ms for the first record, then what is
fetched, up to 500), does a trivial transform (json.loads, add a field, json.dumps), produces
with the services' producer settings (idempotent, acks=all, linger.ms=1000, lz4, murmur2) and
awaits the acks of the batch before storing its offsets: the shared Worker's guarantee
without validation, envelopes or state.

For each round (real and raw alternate, ABBA order across rounds):

* throughput: a backlog of --segments segments is produced first; the downstream stages are
  started and ready; then the head (transcription / hop1) starts. Wall time = first hop-1
  output to the last segment's routing decision (broker CreateTime of both records).
  CPU per segment = user+system CPU of the four stage processes over that time (from
  /proc), and the broker's separately.
* latency: with the chain running, segments are sent at each fixed --rates for
  --latency-seconds; per hop, latency = CreateTime of the hop's output for that segment
  minus CreateTime of the external segment record. Both are set by librdkafka when the
  application hands the record to its producer (the topics keep CreateTime), so a hop's
  figure includes the input's delivery, fetch and handling but not its own output's
  delivery; "seen" is when this script's consumer received the routing decision (the last
  delivery included).

Before the rounds, one raw-chain backlog run and one short text-path backlog run warm the
broker up (not reported; --no-warmup skips them). Rounds are isolated: real rounds use new
call ids and new consumer groups committed at the end of every topic before their input is
produced (so new router and compliance changelogs too); raw rounds use new topics. By
default the script starts its own broker (`deploy/local/kafka.sh up` on free ports, a
temporary data dir, `down --purge` at the end); --bootstrap uses a running one instead.
Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
DIALOGUES = ROOT.parent / "shared" / "data" / "dialogues" / "star_dev_100.jsonl"
BIN = Path(sys.executable).parent
KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"
POLICY = ROOT / "deploy" / "policies" / "default.yaml"
RULE_PACKS = ROOT / "deploy" / "rule-packs" / "index.yaml"
HOPS = ("transcript", "sentiment", "compliance", "decision")
CONCURRENT_CALLS = 20
READY_TIMEOUT_S = 180.0

# Used when ../shared/data is absent: a few turns of a billing call.
FALLBACK_DIALOGUE = [
    ("agent", "Thank you for calling, this call is recorded for quality and training."),
    ("customer", "Hi, I was charged twice for my subscription this month."),
    ("agent", "I am sorry to hear that. Can I have your name and date of birth, please?"),
    ("customer", "Sure, it is Jane Doe, the fourth of May nineteen eighty."),
    ("agent", "Thank you. I can see two payments, I will refund the second one now."),
    ("customer", "This is ridiculous, it is the third time this has happened."),
    ("agent", "I understand, I have added a note so it does not happen again."),
    ("customer", "Okay, thanks for sorting it out."),
]


def log(text: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# ---- the input ------------------------------------------------------------------------------


def dialogues() -> tuple[list[list[tuple[str, str]]], str]:
    """Turns of every STAR dev dialogue (speaker, text), or a built-in call without the data."""
    if not DIALOGUES.is_file():
        log(f"{DIALOGUES} not found: using a built-in 8-turn call")
        return [FALLBACK_DIALOGUE], "built-in 8-turn call"
    result = []
    for line in DIALOGUES.read_text(encoding="utf-8").splitlines():
        if line.strip():
            turns = json.loads(line)["turns"]
            result.append([(t["speaker"], t["text"]) for t in turns if t["text"].strip()])
    return [d for d in result if d], f"{DIALOGUES.name} ({len(result)} dialogues, cycled)"


def build_calls(tag: str, segments: int, source: list[list[tuple[str, str]]]) -> dict[str, Any]:
    """Calls with `segments` segments in all, ids `<tag>-NNNNN`, each a dialogue's turns."""
    from loopwise.replay import TranscriptLine

    calls: dict[str, Any] = {}
    count = index = 0
    while count < segments:
        turns = source[index % len(source)][: segments - count]
        call_id = f"{tag}-{index:05d}"
        lines, at = [], 0.0
        for speaker, text in turns:
            spoken = 0.6 + 0.3 * len(text.split())
            lines.append(
                TranscriptLine(
                    call_id=call_id, speaker=speaker, start=at, end=round(at + spoken, 3), text=text
                )
            )
            at = round(at + spoken + 0.4, 3)
        calls[call_id] = lines
        count += len(turns)
        index += 1
    return calls


def call_events(calls: dict[str, Any], tenant: str) -> Iterable[Any]:
    """CallStarted, segments and CallEnded per call, about CONCURRENT_CALLS calls overlapping."""
    from loopwise.replay import CallOptions, transcript_events

    mean_s = statistics.fmean(max(s.end for s in lines) for lines in calls.values())
    return transcript_events(
        calls,
        options=CallOptions(tenant=tenant, queue="bench", region="local", language="en"),
        stagger_s=mean_s / CONCURRENT_CALLS,
    )


# ---- the broker -----------------------------------------------------------------------------


class Broker:
    """A dedicated single-node broker from deploy/local/kafka.sh, or a given one."""

    def __init__(self, bootstrap: str | None) -> None:
        self.bootstrap = bootstrap or ""
        self.own = bootstrap is None
        self.env: dict[str, str] = {}
        self.data_dir: Path | None = None

    def up(self) -> None:
        if not self.own:
            return
        self.data_dir = Path(tempfile.mkdtemp(prefix="loopwise-e2e-kafka-"))
        port = free_port()
        controller = free_port()
        while controller == port:
            controller = free_port()
        self.env = {
            **os.environ,
            "KAFKA_PORT": str(port),
            "KAFKA_CONTROLLER_PORT": str(controller),
            "LOOPWISE_KAFKA_DATA": str(self.data_dir),
        }
        log(f"starting a dedicated broker on 127.0.0.1:{port} (data {self.data_dir})")
        done = subprocess.run(
            ["bash", str(KAFKA_SH), "up"], env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka.sh up failed:\n{done.stderr[-3000:]}")
        last = done.stdout.strip().splitlines()[-1]
        self.bootstrap = last.split("=", 1)[1]

    def pid(self) -> int | None:
        if self.data_dir is None:
            return None
        try:
            return int((self.data_dir / "kafka.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def down(self) -> None:
        if not self.own or not self.env:
            return
        log("stopping the dedicated broker (down --purge)")
        subprocess.run(
            ["bash", str(KAFKA_SH), "down", "--purge"],
            env=self.env,
            capture_output=True,
            check=False,
        )


def apply_topics(bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient

    from loopwise.topics import catalogue, wait_for_leaders

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    done = subprocess.run(
        [str(BIN / "loopwise"), "topics", "apply"], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"loopwise topics apply failed:\n{done.stdout}\n{done.stderr}")
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    wait_for_leaders(admin, (t.name for t in catalogue().topics), timeout_s=90)


def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    from loopwise.topics import wait_for_leaders

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    names = list(names)
    new = [
        NewTopic(n, num_partitions=partitions, replication_factor=1, config={"retention.ms": "-1"})
        for n in names
    ]
    for future in admin.create_topics(new).values():
        future.result(30)
    wait_for_leaders(admin, names, timeout_s=90)


Offsets = dict[tuple[str, int], int]


def end_offsets(bootstrap: str, topics: Iterable[str]) -> Offsets:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-e2e-probe"})
    try:
        meta = consumer.list_topics(timeout=30).topics
        ends: Offsets = {}
        for name in topics:
            for p in meta[name].partitions:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                        ends[(name, p)] = int(high[1])
                        break
                    except KafkaException:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)
        return ends
    finally:
        consumer.close()


def commit_group(bootstrap: str, group: str, offsets: Offsets) -> None:
    """Start a new group at these offsets (the end of every topic: earlier runs are not read)."""
    committer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                committer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    asynchronous=False,
                )
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        committer.close()


@dataclass
class Record:
    topic: str
    timestamp_type: int
    timestamp_ms: int
    data: dict[str, Any]


def read_back(
    bootstrap: str,
    starts: Offsets,
    prefix: str,
    any_call: Iterable[str] = (),
    timeout_s: float = 120,
) -> list[Record]:
    """Every record of a run (call id starting with `prefix`) from `starts` to the ends now.

    Records of the `any_call` topics (dead letters) are kept whatever their call id.
    """
    any_call = set(any_call)
    ends = end_offsets(bootstrap, {t for t, _ in starts})
    todo = {tp: ends[tp] for tp, o in starts.items() if ends[tp] > o}
    if not todo:
        return []
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-e2e-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    records: list[Record] = []
    try:
        consumer.assign([TopicPartition(t, p, starts[(t, p)]) for (t, p) in todo])
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                tp = (msg.topic(), msg.partition())
                if tp in todo and msg.offset() >= todo[tp] - 1:
                    del todo[tp]
                try:
                    data = json.loads(msg.value())
                except (TypeError, ValueError):
                    data = {}
                if not isinstance(data, dict):
                    data = {}
                if msg.topic() not in any_call and not str(data.get("call_id", "")).startswith(
                    prefix
                ):
                    continue
                ts_type, ts = msg.timestamp()
                records.append(Record(msg.topic(), ts_type, ts, data))
        if todo:
            log(f"read_back: {len(todo)} partitions not read to their end in {timeout_s:.0f} s")
    finally:
        consumer.close()
    return records


def segment_key(data: Mapping[str, Any]) -> tuple[str, str] | None:
    """(call id, external segment id) of a segment-level record; None for call-level ones."""
    seg = data.get("segment_id")
    if not seg or data.get("scope", "segment") != "segment":
        return None
    return str(data["call_id"]), str(seg).removeprefix("ext-")


class Watch:
    """Segment outputs on the last topic as they arrive: key -> wall time seen."""

    def __init__(self, bootstrap: str, topic: str, starts: Offsets, prefix: str) -> None:
        self.prefix = prefix
        self.seen: dict[tuple[str, str], float] = {}
        self.calls: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-e2e-watch-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign(
            [TopicPartition(t, p, o) for (t, p), o in starts.items() if t == topic]
        )

    def poll_once(self) -> None:
        first = self._consumer.poll(0.05)  # consume() would wait out its timeout for a batch
        if first is None:
            return
        for msg in [first, *self._consumer.consume(num_messages=499, timeout=0)]:
            if msg.error() is not None:
                continue
            now = time.time()
            try:
                data = json.loads(msg.value())
            except (TypeError, ValueError):
                continue
            if not str(data.get("call_id", "")).startswith(self.prefix):
                continue
            key = segment_key(data)
            if key is not None:
                self.seen.setdefault(key, now)
            elif data.get("scope") == "call":
                self.calls.add(str(data["call_id"]))

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.poll_once()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def wait_for(self, segments: int, timeout_s: float, calls: int = 0) -> bool:
        """Until `segments` segment decisions (and `calls` call decisions) are seen."""
        deadline = time.monotonic() + timeout_s
        while len(self.seen) < segments or len(self.calls) < calls:
            if time.monotonic() > deadline:
                return False
            if self._thread is None:
                self.poll_once()
            else:
                time.sleep(0.05)
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._consumer.close()


# ---- processes ------------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a live process, seconds (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Proc:
    """One stage of a chain as a child process."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    ready_check: Callable[[], bool]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}:\n" + "\n".join(tail)
            )
        return self.ready_check()

    def cpu(self) -> float:
        return cpu_seconds(None if self.proc is None else self.proc.pid)

    def stop(self, timeout_s: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop within {timeout_s:.0f} s: killed")
            self.proc.kill()
            return self.proc.wait(timeout=10)


def wait_ready(procs: Iterable[Proc], timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    for p in procs:
        while not p.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{p.name} not ready within {timeout_s:.0f} s ({p.log_path})")
            time.sleep(0.02)


def http_ready(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    return check


def clean_env(bootstrap: str) -> dict[str, str]:
    """This environment without LOOPWISE_* settings (figures use the shipped defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---- the two chains -------------------------------------------------------------------------


@dataclass
class Chain:
    """The processes of one path (the head last), the topics it reads and writes."""

    kind: str
    procs: list[Proc]
    send_topics: dict[str, str]
    """Replay label -> topic (calls, external transcripts)."""
    hop_topics: dict[str, str]
    """HOPS -> topic whose segment records end that hop."""
    extra_topics: list[str] = field(default_factory=list)
    """Also read back, counted only (dead letters)."""
    groups: list[str] = field(default_factory=list)
    changelogs: list[str] = field(default_factory=list)
    """State changelog topics of the stateful stages (router, compliance scoring)."""

    @property
    def input_topic(self) -> str:
        return self.send_topics["cx.transcripts.external"]

    def watched(self) -> list[str]:
        return [*self.send_topics.values(), *self.hop_topics.values(), *self.extra_topics]


def text_path(bootstrap: str, tag: str, work: Path, args: argparse.Namespace) -> Chain:
    """The four services as processes, new groups, state under `work`."""
    from loopwise.kafka.state import changelog_topic_name
    from loopwise.topics import catalogue, topic

    env = clean_env(bootstrap)
    specs: list[tuple[str, str, str, dict[str, str]]] = [
        (
            "sentiment",
            "loopwise-sentiment",
            "LOOPWISE_SENTIMENT_",
            {"STATE_PATH": str(work / "sentiment" / "state.sqlite3")},
        ),
        (
            "compliance-scoring",
            "loopwise-compliance",
            "LOOPWISE_COMPLIANCE_",
            {"RULE_PACKS": str(RULE_PACKS)},
        ),
        (
            "review-router",
            "loopwise-router",
            "LOOPWISE_ROUTER_",
            {
                "POLICY_PATH": str(POLICY),
                "SEGMENT_WINDOW_S": str(args.segment_window),
                "CALL_WINDOW_S": str(2 * args.segment_window),
            },
        ),
        ("transcription", "loopwise-transcription", "LOOPWISE_TRANSCRIPTION_", {}),
    ]
    procs, groups = [], []
    for name, script, prefix, own in specs:
        port = free_port()
        group = f"bench-e2e-{tag}-{name}"
        groups.append(group)
        penv = dict(env)
        penv.update({prefix + k: v for k, v in own.items()})
        penv[prefix + "GROUP_ID"] = group
        penv[prefix + "OBSERVABILITY__HOST"] = "127.0.0.1"
        penv[prefix + "OBSERVABILITY__PORT"] = str(port)
        penv.update({k: v for k, v in args.service_env if k.startswith(prefix)})
        procs.append(
            Proc(
                name,
                [str(BIN / script), "run"],
                penv,
                work / "logs" / f"{name}.log",
                http_ready(port),
            )
        )
    dlqs = [t.name for t in catalogue().topics if t.label.startswith("dlq.")]
    return Chain(
        kind="text path",
        procs=procs,
        send_topics={
            "cx.calls": topic("cx.calls"),
            "cx.transcripts.external": topic("cx.transcripts.external"),
        },
        hop_topics={
            "transcript": topic("cx.transcripts"),
            "sentiment": topic("cx.sentiment"),
            "compliance": topic("cx.compliance"),
            "decision": topic("hitl.routing-decisions"),
        },
        extra_topics=dlqs,
        groups=groups,
        changelogs=[changelog_topic_name(g) for g in groups if g.endswith(("-router", "-scoring"))],
    )


def raw_chain(bootstrap: str, tag: str, work: Path, partitions: int) -> Chain:
    """Four raw-stage processes on new topics."""
    t = {name: f"bench.e2e.{tag}.{name}" for name in ("calls", "ext", "hop1", "a", "b", "join")}
    create_topics(bootstrap, t.values(), partitions)
    env = clean_env(bootstrap)
    stages = [
        ("scorer-a", [t["calls"], t["hop1"]], [t["hop1"]], t["a"]),
        ("scorer-b", [t["calls"], t["hop1"]], [t["hop1"]], t["b"]),
        ("joiner", [t["calls"], t["hop1"], t["a"], t["b"]], [t["hop1"], t["a"], t["b"]], t["join"]),
        ("hop1", [t["calls"], t["ext"]], [t["ext"]], t["hop1"]),
    ]
    procs = []
    for role, inputs, content, output in stages:
        ready_file = work / "ready" / role
        ready_file.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "raw-stage",
            "--role",
            role,
            "--bootstrap",
            bootstrap,
            "--group",
            f"bench-e2e-{tag}-{role}",
            "--inputs",
            ",".join(inputs),
            "--content",
            ",".join(content),
            "--output",
            output,
            "--ready-file",
            str(ready_file),
        ]
        procs.append(Proc(role, command, env, work / "logs" / f"{role}.log", ready_file.exists))
    return Chain(
        kind="raw chain",
        procs=procs,
        send_topics={"cx.calls": t["calls"], "cx.transcripts.external": t["ext"]},
        hop_topics={
            "transcript": t["hop1"],
            "sentiment": t["a"],
            "compliance": t["b"],
            "decision": t["join"],
        },
    )


# ---- the raw stage (a child process) ---------------------------------------------------------


def raw_stage(args: argparse.Namespace) -> int:
    """consume -> json.loads, add a field, json.dumps -> produce; the joiner waits for all."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    content = set(args.content.split(","))
    ready = Path(args.ready_file)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "client.id": f"bench-raw-{args.role}",
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 1000,
            "compression.type": "lz4",
        }
    )
    consumer.subscribe(
        args.inputs.split(","), on_assign=lambda c, parts: ready.write_text(str(len(parts)))
    )
    joins: dict[tuple[str, str], set[str]] = {}
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    while not stop.is_set():
        first = consumer.poll(0.1)
        if first is None:
            continue
        batch = [first, *consumer.consume(num_messages=499, timeout=0)]
        last: dict[tuple[str, int], int] = {}
        for msg in batch:
            if msg.error() is not None:
                continue
            last[(msg.topic(), msg.partition())] = msg.offset()
            if msg.topic() not in content:
                continue
            data = json.loads(msg.value())
            if args.role == "joiner":
                key = (data["call_id"], data["segment_id"])
                arrived = joins.setdefault(key, set())
                arrived.add(msg.topic())
                if len(arrived) < len(content):
                    continue
                del joins[key]
                data = {
                    "call_id": key[0],
                    "segment_id": key[1],
                    "scope": "segment",
                    "outcome": "auto",
                    "inputs": sorted(arrived),
                }
            else:
                data["stage"] = args.role
            while True:
                try:
                    producer.produce(
                        args.output,
                        key=msg.key(),
                        value=json.dumps(data).encode(),
                        headers=msg.headers() or [],
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
        while len(producer) > 0:  # the batch's acks, before its offsets are stored
            producer.flush(1.0)
        if failures:
            print(f"delivery failed: {failures[:3]}", file=sys.stderr, flush=True)
            return 1
        if last:
            consumer.store_offsets(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
            )
    producer.flush(30)
    consumer.close()
    return 0


# ---- the measurements ------------------------------------------------------------------------


def replay_producer(bootstrap: str) -> Producer:
    """`loopwise.replay`'s producer (its settings), connected and given its idempotence id.

    A new producer's first records wait for its connection and producer id; warmed up for
    a second first, that start-up is not counted as the chain's latency.
    """
    from loopwise.replay import producer_config
    from loopwise.settings import KafkaSettings

    producer = Producer(producer_config(KafkaSettings(bootstrap_servers=bootstrap)))
    producer.list_topics(timeout=30)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        producer.poll(0.1)
    return producer


def snapshot(chain: Chain, broker: Broker) -> dict[str, float]:
    cpu = {p.name: p.cpu() for p in chain.procs}
    cpu["broker"] = cpu_seconds(broker.pid())
    return cpu


def by_hop(chain: Chain, records: list[Record]) -> dict[str, dict[tuple[str, str], int]]:
    """Per hop (and 'input'): segment key -> CreateTime (ms) of its first record."""
    names = {chain.input_topic: "input", **{v: k for k, v in chain.hop_topics.items()}}
    result: dict[str, dict[tuple[str, str], int]] = {n: {} for n in names.values()}
    for r in records:
        hop = names.get(r.topic)
        key = segment_key(r.data)
        if hop is not None and key is not None:
            result[hop].setdefault(key, r.timestamp_ms)
    return result


def checks(chain: Chain, records: list[Record]) -> dict[str, Any]:
    """Counts that say whether the run was sound."""
    decisions = [
        r.data
        for r in records
        if r.topic == chain.hop_topics["decision"] and r.data.get("scope") == "segment"
    ]
    keys = [segment_key(d) for d in decisions]
    return {
        "segment_decisions": len(decisions),
        "duplicate_decisions": len(keys) - len(set(keys)),
        "decisions_missing_inputs": sum(1 for d in decisions if d.get("missing_inputs")),
        "call_decisions": sum(
            1
            for r in records
            if r.topic == chain.hop_topics["decision"] and r.data.get("scope") == "call"
        ),
        "dead_letters": sum(1 for r in records if r.topic in chain.extra_topics),
        "timestamp_types": sorted({r.timestamp_type for r in records}),
    }


def throughput(
    chain: Chain, broker: Broker, bootstrap: str, tag: str, segments: int, source: Any, tenant: str
) -> dict[str, Any]:
    from loopwise.replay import send

    starts = end_offsets(bootstrap, chain.watched())
    if chain.groups:
        everything = end_offsets(bootstrap, _pipeline_topics())
        for group in chain.groups:
            commit_group(bootstrap, group, everything)
    calls = build_calls(tag, segments, source)
    sent = send(
        call_events(calls, tenant),
        producer=replay_producer(bootstrap),
        topics=chain.send_topics,
        speed=0,
    )
    log(f"{chain.kind}: backlog of {sent.segments} segments in {len(calls)} calls produced")
    *downstream, head = chain.procs
    for p in downstream:
        p.start()
    wait_ready(downstream)
    watch = Watch(bootstrap, chain.hop_topics["decision"], starts, f"{tag}-")
    head.start()
    wait_ready([head])
    cpu0 = snapshot(chain, broker)
    load0 = os.getloadavg()[0]
    timeout_s = max(300.0, segments / 5)
    complete = watch.wait_for(segments, timeout_s)
    cpu1 = snapshot(chain, broker)
    load1 = os.getloadavg()[0]
    settle(chain, watch, len(calls))
    watch.close()
    if not complete:
        log(f"{chain.kind}: only {len(watch.seen)} of {segments} decisions in {timeout_s:.0f} s")
    changelog = sum(end_offsets(bootstrap, chain.changelogs).values()) if chain.changelogs else 0
    records = read_back(bootstrap, starts, f"{tag}-", chain.extra_topics)
    hops = by_hop(chain, records)
    hop_records = sum(1 for r in records if r.topic in chain.hop_topics.values())
    first = min(hops["transcript"].values(), default=0)
    last = max(hops["decision"].values(), default=0)
    wall = (last - first) / 1000
    done = len(hops["decision"])
    cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    stage_cpu = sum(v for k, v in cpu.items() if k != "broker")
    hops_done = {
        hop: round((max(hops[hop].values()) - first) / 1000, 3) if hops[hop] else None
        for hop in HOPS
    }
    result = {
        "segments": segments,
        "decided": done,
        "hops_done_s": hops_done,
        "hop_records_per_segment": round(hop_records / max(done, 1), 2),
        "changelog_records_per_segment": round(changelog / max(done, 1), 2),
        "complete": complete,
        "wall_s": round(wall, 3),
        "segments_per_s": round(done / wall, 1) if wall > 0 else None,
        "cpu_ms_per_segment": round(1000 * stage_cpu / max(done, 1), 3),
        "broker_cpu_ms_per_segment": round(1000 * cpu["broker"] / max(done, 1), 3),
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "load_1m": [round(load0, 2), round(load1, 2)],
        **checks(chain, records),
    }
    log(
        f"{chain.kind}: {done}/{segments} segments in {wall:.2f} s = "
        f"{result['segments_per_s']} seg/s, {result['cpu_ms_per_segment']} ms CPU/segment"
    )
    return result


def latency(
    chain: Chain,
    broker: Broker,
    bootstrap: str,
    tag: str,
    rate: float,
    seconds: float,
    source: Any,
    tenant: str,
) -> dict[str, Any]:
    from loopwise.replay import send

    segments = max(1, round(rate * seconds))
    starts = end_offsets(bootstrap, chain.watched())
    calls = build_calls(tag, segments, source)
    watch = Watch(bootstrap, chain.hop_topics["decision"], starts, f"{tag}-")
    watch.start()
    cpu0 = snapshot(chain, broker)
    load0 = os.getloadavg()[0]
    sent = send(
        call_events(calls, tenant),
        producer=replay_producer(bootstrap),
        topics=chain.send_topics,
        rate=rate,
    )
    complete = watch.wait_for(segments, 120)
    cpu1 = snapshot(chain, broker)
    load1 = os.getloadavg()[0]
    settle(chain, watch, len(calls))
    watch.close()
    if not complete:
        log(f"{chain.kind} @ {rate}/s: only {len(watch.seen)} of {segments} decisions")
    records = read_back(bootstrap, starts, f"{tag}-", chain.extra_topics)
    hops = by_hop(chain, records)
    inputs = hops["input"]
    result: dict[str, Any] = {
        "rate": rate,
        "segments": segments,
        "send_rate": sent.send_rate,
        "decided": len(hops["decision"]),
        "load_1m": [round(load0, 2), round(load1, 2)],
    }
    for hop in HOPS:
        values = [hops[hop][k] - t for k, t in inputs.items() if k in hops[hop]]
        result[hop] = _summary(values)
    seen = [1000 * watch.seen[k] - t for k, t in inputs.items() if k in watch.seen]
    result["seen"] = _summary(seen)
    cpu = sum(cpu1[k] - cpu0.get(k, 0.0) for k in cpu1 if k != "broker")
    result["cpu_ms_per_segment"] = round(1000 * cpu / max(len(inputs), 1), 3)
    result.update(checks(chain, records))
    d = result["decision"]
    log(f"{chain.kind} @ {rate}/s: decision p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms")
    result["_decision_ms"] = [
        hops["decision"][k] - t for k, t in inputs.items() if k in hops["decision"]
    ]
    return result


def settle(chain: Chain, watch: Watch, calls: int) -> None:
    """Let the text path finish the run's calls (call decisions) before the next run starts."""
    if chain.changelogs and not watch.wait_for(0, 60, calls=calls):
        log(f"{chain.kind}: {len(watch.calls)} of {calls} call decisions after 60 s")


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_ms": None if not values else round(pct(values, 0.5) or 0, 1),
        "p99_ms": None if not values else round(pct(values, 0.99) or 0, 1),
    }


def _pipeline_topics() -> list[str]:
    from loopwise.topics import catalogue

    return [t.name for t in catalogue().topics if not t.label.startswith("dlq.")]


def run_round(
    kind: str,
    index: int,
    broker: Broker,
    args: argparse.Namespace,
    source: Any,
    work: Path,
) -> dict[str, Any]:
    tag = f"{'tp' if kind == 'real' else 'rw'}{index}{uuid.uuid4().hex[:4]}"
    rdir = work / tag
    bootstrap = broker.bootstrap
    if kind == "real":
        chain = text_path(bootstrap, tag, rdir, args)
    else:
        chain = raw_chain(bootstrap, tag, rdir, args.partitions)
    log(f"round {index}: {chain.kind} ({tag}), logs in {rdir / 'logs'}")
    result: dict[str, Any] = {"round": index, "path": chain.kind, "tag": tag}
    try:
        result["throughput"] = throughput(
            chain, broker, bootstrap, f"{tag}t", args.segments, source, args.tenant
        )
        result["latency"] = [
            latency(
                chain,
                broker,
                bootstrap,
                f"{tag}l{n}",
                rate,
                args.latency_seconds,
                source,
                args.tenant,
            )
            for n, rate in enumerate(args.rates)
        ]
    finally:
        result["exit_codes"] = {p.name: p.stop() for p in chain.procs}
    return result


def warm_up(broker: Broker, args: argparse.Namespace, source: Any, work: Path) -> None:
    """One backlog run of each path, not reported, so that round 1 does not meet a cold broker.

    With a raw-chain warm-up only, a new broker still spent 3-12x more CPU per segment in
    the first text-path round than in the second (7 Dec: 4.18 s against 0.35 s for 5,000
    segments), its JIT compiler threads busy for the first ~10 s: the text path's
    compacted changelogs and many producers take broker paths the raw chain does not. A
    short text-path backlog (a quarter of --segments, at most 5,000) warms those too.
    """
    runs = [("raw", args.segments)]
    if args.only != "raw":
        runs.append(("real", max(100, min(5000, args.segments // 4))))
    for kind, segments in runs:
        tag = f"warm{kind}{uuid.uuid4().hex[:4]}"
        if kind == "real":
            chain = text_path(broker.bootstrap, tag, work / tag, args)
        else:
            chain = raw_chain(broker.bootstrap, tag, work / tag, args.partitions)
        log(f"warm-up: one {chain.kind} backlog run of {segments} segments (not reported)")
        try:
            throughput(chain, broker, broker.bootstrap, f"{tag}t", segments, source, args.tenant)
        finally:
            for p in chain.procs:
                p.stop()


# ---- output ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kafka": os.environ.get("KAFKA_VERSION", "4.4.0"),
        "load_1m_at_start": round(os.getloadavg()[0], 2),
    }


def fmt(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Print the tables; return the summary figures."""
    print(
        f"\nThroughput (backlog of {args.segments} segments; "
        "wall = first hop-1 output to last decision)"
    )
    head = (
        "round",
        "path",
        "decided",
        "wall s",
        "seg/s",
        "CPU ms/seg",
        "broker ms/seg",
        "missing",
        "DLQ",
        "load",
    )
    rows = []
    for r in results:
        t = r["throughput"]
        rows.append(
            (
                r["round"],
                r["path"],
                f"{t['decided']}/{t['segments']}",
                t["wall_s"],
                t["segments_per_s"],
                t["cpu_ms_per_segment"],
                t["broker_cpu_ms_per_segment"],
                t["decisions_missing_inputs"],
                t["dead_letters"],
                f"{t['load_1m'][0]}-{t['load_1m'][1]}",
            )
        )
    table(head, rows)
    print(
        "\nTime from the first hop-1 output until a hop's last output, and CPU seconds per process"
    )
    for r in results:
        t = r["throughput"]
        done = " / ".join(f"{h} {fmt(t['hops_done_s'][h])}" for h in HOPS)
        cpu = ", ".join(f"{k} {v:g}" for k, v in t["cpu_s"].items())
        print(f"  round {r['round']} {r['path']}: {done} s; CPU s: {cpu}")
        print(
            f"    records per segment on the hop topics {t['hop_records_per_segment']:g}, "
            f"changelog records per segment {t['changelog_records_per_segment']:g}"
        )

    def rates(path: str) -> list[float]:
        return [r["throughput"]["segments_per_s"] or 0.0 for r in results if r["path"] == path]

    real, raw = rates("text path"), rates("raw chain")
    summary: dict[str, Any] = {}
    if real and raw:
        ratios = []
        for i in sorted({r["round"] for r in results}):
            a = [r for r in results if r["round"] == i and r["path"] == "text path"]
            b = [r for r in results if r["round"] == i and r["path"] == "raw chain"]
            if a and b and b[0]["throughput"]["segments_per_s"]:
                ratios.append(
                    a[0]["throughput"]["segments_per_s"] / b[0]["throughput"]["segments_per_s"]
                )
        ratio = statistics.median(real) / statistics.median(raw)
        summary["throughput_ratio"] = round(ratio, 4)
        summary["throughput_ratio_per_round"] = [round(x, 4) for x in ratios]
        met = "met" if ratio >= 0.25 else "NOT met"
        print(
            f"\ntext path / raw chain throughput: {ratio:.3f} (median {statistics.median(real):g} "
            f"/ {statistics.median(raw):g} seg/s; per round "
            f"{', '.join(f'{x:.3f}' for x in ratios)}); target >= 0.25: {met}"
        )

    print("\nLatency from the external segment's record (CreateTime), p50 / p99 ms")
    head = ("round", "path", "rate", "sent/s", "n", *HOPS, "seen", "CPU ms/seg", "missing", "load")
    rows = []
    for r in results:
        for lat in r["latency"]:
            rows.append(
                (
                    r["round"],
                    r["path"],
                    fmt(lat["rate"]),
                    lat["send_rate"],
                    f"{lat['decided']}/{lat['segments']}",
                    *(
                        f"{fmt(lat[h]['p50_ms'])} / {fmt(lat[h]['p99_ms'])}"
                        for h in (*HOPS, "seen")
                    ),
                    lat["cpu_ms_per_segment"],
                    lat["decisions_missing_inputs"],
                    f"{lat['load_1m'][0]}-{lat['load_1m'][1]}",
                )
            )
    table(head, rows)
    pooled: dict[str, Any] = {}
    for path in ("text path", "raw chain"):
        for rate in args.rates:
            values = [
                v
                for r in results
                if r["path"] == path
                for lat in r["latency"]
                if lat["rate"] == rate
                for v in lat["_decision_ms"]
            ]
            if values:
                pooled[f"{path} @ {rate:g}/s"] = _summary(values)
    print("\nExternal segment -> routing decision, all rounds pooled, p50 / p99 ms")
    for name, s in pooled.items():
        print(f"  {name}: {fmt(s['p50_ms'])} / {fmt(s['p99_ms'])} (n={s['n']})")
    summary["decision_latency_pooled"] = pooled
    at100 = pooled.get("text path @ 100/s")
    if at100 is not None and at100["p99_ms"] is not None:
        met = "met" if at100["p99_ms"] <= 250 else "NOT met"
        print(
            f"p99 external segment -> routing decision at 100 seg/s: {at100['p99_ms']} ms; "
            f"target <= 250 ms: {met}"
        )
    return summary


def table(head: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [tuple(fmt(c) for c in row) for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(head)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


# ---- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "raw-stage":
        stage = argparse.ArgumentParser(prog="e2e.py raw-stage")
        for name in ("role", "bootstrap", "group", "inputs", "content", "output", "ready-file"):
            stage.add_argument(f"--{name}", required=True)
        ns = stage.parse_args(argv[1:])
        ns.command = "raw-stage"
        return ns
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--segments",
        type=int,
        default=20000,
        help="backlog size (20000: at 5,000 the raw chain's backlog lasted under a second "
        "and its figure moved between 5,100 and 13,000 segments/s)",
    )
    parser.add_argument(
        "--rates", default="25,100", help="segments per second of the latency runs (25,100)"
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=20.0, help="length of each latency run (20)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each path (2)")
    parser.add_argument("--tenant", default="acme-bank", help="tenant of the calls (acme-bank)")
    parser.add_argument(
        "--segment-window",
        type=float,
        default=300.0,
        help="router SEGMENT_WINDOW_S (CALL_WINDOW_S is twice it); decisions do not wait for it",
    )
    parser.add_argument(
        "--partitions", type=int, default=6, help="partitions of the raw chain's topics (6)"
    )
    parser.add_argument(
        "--bootstrap", default=None, help="use this running broker instead of starting one"
    )
    parser.add_argument("--only", choices=["real", "raw"], default=None, help="run one path")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the service whose prefix NAME has, e.g. "
        "LOOPWISE_ROUTER_BATCH_SIZE=2000 (repeatable; figures otherwise use the defaults)",
    )
    parser.add_argument("--no-warmup", action="store_true", help="skip the unreported warm-up runs")
    parser.add_argument("--keep", action="store_true", help="keep logs and state (work dir)")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON too")
    ns = parser.parse_args(argv)
    ns.command = "bench"
    ns.rates = [float(r) for r in ns.rates.split(",") if r.strip()]
    pairs = [item.partition("=") for item in ns.service_env]
    if any(not name.startswith("LOOPWISE_") or not eq for name, eq, _ in pairs):
        parser.error("--service-env takes LOOPWISE_<SERVICE>_<SETTING>=VALUE")
    ns.service_env = [(name, value) for name, _, value in pairs]
    return ns


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "raw-stage":
        return raw_stage(args)
    source, source_name = dialogues()
    info = machine()
    broker = Broker(args.bootstrap)
    work = Path(tempfile.mkdtemp(prefix="loopwise-e2e-"))
    results: list[dict[str, Any]] = []
    failed = True
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        broker.up()
        apply_topics(broker.bootstrap)
        if not args.no_warmup:
            warm_up(broker, args, source, work)
        kinds = ["real", "raw"] if args.only is None else [args.only]
        for index in range(1, args.rounds + 1):
            order = kinds if index % 2 else kinds[::-1]  # ABBA: drift hits both paths alike
            for kind in order:
                results.append(run_round(kind, index, broker, args, source, work))
        info["load_1m_at_end"] = round(os.getloadavg()[0], 2)
        summary = report(results, args)
        print(
            f"\nmachine: {info['cpus']} CPUs {info['machine']}, {info['memory_gib']} GiB, "
            f"Python {info['python']}, Kafka {info['kafka']}; load {info['load_1m_at_start']} "
            f"at start, {info['load_1m_at_end']} at end; input: {source_name}, tenant "
            f"{args.tenant}"
        )
        if args.json:
            for r in results:
                for lat in r["latency"]:
                    lat.pop("_decision_ms", None)
            print(
                json.dumps(
                    {"machine": info, "input": source_name, "summary": summary, "runs": results},
                    indent=2,
                )
            )
        failed = False
    finally:
        broker.down()
        if args.keep or failed:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
