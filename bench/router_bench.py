"""Review-router throughput, latency and memory with 10,000 open calls in state.

    uv run python bench/router_bench.py [--open-calls 10000] [--measure 5000]
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 uv run python bench/router_bench.py --kafka \
        [--open-calls 10000] [--measure 1000]

Core (default): the router's own code (`Router.handle`) with call state kept as JSON
dicts, loaded and stored around every event (as the earlier Faust table did; the Worker's
`StateStore` keeps states in memory and writes changed parts, see bench/state_bytes.py).
10,000 calls are opened first (CallStarted and 8 scored, decided segments each, the state
of a call in progress), then `--measure` new segments arrive on random open
calls: transcript, sentiment, then compliance, the last score. Latency is from handing
the last score to the router to its routing decision (load, join, policy, outputs, store);
decisions per second count the whole cost of a segment (all three events).

Kafka (`--kafka`): `loopwise-router run` as a process on fresh topics; the open calls
are produced and routed first, then `--measure` segments are produced at a steady rate.
Latency is from the Kafka timestamp of the compliance record (the last score) to that of
the routing decision, both stamped by their producers on this machine.

Memory per open call: tracemalloc of the stored values (JSON dicts) divided by the number
of calls, and the size of one call's changelog record.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loopwise.events import (  # noqa: E402
    CallStartedV1,
    ChannelSpec,
    ModelRef,
    RoutingDecisionV1,
    SegmentComplianceV1,
    SegmentSentimentV1,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise_router.handler import JoinSettings, OutputTopics, Router  # noqa: E402
from loopwise_router.policy import load_policy  # noqa: E402
from loopwise_router.state import CallState  # noqa: E402

POLICY = ROOT / "deploy" / "policies" / "default.yaml"
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
REF = ModelRef(name="bench", version="1")
TEXTS = [
    "I would like to change the address on my account please",
    "sure, can you confirm the postcode for me",
    "this is the third time I am calling about this and nobody helps",
    "thank you, that was quick",
]


def started(call_id: str) -> CallStartedV1:
    return CallStartedV1(
        tenant_id="acme",
        call_id=call_id,
        occurred_at=T0,
        queue=random.choice(["billing", "support", "sales"]),
        region="eu-west",
        language_hint="en",
        channels=[ChannelSpec(index=0, role="agent"), ChannelSpec(index=1, role="customer")],
    )


def segment(call_id: str, n: int) -> list[TenantEvent]:
    """Transcript, sentiment and compliance of one segment (compliance last)."""
    seg = f"seg-{n:04d}"
    speaker = "customer" if n % 2 else "agent"
    score = random.uniform(-1, 1)
    label = "negative" if score < -0.3 else "positive" if score > 0.3 else "neutral"
    ids: dict[str, Any] = {"tenant_id": "acme", "call_id": call_id, "occurred_at": T0}
    text = random.choice(TEXTS)
    return [
        TranscriptSegmentV1(
            **ids,
            producer=REF,
            segment_id=seg,
            speaker=speaker,
            start_s=n * 4.0,
            end_s=n * 4.0 + 3.5,
            text=text,
            confidence=random.uniform(0.4, 1.0),
            language="en",
            source="realtime",
        ),
        SegmentSentimentV1(
            **ids,
            producer=REF,
            segment_id=seg,
            speaker=speaker,
            label=label,
            score=score,
            confidence=random.uniform(0.4, 1.0),
        ),
        SegmentComplianceV1(**ids, producer=REF, segment_id=seg, findings=[]),
    ]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def core(open_calls: int, measure: int, per_call: int) -> None:
    policy = load_policy(POLICY)
    router = Router(lambda: policy, OutputTopics("r", "t", "o"), JoinSettings())
    store: dict[str, dict[str, Any]] = {}
    now = time.time()

    def feed(event: TenantEvent, event_id: str) -> list[Any]:
        call_id = str(getattr(event, "call_id", ""))
        raw = store.get(call_id)
        state = CallState.model_validate(raw) if raw is not None else None
        state, emits = router.handle(state, event, event_id, now, partition=0)
        store[call_id] = state.model_dump(mode="json")
        return emits

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t = time.perf_counter()
    for c in range(open_calls):
        call_id = f"open-{c:05d}"
        feed(started(call_id), f"{call_id}/start")
        for n in range(per_call):
            for i, event in enumerate(segment(call_id, n)):
                feed(event, f"{call_id}/{n}/{i}")
    preload_s = time.perf_counter() - t
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_call_bytes = (after - before) / open_calls
    changelog = statistics.mean(len(json.dumps(v).encode()) for v in list(store.values())[:500])

    work = []
    counters = {c: per_call for c in store}
    for _ in range(measure):
        call_id = f"open-{random.randrange(open_calls):05d}"
        n = counters[call_id]
        counters[call_id] += 1
        work.append((call_id, segment(call_id, n)))
    latencies: list[float] = []
    decisions = 0
    t_all = time.perf_counter()
    for call_id, events in work:
        feed(events[0], f"{call_id}/m/0")
        feed(events[1], f"{call_id}/m/1")
        t0 = time.perf_counter()
        emits = feed(events[2], f"{call_id}/m/2")
        latencies.append(time.perf_counter() - t0)
        decisions += sum(1 for e in emits if isinstance(e.event, RoutingDecisionV1))
    total = time.perf_counter() - t_all
    assert decisions == measure, decisions
    print(
        f"core: {open_calls} open calls x {per_call} decided segments preloaded in {preload_s:.1f}s"
    )
    print(f"  routing decisions/s (3 events per segment): {decisions / total:,.0f}")
    print(
        f"  last score -> decision: p50 {pct(latencies, 0.5) * 1e3:.2f} ms, "
        f"p99 {pct(latencies, 0.99) * 1e3:.2f} ms"
    )
    print(
        f"  memory per open call: {per_call_bytes / 1024:.1f} KiB in the table "
        f"(JSON changelog record {changelog / 1024:.1f} KiB)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kafka(open_calls: int, measure: int, rate: float) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from loopwise.events import encode

    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    tag = uuid.uuid4().hex[:8]
    kinds = ["calls", "transcripts", "sentiment", "compliance", "decisions"]
    outs = ["routing", "tasks", "outcomes", "dlq"]
    topics = {k: f"bench.router.{k}.{tag}" for k in kinds + outs}
    port = free_port()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics(
        [NewTopic(t, num_partitions=3, replication_factor=1) for t in topics.values()]
    ).values():
        fut.result(30)
    env = {
        **os.environ,
        "LOOPWISE_ROUTER_GROUP_ID": f"bench-router-{tag}",
        "LOOPWISE_ROUTER_POLICY_PATH": str(POLICY),
        "LOOPWISE_ROUTER_DEAD_LETTER_TOPIC": topics["dlq"],
        "LOOPWISE_ROUTER_OBSERVABILITY__PORT": str(port),
        "LOOPWISE_ROUTER_OBSERVABILITY__LOG_LEVEL": "WARNING",
        **{f"LOOPWISE_ROUTER_{k.upper()}_TOPIC": topics[k] for k in kinds + outs if k != "dlq"},
    }
    log = Path(f"/tmp/bench-router-{tag}.log").open("wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopwise_router", "run"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{tag}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topics["routing"]])

    def send(kind: str, event: TenantEvent) -> None:
        key, value, headers, _ = encode(event, source="bench")
        producer.produce(topics[kind], key=key, value=value, headers=headers)  # type: ignore[arg-type]
        producer.poll(0)

    def drain_ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def drain(expect: int, timeout_s: float) -> dict[str, int]:
        seen: dict[str, int] = {}
        deadline = time.monotonic() + timeout_s
        while len(seen) < expect and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the router exited; see {log.name}")
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            body = json.loads(msg.value() or b"{}")
            if body.get("scope") == "segment":
                seen[f"{body['call_id']}/{body['segment_id']}"] = msg.timestamp()[1]
        return seen

    def rss_kib() -> int:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    try:
        deadline = time.monotonic() + 120
        while not drain_ready() and time.monotonic() < deadline:
            time.sleep(0.5)
        rss_before = rss_kib()
        t = time.perf_counter()
        for c in range(open_calls):
            call_id = f"open-{c:05d}"
            send("calls", started(call_id))
            for kind, event in zip(
                ("transcripts", "sentiment", "compliance"), segment(call_id, 0), strict=True
            ):
                send(kind, event)
        producer.flush(60)
        preloaded = drain(open_calls, 1800)
        preload_s = time.perf_counter() - t
        print(
            f"kafka: {len(preloaded)} open calls routed (1 segment each) in {preload_s:.0f}s "
            f"= {len(preloaded) / preload_s:,.0f} decisions/s incl. 4 events per call"
        )
        grown = rss_kib() - rss_before
        print(
            f"  router RSS grew {grown / 1024:.0f} MiB = {grown / open_calls:.1f} KiB per open call"
        )
        sent_at: dict[str, float] = {}
        t = time.perf_counter()
        for m in range(measure):
            call_id = f"open-{random.randrange(open_calls):05d}"
            events = segment(call_id, 1 + m)
            send("transcripts", events[0])
            send("sentiment", events[1])
            key, value, headers, _ = encode(events[2], source="bench")
            stamp = int(time.time() * 1000)
            producer.produce(
                topics["compliance"],
                key=key,
                value=value,
                headers=headers,
                timestamp=stamp,  # type: ignore[arg-type]
            )
            sent_at[f"{call_id}/seg-{1 + m:04d}"] = stamp
            producer.poll(0)
            time.sleep(max(0.0, (m + 1) / rate - (time.perf_counter() - t)))
        producer.flush(60)
        got = drain(measure, 600)
        lat = [got[k] - sent_at[k] for k in got if k in sent_at]
        total = time.perf_counter() - t
        print(f"  measured {len(lat)} segments offered at {rate:.0f}/s over {total:.0f}s")
        print(
            f"  last score -> decision (Kafka timestamps): p50 {pct(lat, 0.5):.0f} ms, "
            f"p99 {pct(lat, 0.99):.0f} ms"
        )
    finally:
        proc.terminate()
        proc.wait(30)
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open-calls", type=int, default=10_000)
    parser.add_argument("--measure", type=int, default=5_000)
    parser.add_argument("--segments-per-call", type=int, default=8)
    parser.add_argument("--kafka", action="store_true", help="through a running router app")
    parser.add_argument("--rate", type=float, default=50.0, help="kafka: segments offered per s")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    random.seed(args.seed)
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    if args.kafka:
        kafka(args.open_calls, args.measure, args.rate)
    else:
        core(args.open_calls, args.measure, args.segments_per_call)


if __name__ == "__main__":
    main()
