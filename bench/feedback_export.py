"""Feedback exporter throughput: sink (store) rate, set publishing rate, report time, end to end.

Makes N review tasks (S segments each, one finding per task), their decisions
(half the segments corrected, every segment relabelled, the finding judged) and
one released outcome each, then measures:

1. the sink alone: `Exporter.handle` over decoded events, one SQLite commit per
   500 events (the worker's batch size), with synchronous=FULL and NORMAL;
2. publishing every training set (JSON lines, Parquet, Label Studio, manifests);
3. `loopwise-feedback report` figures over the whole window;
4. with `KAFKA_BOOTSTRAP_SERVERS` set: end to end through the broker (produce all,
   run the worker, time until every event is stored).

    uv run python bench/feedback_export.py [--tasks 3000] [--segments 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loopwise.events import (
    ComplianceFinding,
    Evidence,
    FindingVerdict,
    ModelRef,
    ReleasedOutcomeV1,
    ReviewDecisionV1,
    ReviewTaskCreatedV1,
    SentimentRelabel,
    TaskSegment,
    TenantEvent,
    TranscriptCorrection,
    encode,
)
from loopwise.kafka.intake import Incoming
from loopwise_feedback.config import FeedbackSettings
from loopwise_feedback.export import publish
from loopwise_feedback.quality import quality_report
from loopwise_feedback.worker import Exporter, build_worker

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LABELS = ("negative", "neutral", "positive")
WORDS = [
    "please",
    "confirm",
    "the",
    "billing",
    "address",
    "for",
    "the",
    "account",
    "before",
    "we",
    "continue",
    "today",
]


def make_events(n: int, segments: int) -> list[tuple[str, TenantEvent]]:
    """Tasks, decisions and outcomes of n reviewed calls, as (topic label, event)."""
    out: list[tuple[str, TenantEvent]] = []
    for i in range(n):
        call = f"call-{i:06d}"
        opened = T0 + timedelta(seconds=i)
        segs = [
            TaskSegment(
                segment_id=f"seg-{j}",
                speaker="customer" if j % 2 else "agent",
                start_s=5.0 * j,
                end_s=5.0 * j + 4.2,
                text=" ".join(WORDS[(i + j) % 5 : (i + j) % 5 + 7]),
                transcript_confidence=0.8,
                sentiment_label=LABELS[(i + j) % 3],
                sentiment_score=0.1,
                sentiment_confidence=0.7,
                asr_model=ModelRef(name="whisper-tiny", version=f"v{i % 2}"),
                sentiment_model=ModelRef(name="vader", version="3.3.2"),
            )
            for j in range(segments)
        ]
        finding = ComplianceFinding(
            finding_id=f"{call}/f0",
            rule_id=f"rule.{i % 4}",
            category="disclosure",
            severity="medium",
            score=0.8,
            evidence=Evidence(segment_id="seg-0", text="[CARD_NUMBER]"),
            segment_id="seg-0",
        )
        segs[0] = segs[0].model_copy(update={"findings": [finding]})
        task = ReviewTaskCreatedV1(
            tenant_id="acme",
            call_id=call,
            occurred_at=opened,
            producer=ModelRef(name="routing-policy", version="sha256:ab12"),
            task_id=f"task-{call}",
            scope="call",
            kind="hold",
            mode="post_call",
            priority="p2",
            due_at=opened + timedelta(hours=1),
            rule_ids=["r"],
            policy_version="sha256:ab12",
            segments=segs,
            compliance_pack=ModelRef(name="default-pack", version="1"),
        )
        decision = ReviewDecisionV1(
            tenant_id="acme",
            call_id=call,
            occurred_at=opened + timedelta(seconds=60 + i % 300),
            producer=ModelRef(name="review-console", version="0.1.0"),
            decision_id=f"dec-{call}",
            task_id=task.task_id,
            reviewer_id=f"rev-{i % 7}",
            verdict="approve",
            transcript_corrections=[
                TranscriptCorrection(segment_id=s.segment_id, text=s.text + " please")
                for s in segs[::2]
            ],
            sentiment_labels=[
                SentimentRelabel(segment_id=s.segment_id, label=LABELS[(i * 2 + k) % 3])
                for k, s in enumerate(segs)
            ],
            finding_verdicts=[
                FindingVerdict(
                    finding_id=finding.finding_id,
                    rule_id=finding.rule_id,
                    verdict="confirmed" if i % 3 else "dismissed",
                )
            ],
            seconds_to_decide=30.0,
        )
        outcome = ReleasedOutcomeV1(
            tenant_id="acme",
            call_id=call,
            occurred_at=decision.occurred_at,
            producer=ModelRef(name="routing-policy", version="sha256:ab12"),
            outcome_id=f"{call}/call",
            scope="call",
            release="reviewed" if i % 4 else "auto",
            policy_version="sha256:ab12",
        )
        out += [("tasks", task), ("decisions", decision), ("outcomes", outcome)]
    return out


def sink_rate(events: list[tuple[str, TenantEvent]], root: Path, sync: str) -> dict[str, Any]:
    settings = FeedbackSettings(
        kafka={"bootstrap_servers": "unused:1"},  # type: ignore[arg-type]
        root=root,
        sqlite_synchronous=sync,  # type: ignore[arg-type]
    )
    exporter = Exporter.for_settings(settings)
    incoming = []
    for offset, (label, event) in enumerate(events):
        _, _, _, envelope = encode(event, source="bench")
        incoming.append(Incoming(envelope, event, label, 0, offset))
    started = time.perf_counter()
    for k, item in enumerate(incoming, 1):
        list(exporter.handle(item))
        if k % 500 == 0:
            exporter.before_commit()
    exporter.before_commit()
    elapsed = time.perf_counter() - started
    rows = exporter.store.conn.execute("SELECT count(*) FROM rows").fetchone()[0]
    exporter.store.close()
    return {"events": len(incoming), "rows": rows, "seconds": elapsed}


def end_to_end(events: list[tuple[str, TenantEvent]], bootstrap: str, root: Path) -> float:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    names = {k: f"bench.fb-{k}.{uuid.uuid4().hex[:8]}" for k in ("tasks", "decisions", "outcomes")}
    dlq = f"bench.fb-dlq.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic(n, num_partitions=6, replication_factor=1) for n in [*names.values(), dlq]]
    for future in admin.create_topics(topics).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for label, event in events:
        key, value, headers, _ = encode(event, source="bench")
        producer.produce(names[label], key=key, value=value, headers=headers)  # type: ignore[arg-type]
        producer.poll(0)
    producer.flush(60)
    settings = FeedbackSettings(
        kafka={"bootstrap_servers": bootstrap},  # type: ignore[arg-type]
        group_id=f"bench-{uuid.uuid4().hex}",
        input_topics=list(names.values()),
        dead_letter_topic=dlq,
        root=root,
    )
    worker, exporter = build_worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    conn = sqlite3.connect(settings.store_path, timeout=30)
    try:
        while True:
            try:
                done = conn.execute("SELECT count(*) FROM seen_events").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= len(events):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
        worker.stop()
        thread.join(60)
        exporter.store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--segments", type=int, default=3)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    events = make_events(args.tasks, args.segments)
    print(f"{args.tasks} tasks x {args.segments} segments -> {len(events)} events")
    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("FULL", "NORMAL"):
            root = Path(tmp) / sync
            r = sink_rate(events, root, sync)
            print(
                f"sink, synchronous={sync}: {r['events']} events, {r['rows']} rows in "
                f"{r['seconds']:.2f} s = {r['events'] / r['seconds']:,.0f} events/s, "
                f"{r['rows'] / r['seconds']:,.0f} rows/s (all kinds, Label Studio tasks included)"
            )
        root = Path(tmp) / "FULL"
        conn = sqlite3.connect(root / "feedback.sqlite")
        rows = conn.execute("SELECT count(*) FROM rows").fetchone()[0]
        started = time.perf_counter()
        sets = len(publish(conn, root, everything=True))
        elapsed = time.perf_counter() - started
        size = sum(
            p.stat().st_size for p in root.rglob("*") if p.is_file() and "sqlite" not in p.name
        )
        print(
            f"publish: {sets} sets, {rows} rows, {size / 1e6:.1f} MB in {elapsed:.2f} s = "
            f"{rows / elapsed:,.0f} rows/s"
        )
        started = time.perf_counter()
        report = quality_report(conn, 30 * 86400)
        elapsed = time.perf_counter() - started
        print(
            f"report over {sum(report.rows_in_window.values())} rows in window: {elapsed:.2f} s "
            f"(WER {[round(a.wer or 0, 4) for a in report.asr]}, "
            f"kappa {[round(s.kappa or 0, 3) for s in report.sentiment]})"
        )
        conn.close()
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap:
            elapsed = end_to_end(events, bootstrap, Path(tmp) / "e2e")
            print(
                f"end to end through {bootstrap}: {len(events)} events in {elapsed:.2f} s = "
                f"{len(events) / elapsed:,.0f} events/s (includes the consumer group join)"
            )
        else:
            print("end to end: skipped (set KAFKA_BOOTSTRAP_SERVERS)")


if __name__ == "__main__":
    main()
