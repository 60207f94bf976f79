"""The wiring: the shared confluent-kafka worker, the state store and the publisher thread."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator

from loopwise.events import (
    ReleasedOutcomeV1,
    ReviewDecisionV1,
    ReviewTaskCreatedV1,
    ReviewTaskEscalatedV1,
    ReviewTaskExpiredV1,
    TenantEvent,
)
from loopwise.kafka import Emit, Incoming, Worker, serve
from loopwise.logging import get_logger
from loopwise.redaction import redact
from loopwise_feedback.config import SERVICE, FeedbackSettings
from loopwise_feedback.export import publish
from loopwise_feedback.gauges import (
    PENDING,
    REDELIVERIES,
    ROWS_WRITTEN,
    SETS_PUBLISHED,
    init_gauges,
    show_quality,
)
from loopwise_feedback.handler import decision_rows, outcome_fact
from loopwise_feedback.quality import quality_report
from loopwise_feedback.store import (
    FeedbackStore,
    connect,
    count_pending,
    dirty_partitions,
    prune,
)

log = get_logger(__name__)

ACCEPTED: dict[str, type[TenantEvent]] = {
    m.event_type: m
    for m in (
        ReviewTaskCreatedV1,
        ReviewTaskEscalatedV1,
        ReviewTaskExpiredV1,
        ReviewDecisionV1,
        ReleasedOutcomeV1,
    )
}


def keep_payload(raw: bytes) -> bytes | None:
    """Dead letters keep a payload only when it holds nothing the redactor would replace."""
    return None if redact(raw.decode("utf-8", errors="replace")).spans else raw


class Exporter:
    """The sink: turns review tasks, decisions and outcomes into stored rows and facts."""

    def __init__(self, store: FeedbackStore, audio_path_template: str) -> None:
        self.store = store
        self.audio_path_template = audio_path_template
        self._store_error: sqlite3.OperationalError | None = None

    @classmethod
    def for_settings(cls, settings: FeedbackSettings) -> Exporter:
        """An exporter on the settings' store."""
        store = FeedbackStore(settings.store_path, settings.sqlite_synchronous)
        return cls(store, settings.audio_path_template)

    def handle(self, incoming: Incoming) -> Iterator[Emit]:
        """The worker's handler: store what one event contributes; emits nothing."""
        if self._store_error is None:
            try:
                self.apply_event(incoming.event, incoming.envelope.id, incoming.topic)
            except sqlite3.OperationalError as exc:
                # The store failed (locked, disk full), not the event: the whole batch is
                # rewound and retried instead of dead-lettering good input.
                log.error("store_failed", error=str(exc))
                self._store_error = exc
        yield from ()

    def apply_event(self, event: TenantEvent, event_id: str, topic: str) -> bool:
        """Store what one event contributes, once per event id; False for a redelivery."""
        with self.store.event():
            if not self.store.mark_seen(event_id, topic):
                REDELIVERIES.labels(topic).inc()
                return False
            if isinstance(event, ReviewTaskCreatedV1):
                self.store.put_task(event)
                for pending in self.store.take_pending(event.tenant_id, event.task_id):
                    self._apply(event, pending.decision, pending.event_id)
            elif isinstance(event, ReviewDecisionV1):
                task = self.store.get_task(event.tenant_id, event.task_id)
                if task is None:
                    self.store.put_pending(event_id, event)
                    log.info("decision_waits_for_task", task_id=event.task_id)
                else:
                    self._apply(task, event, event_id)
            elif isinstance(event, ReleasedOutcomeV1):
                self.store.put_outcome(outcome_fact(event))
        return True

    def _apply(self, task: ReviewTaskCreatedV1, decision: ReviewDecisionV1, event_id: str) -> None:
        made = decision_rows(task, decision, event_id, audio_path_template=self.audio_path_template)
        for reason in made.skipped:
            log.warning("decision_item_skipped", reason=reason, decision_id=decision.decision_id)
        self.store.add_rows(made.rows)
        if made.fact is not None:
            self.store.put_decision(made.fact)
        for row in made.rows:
            ROWS_WRITTEN.labels(row.kind).inc()

    def before_commit(self) -> None:
        """Commit the batch's writes before its offsets are stored; raise to have it retried."""
        failed, self._store_error = self._store_error, None
        if failed is not None:
            self.store.rollback()
            raise failed
        self.store.commit()


class Publisher:
    """Rewrites changed training sets and refreshes the quality gauges, on a timer and at exit."""

    def __init__(self, settings: FeedbackSettings) -> None:
        self.settings = settings
        self._conn: sqlite3.Connection = connect(settings.store_path, settings.sqlite_synchronous)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="feedback-publisher", daemon=True)

    def tick(self) -> int:
        """Publish what changed and refresh the gauges; return how many sets were rewritten."""
        with self._lock:
            changed = publish(self._conn, self.settings.root)
            for partition in changed:
                SETS_PUBLISHED.labels(partition.kind).inc()
            prune(self._conn, self.settings.state_retention_s)
            show_quality(quality_report(self._conn, self.settings.window_s))
            PENDING.set(count_pending(self._conn))
            return len(changed)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.publish_interval_s):
            try:
                self.tick()
            except (OSError, sqlite3.Error):
                # The next tick retries: the dirty marks stay until a set is written.
                log.exception("publish_failed")

    def start(self) -> Publisher:
        """Publish once now, then on the timer in the background."""
        self.tick()
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the timer, publish a last time, close."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)
        self.tick()
        self._conn.close()

    def dirty(self) -> int:
        """Training sets waiting to be rewritten."""
        return len(dirty_partitions(self._conn))


def build_worker(settings: FeedbackSettings) -> tuple[Worker, Exporter]:
    """The worker and its sink for these settings."""
    init_gauges()
    exporter = Exporter.for_settings(settings)
    worker = Worker(
        service=SERVICE,
        settings=settings,
        handler=exporter.handle,
        output_topics=(),
        accepted=ACCEPTED,
        dead_letter_payload=keep_payload,
        before_commit=exporter.before_commit,
    )
    return worker, exporter


def run_service(settings: FeedbackSettings) -> None:
    """Run the exporter as a service process until SIGTERM."""
    worker, exporter = build_worker(settings)
    publisher = Publisher(settings).start()
    try:
        serve(worker)
    finally:
        publisher.close()
        exporter.store.close()
