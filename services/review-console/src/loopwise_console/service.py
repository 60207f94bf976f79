"""The running console: Kafka materialiser, outbox publisher, gauges, HTTP server.

* The materialiser is the shared confluent-kafka `Worker`: task events of a batch
  are applied in one transaction in `before_commit`, so offsets move only after
  the store has them; the store skips event ids it has seen.
* The outbox publisher sends what decisions and audits wrote, with the
  idempotent producer, and marks rows published only after the brokers
  acknowledged them; while Kafka is down rows wait (and the backlog gauge shows it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import Counter, Gauge

from loopwise.events import Envelope, TenantEvent
from loopwise.kafka import Emit, Incoming, Worker
from loopwise.logging import get_logger
from loopwise.metrics import ProbeServer
from loopwise.topics import producer_message_max_bytes
from loopwise_console.config import ConsoleSettings
from loopwise_console.console import SERVICE
from loopwise_console.store import ConsoleStore, utcnow

log = get_logger(__name__)

QUEUE_DEPTH = Gauge("loopwise_review_queue_depth", "Open review tasks", ["priority"])
QUEUE_OLDEST = Gauge(
    "loopwise_review_queue_oldest_age_seconds", "Age of the oldest open task", ["priority"]
)
OUTBOX_BACKLOG = Gauge("loopwise_review_outbox_backlog", "Outbox events not yet published")
SLA_BREACHES = Counter(
    "loopwise_review_sla_breaches_total", "Tasks that passed their deadline undecided", ["priority"]
)
TASK_EVENTS = Counter(
    "loopwise_review_task_events_total",
    "Task events materialised, by result (applied, duplicate, ignored)",
    ["result"],
)
PRIORITIES = ("p1", "p2", "p3", "p4")
for _p in PRIORITIES:
    QUEUE_DEPTH.labels(_p)
    QUEUE_OLDEST.labels(_p)
    SLA_BREACHES.labels(_p)
for _r in ("applied", "duplicate", "ignored"):
    TASK_EVENTS.labels(_r)


class Materialiser:
    """Buffers a batch's task events and applies them before the batch's offsets are stored."""

    def __init__(self, store: ConsoleStore) -> None:
        self.store = store
        self._buffer: list[tuple[Envelope, TenantEvent]] = []

    def handle(self, incoming: Incoming) -> Iterator[Emit]:
        """Worker handler: keep the event for the batch; nothing is produced."""
        self._buffer.append((incoming.envelope, incoming.event))
        return iter(())

    def commit(self) -> None:
        """Worker `before_commit`: one transaction for the batch (a failure rewinds it)."""
        if not self._buffer:
            return
        result = self.store.materialise(self._buffer)
        self._buffer.clear()
        TASK_EVENTS.labels("applied").inc(result.applied)
        TASK_EVENTS.labels("duplicate").inc(result.duplicates)
        TASK_EVENTS.labels("ignored").inc(result.ignored)


class OutboxPublisher:
    """Publishes outbox rows in order and marks the acknowledged ones."""

    def __init__(self, store: ConsoleStore, settings: ConsoleSettings) -> None:
        self.store = store
        self.settings = settings
        self.producer = Producer(
            {
                **settings.kafka.librdkafka(),
                "client.id": f"{settings.kafka.client_id}-{SERVICE}-outbox",
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",
                "message.timeout.ms": 30_000,
                # a decision correcting a long call may pass librdkafka's default 1,000,000
                "message.max.bytes": producer_message_max_bytes(
                    [settings.decisions_topic, settings.audit_topic]
                ),
                **settings.producer_overrides,
            }
        )

    def publish_once(self, limit: int = 500) -> int:
        """Publish pending rows; return how many were acknowledged."""
        rows = self.store.pending_outbox(limit)
        if not rows:
            OUTBOX_BACKLOG.set(0)
            return 0
        done: list[int] = []
        failed: dict[int, str] = {}
        for row in rows:

            def delivered(err: KafkaError | None, _msg: Message, row_id: int = row.id) -> None:
                if err is None:
                    done.append(row_id)
                else:
                    failed[row_id] = err.str()

            headers: Any = [(n, v.encode("utf-8")) for n, v in json.loads(row.headers)]
            while True:
                try:
                    self.producer.produce(
                        row.topic,
                        key=row.key.encode("utf-8"),
                        value=row.value.encode("utf-8"),
                        headers=headers,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    self.producer.poll(0.1)
        self.producer.flush(60)
        self.store.mark_published(done, failed)
        if failed:
            log.warning(
                "outbox_publish_failed", failed=len(failed), first=next(iter(failed.values()))
            )
        OUTBOX_BACKLOG.set(self.store.outbox_backlog())
        return len(done)

    def run(self, stop: threading.Event) -> None:
        """Publish until stopped; errors are logged and retried."""
        while not stop.is_set():
            try:
                sent = self.publish_once()
            except Exception:
                log.exception("outbox_turn_failed")
                sent = 0
            if not sent:
                stop.wait(self.settings.outbox_interval_s)
        try:
            self.publish_once()
        except Exception:
            log.exception("outbox_final_turn_failed")


def refresh_gauges(store: ConsoleStore) -> None:
    """Queue depth and oldest age per priority; count newly breached deadlines."""
    now = utcnow()
    for priority, count in store.mark_breaches(now).items():
        SLA_BREACHES.labels(priority).inc(count)
    with store.read() as conn:
        stats = store.queue_stats(conn, None, now)
    for priority in PRIORITIES:
        count, age = stats.get(priority, (0, 0.0))
        QUEUE_DEPTH.labels(priority).set(count)
        QUEUE_OLDEST.labels(priority).set(age)
    OUTBOX_BACKLOG.set(store.outbox_backlog())


class ConsoleService:
    """Everything `loopwise-console run` starts."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.store = ConsoleStore(settings.db_url())
        self.materialiser = Materialiser(self.store)
        self.worker = Worker(
            service=SERVICE,
            settings=settings,
            handler=self.materialiser.handle,
            output_topics=(),
            before_commit=self.materialiser.commit,
        )
        self.outbox = OutboxPublisher(self.store, settings)
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._probes: ProbeServer | None = None

    def healthy(self) -> bool:
        """The worker's loop turns and the database answers."""
        return self.worker.healthy() and self.db_ok()

    def ready(self) -> bool:
        """The worker joined its group and the database answers."""
        return self.worker.ready() and self.db_ok()

    def db_ok(self) -> bool:
        """A trivial query succeeds."""
        try:
            self.store.outbox_backlog()
            return True
        except Exception:  # noqa: BLE001 - any database failure means not healthy
            return False

    def _gauges(self) -> None:
        while not self.stop_event.wait(self.settings.gauges_interval_s):
            try:
                refresh_gauges(self.store)
            except Exception:
                log.exception("gauges_failed")

    def start_background(self) -> None:
        """Probes, outbox publisher, gauges and the Kafka worker, each in its own thread."""
        obs = self.settings.observability
        self._probes = ProbeServer(
            obs.host, obs.port, healthy=self.healthy, ready=self.ready
        ).start()
        refresh_gauges(self.store)
        for name, target in (
            ("console-outbox", lambda: self.outbox.run(self.stop_event)),
            ("console-gauges", self._gauges),
            ("console-worker", self.worker.run),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the worker and the publisher (which sends what is pending first)."""
        self.stop_event.set()
        self.worker.stop()
        for thread in self._threads:
            thread.join(30)
        if self._probes is not None:
            self._probes.stop()
        self.store.close()

    def run_forever(self) -> None:
        """Serve the web app in the foreground until SIGTERM/SIGINT, then stop everything."""
        import uvicorn

        from loopwise_console.api import create_app

        self.start_background()
        app = create_app(self.settings, self.store)
        config = uvicorn.Config(
            app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        try:
            uvicorn.Server(config).run()  # handles SIGTERM/SIGINT itself
        finally:
            self.stop()
