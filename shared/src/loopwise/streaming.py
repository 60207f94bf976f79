"""Faust-streaming app factory for the stateful services (per-call joins, holds, timers).

Configured from the same settings as the confluent-kafka worker (brokers,
SASL/TLS, structlog logging, the same `loopwise_` metrics), and with the same
intake: `StreamRuntime.process` admits a raw message exactly as the worker
does, dead-letters what it rejects, calls the handler and sends its outputs
with ids derived from the input's.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import faust
from faust.sensors import Sensor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field

from loopwise.events import TenantEvent
from loopwise.events.envelope import Headers
from loopwise.kafka.deadletter import PayloadFilter, dead_letter_record
from loopwise.kafka.intake import Emit, Incoming, OutRecord, Rejection, admit, encode_output
from loopwise.logging import configure_logging, get_logger, logging_dict_config
from loopwise.metrics import (
    EVENTS_CONSUMED,
    EVENTS_PRODUCED,
    HANDLER_SECONDS,
    LAST_PROCESSED,
    init_service_metrics,
)
from loopwise.settings import KafkaSettings, ServiceSettings
from loopwise.topics import catalogue, wait_for_leaders

log = get_logger(__name__)

AsyncHandler = Callable[[Incoming], Awaitable[Iterable[Emit]]]


class StreamSettings(ServiceSettings):
    """Settings of a Faust app; services subclass with their env prefix."""

    app_id: str = Field(min_length=1, description="Faust app id: consumer group and table prefix")
    dead_letter_topic: str = Field(min_length=1, description="Where rejected input goes")
    store: str = Field(
        default="memory://",
        description="Table store: memory:// (rebuilt from the changelog) or rocksdb://",
    )
    data_dir: str = Field(default="/tmp/loopwise-faust", description="Faust data directory")  # noqa: S108
    topic_partitions: int = Field(
        default_factory=lambda: catalogue().defaults.partitions,
        ge=1,
        description="Partitions of internal topics; must equal the call topics' count",
    )
    topic_replication_factor: int = Field(default=1, ge=1, description="Internal topics' replicas")
    max_message_bytes: int = Field(default=1_048_576, ge=1024, description="Oversize limit")
    health_stall_s: float = Field(
        default=300.0,
        gt=0,
        description="/healthz fails when input waits unread and the group's committed offsets "
        "have not moved for this long (a stalled Faust consumer; the orchestrator restarts it)",
    )
    lag_check_interval_s: float = Field(
        default=15.0, gt=0, description="How often committed offsets are compared with the log end"
    )


class LagWatch:
    """Tells whether a consumer group is stuck: input waits unread and its offsets do not move.

    faust-streaming can report itself ready after a rebalance and then fetch
    nothing; the event loop keeps turning, so only the group's offsets show it.
    This reads them with a separate librdkafka client that never joins the group.
    """

    def __init__(
        self, kafka: KafkaSettings, group_id: str, topics: Iterable[str], stall_s: float
    ) -> None:
        self.kafka = kafka
        self.group_id = group_id
        self.topics = sorted(set(topics))
        self.stall_s = stall_s
        self._consumer: Any = None
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._progress_at = time.monotonic()
        self.behind = 0

    def check(self) -> None:
        """Compare committed offsets with the log end once (blocking; run it off the loop)."""
        from confluent_kafka import Consumer, TopicPartition

        if self._consumer is None:
            self._consumer = Consumer(
                {
                    **self.kafka.librdkafka(),
                    "group.id": self.group_id,
                    "enable.auto.commit": False,
                }
            )
        metadata = self._consumer.list_topics(timeout=10)
        tps = [
            TopicPartition(name, p)
            for name in self.topics
            if name in metadata.topics
            for p in metadata.topics[name].partitions
        ]
        committed = self._consumer.committed(tps, timeout=10) if tps else []
        behind = 0
        for tp in committed:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=10
            )
            position = tp.offset if tp.offset >= 0 else low
            behind += max(0, high - position)
        signature = tuple(sorted((tp.topic, tp.partition, tp.offset) for tp in committed))
        if behind == 0 or signature != self._signature:
            self._progress_at = time.monotonic()
        self._signature = signature
        self.behind = behind

    def stalled(self) -> bool:
        """True when input has waited with no committed progress for longer than `stall_s`."""
        return self.behind > 0 and time.monotonic() - self._progress_at > self.stall_s

    def close(self) -> None:
        """Close the offsets client."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def faust_credentials(kafka: KafkaSettings) -> Any:
    """Translate the shared Kafka settings into Faust/aiokafka credentials (or None)."""
    context: ssl.SSLContext | None = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(kafka.ssl_ca_location) if kafka.ssl_ca_location else None
        )
        if kafka.ssl_certificate_location:
            context.load_cert_chain(
                str(kafka.ssl_certificate_location),
                str(kafka.ssl_key_location) if kafka.ssl_key_location else None,
                kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
            )
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class LoopwiseSensor(Sensor):  # type: ignore[misc]
    """Feeds Faust's stream and producer events into the shared `loopwise_` metrics."""

    def __init__(self, service: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> dict[str, float]:
        return {"started": time.perf_counter()}

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: dict[str, float] | None = None
    ) -> None:
        if state is not None:
            HANDLER_SECONDS.labels(self.service).observe(time.perf_counter() - state["started"])
        LAST_PROCESSED.labels(self.service).set_to_current_time()

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        EVENTS_PRODUCED.labels(self.service, metadata.topic).inc()


def create_app(service: str, settings: StreamSettings, **overrides: Any) -> faust.App:
    """A Faust app wired to Loopwise settings, logging, metrics and probes."""
    obs = settings.observability
    configure_logging(service, log_format=obs.log_format, level=obs.log_level)
    brokers = [f"kafka://{b.strip()}" for b in settings.kafka.bootstrap_servers.split(",")]
    options: dict[str, Any] = {
        "broker": brokers,
        "broker_credentials": faust_credentials(settings.kafka),
        "store": settings.store,
        "datadir": settings.data_dir,
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.topic_replication_factor,
        "web_host": obs.host,
        "web_bind": obs.host,
        "web_port": obs.port,
        "logging_config": logging_dict_config(obs.log_format, obs.log_level),
        "producer_acks": -1,
        "processing_guarantee": "at_least_once",
        **overrides,
    }
    app = faust.App(settings.app_id, **options)
    app.monitor  # noqa: B018 - create the default monitor before adding our sensor
    app.sensors.add(LoopwiseSensor(service))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type; the exposition format's default is UTF-8.
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    health_checks: list[Callable[[], str | None]] = []
    app.loopwise_health_checks = health_checks  # type: ignore[attr-defined]  # StreamRuntime adds to it

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        # Served by the app's own event loop: answering proves it turns; the checks prove more.
        problems = [p for p in (check() for check in health_checks) if p]
        if problems:
            return web.text("; ".join(problems) + "\n", status=503)
        return web.text("ok\n")

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = not app.rebalancing and app.consumer is not None and bool(app.consumer.assignment())
        return web.text("ok\n" if ready else "not ok\n", status=200 if ready else 503)

    return app


def ensure_internal_topics(
    app: faust.App,
    settings: StreamSettings,
    extra: Mapping[str, tuple[int, Mapping[str, str]]] | None = None,
    timeout_s: float = 90.0,
) -> list[str]:
    """Create the app's changelog and assignor topics (and `extra`) and wait for their leaders.

    Faust creates them itself, but its first rebalance can run before a topic it just
    created appears in the cluster metadata; it then ignores that changelog and every
    table access fails with PartitionsMismatch until a restart. Creating them before
    the worker starts closes that race. Returns the topics that were created.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    compact = {"cleanup.policy": "compact"}
    wanted: dict[str, tuple[int, Mapping[str, str]]] = {
        f"{settings.app_id}-__assignor-__leader": (1, {}),
    }
    for table in app.tables.values():
        partitions = table.partitions or settings.topic_partitions
        wanted[table.changelog_topic.get_topic_name()] = (partitions, compact)
    wanted.update(extra or {})
    admin = AdminClient(settings.kafka.librdkafka())
    existing = admin.list_topics(timeout=30).topics
    new = [
        NewTopic(
            name,
            num_partitions=n,
            replication_factor=settings.topic_replication_factor,
            config=dict(config),
        )
        for name, (n, config) in wanted.items()
        if name not in existing
    ]
    created = []
    if new:
        for name, future in admin.create_topics(new, operation_timeout=30).items():
            try:
                future.result(timeout=timeout_s)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    wait_for_leaders(admin, wanted, timeout_s)
    if created:
        log.info("internal_topics_created", topics=created)
    return created


class StreamRuntime:
    """Admits raw messages, dead-letters rejects, runs the handler and delivers its outputs."""

    def __init__(
        self,
        app: faust.App,
        *,
        service: str,
        settings: StreamSettings,
        input_topics: Iterable[str],
        output_topics: Iterable[str],
        accepted: Mapping[str, type[TenantEvent]],
        dead_letter_payload: PayloadFilter | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.settings = settings
        self.accepted = dict(accepted)
        self.dead_letter_payload = dead_letter_payload
        self.output_topics = frozenset(output_topics)
        self._topics: dict[str, Any] = {}
        topics_in = list(input_topics)
        init_service_metrics(service, topics_in, [*self.output_topics, settings.dead_letter_topic])
        self.lag_watch = LagWatch(
            settings.kafka, settings.app_id, topics_in, settings.health_stall_s
        )
        checks = getattr(app, "loopwise_health_checks", None)
        if checks is not None:
            checks.append(self._stall_problem)

        @app.timer(interval=settings.lag_check_interval_s)  # type: ignore[untyped-decorator]
        async def watch_lag() -> None:
            try:
                await asyncio.to_thread(self.lag_watch.check)
            except Exception as exc:  # noqa: BLE001 - a failed probe must not stop the app
                log.warning("lag_check_failed", error=str(exc))

    def _stall_problem(self) -> str | None:
        if self.lag_watch.stalled():
            return f"stalled: {self.lag_watch.behind} input message(s) waiting, offsets not moving"
        return None

    def raw_topic(self, name: str, **kwargs: Any) -> Any:
        """A Faust topic of raw bytes (the runtime does its own decoding)."""
        if name not in self._topics:
            self._topics[name] = self.app.topic(
                name,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                **kwargs,
            )
        return self._topics[name]

    async def process(self, event: Any, handler: AsyncHandler) -> None:
        """Handle one Faust event (value must be raw bytes) with the shared intake rules."""
        message = event.message
        raw_headers = event.headers or []
        headers: Headers = list(
            raw_headers.items() if isinstance(raw_headers, Mapping) else raw_headers
        )
        admitted = admit(event.value, headers, self.accepted, self.settings.max_message_bytes)
        if isinstance(admitted, Rejection):
            await self._send(self._reject(admitted, message, event.value, headers))
            return
        envelope, decoded = admitted
        incoming = Incoming(envelope, decoded, message.topic, message.partition, message.offset)
        try:
            emits = list(await handler(incoming))
            outs = []
            for index, emit in enumerate(emits):
                if self.output_topics and emit.topic not in self.output_topics:
                    raise ValueError(f"handler emitted to undeclared topic {emit.topic!r}")
                outs.append(encode_output(emit, envelope, self.service, index))
        except Exception as exc:
            log.exception("handler_failed", call_id=envelope.call_id, event_id=envelope.id)
            reason = str(exc)[:500] or type(exc).__name__
            rejection = Rejection("handle", type(exc).__name__, reason)
            await self._send(self._reject(rejection, message, event.value, headers))
            return
        EVENTS_CONSUMED.labels(self.service, message.topic, "processed").inc()
        await self._send(*outs)

    def _reject(
        self, rejection: Rejection, message: Any, value: bytes | None, headers: Headers
    ) -> OutRecord:
        return dead_letter_record(
            service=self.service,
            dead_letter_topic=self.settings.dead_letter_topic,
            rejection=rejection,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=value,
            headers=headers,
            payload_filter=self.dead_letter_payload,
        )

    async def _send(self, *outs: OutRecord) -> None:
        # Queue every output first, then wait for all acks together: the input is acknowledged
        # only after its outputs exist, without one broker round trip per output.
        pending = []
        for out in outs:
            topic = self.raw_topic(out.topic)
            pending.append(await topic.send(key=out.key, value=out.value, headers=out.headers))
        if pending:
            await asyncio.gather(*pending)
