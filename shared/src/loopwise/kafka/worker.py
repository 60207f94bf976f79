"""The worker every stateless service and sink runs: consume, validate, handle, produce, commit.

Guarantees, in order of importance:

* At-least-once: an input's offset is stored only after every output it caused
  (dead letters included) is acknowledged by the brokers; the idempotent
  producer keeps retries from duplicating or reordering within a partition.
* Redelivery is harmless downstream: an output's event id is derived from the
  input's event id, the service and the output's index, so a replayed input
  produces byte-identical ids that consumers deduplicate on.
* One bad event never stops the service: it goes to the service's
  dead-letter topic with its coordinates, stage, error class and reason. A handler
  whose own infrastructure failed (``RetryBatch``: a full disk, a locked database)
  dead-letters nothing: the batch is rewound and run again after the backoff.
* SIGTERM finishes the batch in hand, commits and leaves the group.

Stateful handlers that keep inputs in memory across messages (transcription holds
audio until an utterance ends) plug into optional hooks; unused, they change nothing:

* ``offset_floors``: per partition, the lowest input offset still held in memory;
  offsets are never stored past it, so a crash, restart or rebalance replays it;
* ``tick`` (every ``tick_interval_s``, also when no message arrives): outputs caused by
  time alone, each the child of an earlier input, e.g. closing an idle call;
* ``dead_letters`` (drained after every input and every tick): earlier inputs the
  handler gives up on, dead-lettered with their own coordinates;
* ``on_revoke``: the partitions this instance no longer owns, to forget their state.

Stateful services hand the worker a ``StateStore`` (``loopwise.kafka.state``): its states
are restored from their changelog before the assigned partitions are read, its handler
runs every input, its clock runs on every tick, and the changed parts of the states are
written to the changelog after the outputs are acknowledged and before the offsets are
stored ("send, then store").

Batches leave promptly: the loop waits up to ``poll_timeout_s`` for the first message
only, then takes whatever else is already fetched (up to ``batch_size``) without waiting.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import Field

from loopwise.events import EVENT_TYPES, Envelope, TenantEvent
from loopwise.events.envelope import Headers
from loopwise.kafka.deadletter import PayloadFilter, dead_letter_record, exception_reason
from loopwise.kafka.intake import (
    DeadLetterRequest,
    Emit,
    Incoming,
    OutRecord,
    Rejection,
    RetryBatch,
    admit,
    encode_output,
)
from loopwise.kafka.state import StateStore
from loopwise.logging import get_logger, librdkafka_logger
from loopwise.metrics import (
    BATCH_RETRIES,
    BATCH_SIZE,
    CONSUMER_LAG,
    DELIVERY_FAILURES,
    EVENTS_CONSUMED,
    EVENTS_IN_PROGRESS,
    EVENTS_PRODUCED,
    EVENTS_SUPERSEDED,
    HANDLER_SECONDS,
    LAST_PROCESSED,
    ProbeServer,
    init_service_metrics,
)
from loopwise.settings import ServiceSettings
from loopwise.topics import catalogue, message_limit, producer_message_max_bytes

log = get_logger(__name__)


class WorkerSettings(ServiceSettings):
    """Settings of a confluent-kafka worker; services subclass with their env prefix."""

    group_id: str = Field(min_length=1, description="Consumer group id")
    input_topics: list[str] = Field(min_length=1, description="Topics to consume (JSON list)")
    dead_letter_topic: str = Field(
        min_length=1, description="Where undecodable or failing input goes"
    )
    batch_size: int = Field(default=500, ge=1, le=100_000, description="Messages per consume call")
    poll_timeout_s: float = Field(
        default=0.1,
        gt=0,
        le=60,
        description="Longest wait for a first message, seconds; a batch never waits to fill up",
    )
    max_message_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Larger input values are dead-lettered as oversize; an input topic whose "
        "catalogue entry sets a larger max.message.bytes admits up to that",
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a new group starts"
    )
    stats_interval_ms: int = Field(
        default=5000, ge=0, description="librdkafka statistics (lag) period"
    )
    health_stall_s: float = Field(
        default=120.0,
        gt=0,
        description="/healthz fails when neither a loop turn nor an input went by for this long",
    )
    retry_backoff_s: float = Field(default=1.0, ge=0, description="Pause before re-running a batch")
    state_clock_max_backlog: int = Field(
        default=1000,
        ge=0,
        description="A state's clock (join windows, deadlines) waits while more input than this "
        "waits unread, so a restarted service reads its backlog before a window closes",
    )
    state_clock_max_defer_s: float = Field(
        default=30.0, ge=0, description="Longest such wait, seconds: the clock then runs anyway"
    )
    consumer_overrides: dict[str, str | int | bool] = Field(
        default_factory=dict, description="Extra librdkafka consumer properties (JSON object)"
    )
    producer_overrides: dict[str, str | int | bool] = Field(
        default_factory=dict, description="Extra librdkafka producer properties (JSON object)"
    )


Handler = Callable[[Incoming], Iterable[Emit]]
"""A pure function from one input event to the events it causes; no Kafka inside."""

Partition = tuple[str, int]
"""A topic and a partition number."""

ChildEmit = tuple[Incoming, Emit]
"""An output caused later (by a timer) and the earlier input it is a child of."""

TICK_INDEX_BASE = 1_000
"""Output index of a tick's first output, so its derived id differs from the handler's."""


def _no_payload(value: bytes) -> bytes | None:
    return None


@dataclass
class _Batch:
    pending: int = 0
    failures: list[str] = field(default_factory=list)
    delivered: dict[str, int] = field(default_factory=dict)


def _latest_only(outs: list[OutRecord], service: str) -> list[OutRecord]:
    """The outputs of a batch in order, less those a later one in the batch supersedes.

    The batch's inputs are all committed together after its outputs are acknowledged,
    so a dropped result's input is covered by the result that replaced it.
    """
    last = {out.supersedes: i for i, out in enumerate(outs) if out.supersedes is not None}
    if not last:
        return outs
    kept = [
        out for i, out in enumerate(outs) if out.supersedes is None or last[out.supersedes] == i
    ]
    if len(kept) < len(outs):
        EVENTS_SUPERSEDED.labels(service).inc(len(outs) - len(kept))
    return kept


def _coordinates(msg: Message) -> tuple[tuple[str, int], int]:
    """Topic, partition and offset of a consumed (non-error) message."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return (topic, partition), offset


def accepted_events(topics: Iterable[str]) -> dict[str, type[TenantEvent]]:
    """Event types the catalogue allows on these topics (all types for unknown topics)."""
    by_name = {t.name: t for t in catalogue().topics}
    accepted: dict[str, type[TenantEvent]] = {}
    for name in topics:
        spec = by_name.get(name)
        if spec is None:
            return dict(EVENT_TYPES)
        accepted.update({e: EVENT_TYPES[e] for e in spec.events if e in EVENT_TYPES})
    return accepted


class Worker:
    """Runs one handler over input topics with at-least-once delivery and a dead-letter topic."""

    def __init__(
        self,
        *,
        service: str,
        settings: WorkerSettings,
        handler: Handler,
        output_topics: Sequence[str] = (),
        accepted: Mapping[str, type[TenantEvent]] | None = None,
        dead_letter_payload: PayloadFilter | None = None,
        before_commit: Callable[[], None] | None = None,
        offset_floors: Callable[[], Mapping[Partition, int]] | None = None,
        tick: Callable[[], Iterable[ChildEmit]] | None = None,
        tick_interval_s: float = 1.0,
        dead_letters: Callable[[], Iterable[DeadLetterRequest]] | None = None,
        on_revoke: Callable[[set[Partition]], None] | None = None,
        state: StateStore[Any] | None = None,
    ) -> None:
        self.service = service
        # Sinks make their writes durable here: it runs after a batch's outputs are delivered
        # and before its offsets are stored; if it raises, the batch is rewound and retried.
        self.before_commit = before_commit
        # Per partition, the lowest offset the handler's memory still needs: stored offsets
        # never pass it. Asked after a batch is delivered and after every tick (which may
        # lift it: offsets then move on without new input); if it raises, nothing is stored.
        self.offset_floors = offset_floors
        self._consumed: dict[Partition, int] = {}  # next offset after delivered input
        self._owned: set[Partition] = set()  # assigned now, as the rebalance callbacks said
        self._revoked_in_poll: set[Partition] = set()  # revoked while a batch was taken
        # A timer turn between polls, also when no message comes: its outputs are children
        # of earlier inputs (ids from TICK_INDEX_BASE on). A failing tick is logged; the loop
        # goes on. Its outputs are not retried if their delivery fails.
        self.tick = tick
        if tick_interval_s <= 0:
            raise ValueError("tick_interval_s must be positive")
        self.tick_interval_s = tick_interval_s
        # Earlier inputs given up on, drained after every input and every tick and
        # dead-lettered with their own coordinates; their bytes are no longer kept.
        self.dead_letters = dead_letters
        # Told which partitions were revoked, after their offsets are committed.
        self.on_revoke = on_revoke
        # Keyed states with their changelog: restored on assign, written after each batch's
        # outputs are acknowledged, dropped on revoke; their clock runs on every tick.
        self.state = state
        self._clock_deferred_since: float | None = None
        self._last_tick = 0.0
        self.settings = settings
        self.handler = handler
        self.output_topics = frozenset(output_topics)
        self.accepted = (
            dict(accepted) if accepted is not None else accepted_events(settings.input_topics)
        )
        self.dead_letter_payload = dead_letter_payload
        # Topics the catalogue lets carry more than 1 MiB (review tasks, decisions and
        # releases of long calls): their records are admitted up to that limit, and this
        # producer never refuses a record its output topic takes (the brokers' own limits
        # are read when the loop starts, see `run`).
        self._input_limits = {
            t: max(settings.max_message_bytes, message_limit(t) or 0) for t in settings.input_topics
        }
        self._message_max_bytes = producer_message_max_bytes(self._produced_topics())
        self._stop = threading.Event()
        self._assigned_once = threading.Event()
        self._last_turn = time.monotonic()
        self._consumer: Any = None
        self._producer: Any = None
        self._probes: ProbeServer | None = None
        init_service_metrics(
            service, settings.input_topics, [*self.output_topics, settings.dead_letter_topic]
        )
        # every message touches these: their labelled children are looked up once
        self._handler_seconds = HANDLER_SECONDS.labels(service)
        self._batch_size = BATCH_SIZE.labels(service)
        self._batches = 0
        self._batched = 0
        self._processed: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def healthy(self) -> bool:
        """True while the poll loop keeps turning or works through its batch: a batch of
        slow but finite inputs (500 segments of 20,000 characters redact for minutes)
        must not look like a hang, or the orchestrator restarts the service into it."""
        return time.monotonic() - self._last_turn < self.settings.health_stall_s

    def ready(self) -> bool:
        """True once the consumer joined its group, until shutdown begins."""
        return self._assigned_once.is_set() and not self._stop.is_set()

    def stop(self, *_: object) -> None:
        """Ask the loop to finish the batch in hand, commit and exit; safe from signal handlers."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT drain the worker."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def start_probes(self) -> ProbeServer:
        """Serve /metrics, /healthz and /readyz on the configured port."""
        obs = self.settings.observability
        self._probes = ProbeServer(
            obs.host, obs.port, healthy=self.healthy, ready=self.ready
        ).start()
        log.info("probes_listening", port=self._probes.port)
        return self._probes

    def _produced_topics(self) -> list[str]:
        return sorted({*self.output_topics, self.settings.dead_letter_topic})

    def _broker_limits(self) -> dict[str, int]:
        """Each output topic's `max.message.bytes` as the brokers hold it (a topic renamed
        in the settings or altered by an operator included); empty where they cannot say."""
        from confluent_kafka.admin import AdminClient, ConfigResource

        limits: dict[str, int] = {}
        try:
            admin = AdminClient(self.settings.kafka.librdkafka())
            futures = admin.describe_configs(
                [ConfigResource(ConfigResource.Type.TOPIC, t) for t in self._produced_topics()],
                request_timeout=15,
            )
            for resource, future in futures.items():
                try:
                    entry = future.result(timeout=20).get("max.message.bytes")
                    if entry is not None and entry.value is not None:
                        limits[resource.name] = int(entry.value)
                except (KafkaException, TimeoutError, ValueError, TypeError) as exc:
                    log.info("topic_limit_unknown", topic=resource.name, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a refinement only: the catalogue's stand
            log.warning("topic_limits_unavailable", error=str(exc))
        return limits

    def run(self) -> None:
        """Consume until stop() is called; then drain, commit and close."""
        self._message_max_bytes = max(self._message_max_bytes, *self._broker_limits().values(), 0)
        log.info(
            "message_limits",
            producer_max_bytes=self._message_max_bytes,
            input_max_bytes=self._input_limits,
        )
        self._consumer = Consumer(self._consumer_config())
        self._producer = Producer(self._producer_config())
        self._consumer.subscribe(
            list(self.settings.input_topics), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        log.info(
            "worker_started",
            inputs=list(self.settings.input_topics),
            outputs=sorted(self.output_topics),
            dead_letter_topic=self.settings.dead_letter_topic,
            group_id=self.settings.group_id,
        )
        try:
            while not self._stop.is_set():
                self._last_turn = time.monotonic()
                messages = self._poll_batch()
                if messages:
                    self._process_batch(messages)
                if (self.tick is not None or self.state is not None) and self._tick_due():
                    self._run_tick()
        finally:
            self._shutdown()

    def _poll_batch(self) -> list[Message]:
        """Wait for one message at most `poll_timeout_s`, then take what is already fetched."""
        first = self._consumer.poll(self.settings.poll_timeout_s)
        if first is None:
            return []
        if self.settings.batch_size == 1:
            return [first]  # poll runs a rebalance before the message it returns, never after
        self._revoked_in_poll.clear()
        rest = self._consumer.consume(num_messages=self.settings.batch_size - 1, timeout=0)
        messages = [first, *rest]
        if self._revoked_in_poll:
            messages = self._without_revoked(messages)
        return messages

    def _without_revoked(self, messages: list[Message]) -> list[Message]:
        """A rebalance ran inside the batch's consume call, after some records were taken.

        Records of a partition it revoked and did not give back are dropped: their state is
        gone, their offsets can no longer be stored, and the next owner reads them again
        from the committed offset. A partition given back within the same call starts over
        at the committed offset: where its offsets go back, the records before that point
        are dropped (they come again); with no step back, all its records are kept and
        handled on the state as restored, as a replay would be."""
        revoked = self._revoked_in_poll
        restart: dict[Partition, int] = {}
        seen: dict[Partition, int] = {}
        for index, msg in enumerate(messages):
            if msg.error() is None:
                tp, offset = _coordinates(msg)
                if tp in revoked and tp in seen and offset <= seen[tp]:
                    restart[tp] = index
                seen[tp] = offset
        kept = []
        for index, msg in enumerate(messages):
            if msg.error() is None:
                tp, _ = _coordinates(msg)
                if tp in revoked and (tp not in self._owned or index < restart.get(tp, 0)):
                    continue
            kept.append(msg)
        log.warning(
            "revoked_input_dropped",
            partitions=sorted(f"{t}[{p}]" for t, p in revoked),
            dropped=len(messages) - len(kept),
        )
        return kept

    def _shutdown(self) -> None:
        log.info("worker_draining")
        if self._producer is not None:
            self._producer.flush(30)
        if self._consumer is not None:
            self._commit_sync()
            self._consumer.close()
        if self._probes is not None:
            self._probes.stop()
        log.info("worker_stopped", batches=self._batches, records=self._batched)

    # -- configuration ---------------------------------------------------------------------

    def _common_config(self) -> dict[str, Any]:
        return {
            **self.settings.kafka.librdkafka(),
            "client.id": f"{self.settings.kafka.client_id}-{self.service}",
            "logger": librdkafka_logger(self.service),
            "error_cb": self._on_kafka_error,
        }

    def _consumer_config(self) -> dict[str, Any]:
        return {
            **self._common_config(),
            "group.id": self.settings.group_id,
            "enable.auto.commit": True,
            # Commits only ever carry offsets stored after delivery; committing them every
            # second keeps the redelivery window after a crash short.
            "auto.commit.interval.ms": 1000,
            # Offsets are stored by hand, only after outputs are delivered.
            "enable.auto.offset.store": False,
            "auto.offset.reset": self.settings.auto_offset_reset,
            "statistics.interval.ms": self.settings.stats_interval_ms,
            "stats_cb": self._on_stats,
            **self.settings.consumer_overrides,
        }

    def _producer_config(self) -> dict[str, Any]:
        return {
            **self._common_config(),
            "enable.idempotence": True,
            "acks": "all",
            # The Java client's default partitioner: a call id lands in the same
            # partition whoever produces it, so per-call state sees all of a call's events.
            "partitioner": "murmur2_random",
            # Every path that produces ends by awaiting its deliveries with a flush, and a
            # flush sends at once whatever linger says. A long linger therefore only keeps a
            # batch's outputs from leaving in hundreds of small requests while the handler is
            # still working on the rest of the batch: at 5 ms a 500-event batch left in ~150
            # produce requests, and the broker's CPU follows the request count (text path,
            # 5,000-segment backlog: broker CPU 16.8 s at 5 ms, 4.4-4.9 s at 1,000 ms).
            "linger.ms": 1000,
            "compression.type": "lz4",
            "message.max.bytes": self._message_max_bytes,
            **self.settings.producer_overrides,
        }

    # -- the batch -------------------------------------------------------------------------

    def _process_batch(self, messages: list[Message]) -> None:
        batch = _Batch()
        outs: list[OutRecord] = []
        first: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], int] = {}
        EVENTS_IN_PROGRESS.labels(self.service).set(len(messages))
        self._batch_size.observe(len(messages))
        self._batches += 1
        self._batched += len(messages)
        try:
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consume_error", error=str(err))
                    continue
                tp, offset = _coordinates(msg)
                first.setdefault(tp, offset)
                last[tp] = offset
                outs.extend(self._process_message(msg))
                outs.extend(self._earlier_dead_letters())
        except RetryBatch as exc:
            # nothing of the batch is sent: rewind every partition it holds, not only those
            # handled so far
            log.exception("handler_unavailable")
            for msg in messages:
                if msg.error() is None:
                    tp, offset = _coordinates(msg)
                    first[tp] = min(first.get(tp, offset), offset)
            batch.failures.append(f"handler: {type(exc).__name__}: {exc}")
            outs = []
        for out in _latest_only(outs, self.service):
            self._produce(out, batch)
        self._await_deliveries(batch)
        self._write_state(batch)
        if not batch.failures and self.before_commit is not None:
            try:
                self.before_commit()
            except Exception as exc:  # any sink failure must rewind, never store offsets
                log.exception("before_commit_failed")
                batch.failures.append(f"before_commit: {type(exc).__name__}: {exc}")
        if batch.failures:
            # Nothing of this batch is committed: rewind and do it again (outputs keep their ids).
            BATCH_RETRIES.labels(self.service).inc()
            log.error(
                "batch_delivery_failed",
                failures=batch.failures[:5],
                retry_in_s=self.settings.retry_backoff_s,
            )
            if self.state is not None:
                self.state.rollback()
            for (topic, partition), offset in first.items():
                if (topic, partition) in self._owned:  # a revoked one: its next owner rereads it
                    self._consumer.seek(TopicPartition(topic, partition, offset))
            self._stop.wait(self.settings.retry_backoff_s)
            EVENTS_IN_PROGRESS.labels(self.service).set(0)
            return
        if last:
            if self.offset_floors is not None:
                self._consumed.update({tp: o + 1 for tp, o in last.items()})
            stored = self._floored({tp: o + 1 for tp, o in last.items()})
            if stored:
                self._store_offsets(stored)
        for topic, count in batch.delivered.items():
            EVENTS_PRODUCED.labels(self.service, topic).inc(count)
        EVENTS_IN_PROGRESS.labels(self.service).set(0)
        LAST_PROCESSED.labels(self.service).set_to_current_time()

    def _floored(self, offsets: dict[Partition, int]) -> dict[Partition, int]:
        """The offsets to store: no further than the handler's offset floors."""
        if self.offset_floors is None:
            return offsets
        try:
            floors = self.offset_floors()
        except Exception:  # storing nothing is safe: the next batch stores again
            log.exception("offset_floors_failed")
            return {}
        return {tp: min(o, floors.get(tp, o)) for tp, o in offsets.items()}

    def _tick_due(self) -> bool:
        return time.monotonic() - self._last_tick >= self.tick_interval_s

    def _run_tick(self) -> None:
        """One timer turn: produce what time alone caused, and wait for its delivery."""
        self._last_tick = time.monotonic()
        outs: list[OutRecord] = []
        try:
            if self.tick is not None:
                for index, (parent, emit) in enumerate(self.tick()):
                    outs.append(self._encode(emit, parent.envelope, TICK_INDEX_BASE + index))
            if self.state is not None and self._state_clock_due():
                # a state's clock: its outputs carry their own stable ids
                outs.extend(self._encode(emit, None, 0) for emit in self.state.tick())
        except Exception:  # a timer turn must not stop the service; the loop goes on
            log.exception("tick_failed")
        outs += self._earlier_dead_letters()
        batch = _Batch()
        for out in outs:
            self._produce(out, batch)
        self._await_deliveries(batch)
        self._write_state(batch)
        for topic, count in batch.delivered.items():
            EVENTS_PRODUCED.labels(self.service, topic).inc(count)
        if batch.failures:
            if self.state is not None:
                self.state.rollback()  # the clock runs again at the next tick
            log.error("tick_outputs_failed", failures=batch.failures[:5])
            return
        self._store_lifted_floors()

    def _backlog(self) -> int:
        """Input fetched by the brokers' last word but not read yet, over assigned partitions."""
        assigned = self._consumer.assignment()
        if not assigned:
            return 0
        total = 0
        for tp in self._consumer.position(assigned):
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset < 0 or high < 0:
                # not fetched yet (just assigned): unknown counts as behind
                return self.settings.state_clock_max_backlog + 1
            total += max(0, high - tp.offset)
        return int(total)

    def _state_clock_due(self) -> bool:
        """Whether the state's clock may run: input is read up (or it waited long enough)."""
        try:
            backlog = self._backlog()
        except KafkaException:
            backlog = 0
        if backlog <= self.settings.state_clock_max_backlog:
            self._clock_deferred_since = None
            return True
        now = time.monotonic()
        if self._clock_deferred_since is None:
            self._clock_deferred_since = now
            log.info("state_clock_deferred", backlog=backlog)
        return now - self._clock_deferred_since >= self.settings.state_clock_max_defer_s

    def _write_state(self, batch: _Batch) -> None:
        """After the outputs are acknowledged: write the changed state parts, await them."""
        if self.state is None or batch.failures:
            return
        records = self.state.pending_records()
        if not records:
            self.state.commit()
            return
        written = _Batch()
        for record in records:
            self._produce(record, written)
        self._await_deliveries(written)
        if written.failures:
            batch.failures.extend(written.failures)
            return
        self.state.commit()

    def _store_lifted_floors(self) -> None:
        """Store offsets up to floors a tick may have lifted (no new input needed)."""
        if self.offset_floors is None or not self._consumed:
            return
        stored = self._floored(dict(self._consumed))
        if stored:
            self._store_offsets(stored)

    def _store_offsets(self, offsets: Mapping[Partition, int]) -> None:
        """Store offsets of owned partitions; storing one that is not assigned would fail.

        A failed store loses nothing: the outputs are delivered, the offsets stay where
        they were, and the next store (or the next owner) moves on from there."""
        owned = [TopicPartition(t, p, o) for (t, p), o in offsets.items() if (t, p) in self._owned]
        if not owned:
            return
        try:
            self._consumer.store_offsets(offsets=owned)
        except KafkaException as exc:
            log.warning("store_offsets_failed", error=str(exc))

    def _earlier_dead_letters(self) -> list[OutRecord]:
        """Dead letters for earlier inputs the handler gave up on, with their coordinates."""
        if self.dead_letters is None:
            return []
        try:
            requests = list(self.dead_letters())
        except Exception:
            log.exception("dead_letters_failed")
            return []
        return [
            dead_letter_record(
                service=self.service,
                dead_letter_topic=self.settings.dead_letter_topic,
                rejection=Rejection(r.stage, r.error_class, r.reason),
                topic=r.incoming.topic,
                partition=r.incoming.partition,
                offset=r.incoming.offset,
                key=r.incoming.event.kafka_key().encode(),
                value=None,
                headers=r.incoming.envelope.to_headers(),
                payload_filter=_no_payload,
            )
            for r in requests
        ]

    def _process_message(self, msg: Message) -> list[OutRecord]:
        self._last_turn = time.monotonic()  # progress: each input, not only each batch
        (topic, partition), offset = _coordinates(msg)
        value: bytes | None = msg.value()
        # Kafka headers are a list of (name, bytes) pairs as consumed.
        headers = cast(Headers | None, msg.headers())

        def to_dlq(stage: str, error_class: str, reason: str) -> list[OutRecord]:
            return [
                dead_letter_record(
                    service=self.service,
                    dead_letter_topic=self.settings.dead_letter_topic,
                    rejection=Rejection(stage, error_class, reason),
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    key=msg.key(),
                    value=value,
                    headers=headers,
                    payload_filter=self.dead_letter_payload,
                )
            ]

        limit = self._input_limits.get(topic, self.settings.max_message_bytes)
        admitted = admit(value, headers, self.accepted, limit)
        if isinstance(admitted, Rejection):
            return to_dlq(admitted.stage, admitted.error_class, admitted.reason)
        envelope, event = admitted
        incoming = Incoming(envelope, event, topic, partition, offset)
        started = time.perf_counter()
        try:
            # bind + reset, not bound_contextvars: that one reads every context variable
            # first, twice the cost on every message
            tokens = structlog.contextvars.bind_contextvars(
                call_id=envelope.call_id, event_id=envelope.id
            )
            try:
                emits = list(self.handler(incoming))
            finally:
                structlog.contextvars.reset_contextvars(**tokens)
            outs = [self._encode(emit, envelope, index) for index, emit in enumerate(emits)]
        except RetryBatch:
            raise  # the service's own infrastructure failed, not this input: run it again
        except Exception as exc:
            log.exception("handler_failed", call_id=envelope.call_id, event_id=envelope.id)
            return to_dlq("handle", type(exc).__name__, exception_reason(exc))
        finally:
            self._handler_seconds.observe(time.perf_counter() - started)
        processed = self._processed.get(topic)
        if processed is None:
            processed = self._processed[topic] = EVENTS_CONSUMED.labels(
                self.service, topic, "processed"
            )
        processed.inc()
        return outs

    def _encode(self, emit: Emit, parent: Envelope | None, index: int) -> OutRecord:
        if self.output_topics and emit.topic not in self.output_topics:
            raise ValueError(f"handler emitted to undeclared topic {emit.topic!r}")
        return encode_output(emit, parent, self.service, index)

    def _produce(self, out: OutRecord, batch: _Batch) -> None:
        def delivered(err: KafkaError | None, msg: Message) -> None:
            batch.pending -= 1
            if err is not None:
                DELIVERY_FAILURES.labels(self.service, out.topic).inc()
                batch.failures.append(f"{out.topic}: {err.str()}")
            else:
                batch.delivered[out.topic] = batch.delivered.get(out.topic, 0) + 1

        while True:
            try:
                self._producer.produce(
                    out.topic,
                    value=out.value,
                    key=out.key,
                    headers=out.headers,
                    on_delivery=delivered,
                    **({} if out.partition is None else {"partition": out.partition}),
                )
                batch.pending += 1
                return
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain, then retry
            except KafkaException as exc:  # refused at once (a record over message.max.bytes)
                DELIVERY_FAILURES.labels(self.service, out.topic).inc()
                batch.failures.append(f"{out.topic}: {exc}")
                return

    def _await_deliveries(self, batch: _Batch) -> None:
        while batch.pending > 0:
            self._producer.flush(1.0)
            self._last_turn = time.monotonic()

    # -- callbacks -------------------------------------------------------------------------

    def _commit_sync(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit_failed", error=str(exc))

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if self.state is not None:
            # before any of these partitions' input is handled: their states, as acknowledged
            self.state.restore({p.partition for p in partitions}, self.settings.kafka.librdkafka())
        self._owned.update((p.topic, p.partition) for p in partitions)
        self._assigned_once.set()
        log.info(
            "partitions_assigned", partitions=[f"{p.topic}[{p.partition}]" for p in partitions]
        )

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Batches are finished before the next poll, so what is stored is final: commit it now
        # so the next owner starts exactly after it.
        self._commit_sync()
        gone = {(p.topic, p.partition) for p in partitions}
        self._owned -= gone
        self._revoked_in_poll |= gone
        for p in partitions:
            self._consumed.pop((p.topic, p.partition), None)
        if self.state is not None:
            self.state.drop({p.partition for p in partitions})
        if self.on_revoke is not None:
            try:
                self.on_revoke({(p.topic, p.partition) for p in partitions})
            except Exception:
                log.exception("on_revoke_failed")
        for p in partitions:
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.service, p.topic, str(p.partition))
        log.info("partitions_revoked", partitions=[f"{p.topic}[{p.partition}]" for p in partitions])

    def _on_stats(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        for topic, tstats in stats.get("topics", {}).items():
            for pid, pstats in tstats.get("partitions", {}).items():
                lag = pstats.get("consumer_lag", -1)
                if pid != "-1" and lag >= 0 and pstats.get("fetch_state") == "active":
                    CONSUMER_LAG.labels(self.service, topic, pid).set(lag)

    def _on_kafka_error(self, err: KafkaError) -> None:
        log.warning("kafka_error", error=err.str(), code=err.name(), fatal=err.fatal())
        if err.fatal():
            self.stop()


def serve(worker: Worker) -> None:
    """Run a worker as a service process: probes, signal handlers, then the loop."""
    worker.install_signal_handlers()
    worker.start_probes()
    worker.run()
