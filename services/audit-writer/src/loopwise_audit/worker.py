"""The audit writer on the shared worker: buffer a batch's records, commit, then store offsets.

The handler only describes events (no outputs); the worker's `before_commit`
hook appends the batch to the store in one transaction, so a batch's records
are durable before its offsets are stored. Checkpoints are signed after the
commit, written to files, then published.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from loopwise.events import AuditCheckpointV1, TenantEvent, decode, encode
from loopwise.kafka import Emit, Incoming, Worker, serve
from loopwise.kafka.intake import output_id
from loopwise.logging import get_logger
from loopwise.settings import KafkaSettings
from loopwise_audit.checkpoints import (
    Checkpointer,
    CheckpointFileProblem,
    CheckpointSet,
    LoadedCheckpoint,
    load_checkpoints,
)
from loopwise_audit.config import AuditWorkerSettings
from loopwise_audit.handler import AuditEntry, describe
from loopwise_audit.store import AuditStore
from loopwise_audit.verify import verify_store

SERVICE = "audit-writer"
log = get_logger(__name__)

RECORDS_APPENDED = Counter(
    "loopwise_audit_records_appended_total", "Audit records appended to the chains"
)
DUPLICATES_SKIPPED = Counter(
    "loopwise_audit_duplicates_skipped_total",
    "Events not recorded because their event id was already in the trail (redeliveries)",
)
CHECKPOINTS = Counter("loopwise_audit_checkpoints_total", "Chain heads signed and written")
APPEND_SECONDS = Histogram(
    "loopwise_audit_append_duration_seconds",
    "Time to append and commit one batch",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UNCHECKPOINTED = Gauge(
    "loopwise_audit_uncheckpointed_records", "Records not yet covered by a checkpoint (all tenants)"
)
FAULTY_CHAINS = Gauge(
    "loopwise_audit_verification_faulty_chains",
    "Tenant chains the writer's last self-verification found faulty (0: all verified)",
)
LAST_VERIFIED = Gauge(
    "loopwise_audit_last_verification_timestamp_seconds",
    "Unix time the writer last finished verifying its chains against the checkpoint files",
)


class CheckpointPublisher:
    """Publishes checkpoints to the checkpoint topic and waits for the broker's acknowledgement."""

    def __init__(self, settings: AuditWorkerSettings) -> None:
        self.topic = settings.checkpoint_topic
        self.producer = Producer(
            {
                **settings.kafka.librdkafka(),
                "client.id": f"{settings.kafka.client_id}-{SERVICE}-checkpoints",
                "enable.idempotence": True,
                "acks": "all",
                **settings.producer_overrides,
            }
        )

    def __call__(self, cp: AuditCheckpointV1) -> None:
        """Produce one checkpoint (keyed by tenant) and block until it is acknowledged."""
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err.str())

        event_id = output_id(f"{cp.tenant_id}/{cp.sequence}/{cp.head_hash}", SERVICE, 0)
        key, value, headers, _ = encode(cp, source=SERVICE, event_id=event_id)
        self.producer.produce(
            self.topic, key=key, value=value, headers=cast(Any, headers), on_delivery=delivered
        )
        if self.producer.flush(30) != 0:
            raise RuntimeError("checkpoint not acknowledged within 30 s")
        if errors:
            raise RuntimeError(f"checkpoint not delivered: {errors[0]}")


class AuditSink:
    """Collects a batch's audit entries and appends them in one transaction."""

    def __init__(self, store: AuditStore, checkpointer: Checkpointer | None = None) -> None:
        self.store = store
        self.checkpointer = checkpointer
        # Keyed by (tenant, event id): a batch replayed after a failed commit adds nothing twice.
        self._buffer: dict[tuple[str, str], AuditEntry] = {}

    def handle(self, incoming: Incoming) -> Iterator[Emit]:
        """Worker handler: describe the event; nothing is produced."""
        entry = describe(incoming)
        key = (entry.tenant_id, entry.event_id)
        if key in self._buffer:
            DUPLICATES_SKIPPED.inc()
        else:
            self._buffer[key] = entry
        return iter(())

    def commit(self) -> None:
        """Worker `before_commit`: make the batch's records durable, then checkpoint if due."""
        if self._buffer:
            started = time.perf_counter()
            result = self.store.append(list(self._buffer.values()))
            APPEND_SECONDS.observe(time.perf_counter() - started)
            self._buffer.clear()
            RECORDS_APPENDED.inc(result.appended)
            DUPLICATES_SKIPPED.inc(result.duplicates)
            if result.appended:
                log.info("audit_appended", records=result.appended, duplicates=result.duplicates)
            if self.checkpointer is not None:
                self.checkpointer.note(result.heads.values())
        self.run_checkpoints()

    def run_checkpoints(self, *, force: bool = False) -> None:
        """Sign the heads that are due."""
        if self.checkpointer is None:
            return
        made = self.checkpointer.run_due(force=force)
        CHECKPOINTS.inc(len(made))
        UNCHECKPOINTED.set(sum(self.checkpointer.pending().values()))


class AuditService:
    """The running audit writer: worker, store, checkpointer and its timer."""

    def __init__(self, settings: AuditWorkerSettings) -> None:
        self.settings = settings
        self.store = AuditStore(settings.database_url)
        self.checkpointer = Checkpointer(
            directory=settings.checkpoint_dir,
            keys=settings.keyring(),
            every_records=settings.checkpoint_every_records,
            every_s=settings.checkpoint_every_s,
            publish=CheckpointPublisher(settings),
        )
        with self.store.reader() as conn:
            # Heads committed before a crash but never checkpointed are signed soon after start.
            self.checkpointer.note(self.store.heads(conn).values())
        self.sink = AuditSink(self.store, self.checkpointer)
        self.worker = Worker(
            service=SERVICE,
            settings=settings,
            handler=self.sink.handle,
            output_topics=(),
            dead_letter_payload=lambda _raw: None,  # input may be unredacted: never copy it
            before_commit=self.sink.commit,
        )
        self._stop_timer = threading.Event()

    def verify(self) -> int:
        """Verify every chain against the checkpoint files; set the gauges; return faulty chains."""
        report = verify_store(
            self.store, load_checkpoints(self.settings.checkpoint_dir), self.settings.keyring()
        )
        faulty = [chain for chain in report.chains if not chain.ok]
        for chain in faulty:
            fault = chain.fault.describe() if chain.fault is not None else "unknown"
            log.error("audit_verification_fault", tenant_id=chain.tenant_id, fault=fault)
        FAULTY_CHAINS.set(len(faulty))
        LAST_VERIFIED.set(time.time())
        return len(faulty)

    def _start_verifier(self) -> threading.Thread | None:
        every_s = self.settings.verify_every_s
        if every_s <= 0:
            return None

        def loop() -> None:
            # Once at start (so the "stale" alert does not wait a full period), then periodically.
            while True:
                try:
                    self.verify()
                except Exception:  # the writer keeps writing; the stale timestamp alerts
                    log.exception("audit_verification_failed")
                if self._stop_timer.wait(every_s):
                    return

        thread = threading.Thread(target=loop, name="audit-verifier", daemon=True)
        thread.start()
        return thread

    def run(self, *, as_service: bool = False) -> None:
        """Run until the worker stops; sign every pending head on the way out."""
        timer = self.checkpointer.start_timer(self._stop_timer)
        verifier = self._start_verifier()
        try:
            if as_service:
                serve(self.worker)
            else:
                self.worker.run()
        finally:
            self._stop_timer.set()
            timer.join(10)
            if verifier is not None:
                verifier.join(10)
            self.sink.run_checkpoints(force=True)
            self.store.close()

    def stop(self, *_: Any) -> None:
        """Ask the worker to drain and stop."""
        self.worker.stop()

    def run_until_idle(self, idle_s: float, timeout_s: float | None = None) -> int:
        """Consume until no message arrived for `idle_s` seconds (backfills, cron); return count."""
        consumed = [0]
        handle = self.worker.handler

        def counting(incoming: Incoming) -> Iterable[Emit]:
            consumed[0] += 1
            return handle(incoming)

        self.worker.handler = counting
        stop = threading.Event()

        def watch() -> None:
            started = last_change = time.monotonic()
            seen = -1
            while not stop.wait(0.2):
                now = time.monotonic()
                if consumed[0] != seen:
                    seen, last_change = consumed[0], now
                caught_up = self.worker.ready() and now - last_change >= idle_s
                if caught_up or (timeout_s is not None and now - started >= timeout_s):
                    self.worker.stop()
                    return

        watcher = threading.Thread(target=watch, name="audit-idle-watch", daemon=True)
        watcher.start()
        self.worker.install_signal_handlers()
        try:
            self.run()
        finally:
            stop.set()
            watcher.join(5)
        return consumed[0]


def read_checkpoint_topic(
    kafka: KafkaSettings, topic: str, timeout_s: float = 60.0
) -> CheckpointSet:
    """Every checkpoint on the checkpoint topic, from the first offset to the current end."""
    consumer = Consumer(
        {
            **kafka.librdkafka(),
            "group.id": f"loopwise-audit-verify-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    found = CheckpointSet()
    source = Path(f"kafka:{topic}")
    accepted: dict[str, type[TenantEvent]] = {AuditCheckpointV1.event_type: AuditCheckpointV1}
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None:
            raise RuntimeError(f"checkpoint topic {topic}: {metadata.error}")
        ends: dict[int, int] = {}
        starts = []
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(topic, partition, low))
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
            try:
                _, event = decode(msg.value(), cast(Any, msg.headers()), accepted)
            except ValueError as exc:
                found.problems.append(CheckpointFileProblem(source, offset, str(exc)[:200]))
                continue
            assert isinstance(event, AuditCheckpointV1)
            found.by_tenant.setdefault(event.tenant_id, []).append(
                LoadedCheckpoint(event, source, offset)
            )
        if ends:
            raise RuntimeError(f"checkpoint topic {topic} not read to its end in {timeout_s} s")
    finally:
        consumer.close()
    return found
