"""The Faust wiring: per-call state in a changelogged table, input and tick agents, timers.

Timers cannot write tables (Faust needs an event to know the changelog
partition), so deadlines work like this: a timer scans the table for calls
whose `wake_at` has passed and sends a tick, keyed by call id, to an internal
topic on the same partition as the call's state; the tick agent then advances
the call's clock. Deadlines therefore live only in table state and survive a
restart or a rebalance with it.

Outputs are sent and acknowledged before the state is stored: a crash in
between repeats outputs with the same ids (consumers drop them by id), it
never loses one.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import faust
from prometheus_client import Counter, Gauge

from loopwise.events import (
    CallComplianceV1,
    CallEndedV1,
    CallMetadataV1,
    CallSentimentV1,
    CallStartedV1,
    ReleasedOutcomeV1,
    ReviewDecisionV1,
    ReviewTaskCreatedV1,
    ReviewTaskEscalatedV1,
    ReviewTaskExpiredV1,
    RoutingDecisionV1,
    SegmentComplianceV1,
    SegmentSentimentV1,
    TenantEvent,
    TranscriptSegmentV1,
    encode,
)
from loopwise.kafka.intake import Emit, Incoming
from loopwise.logging import get_logger
from loopwise.streaming import StreamRuntime, create_app, ensure_internal_topics
from loopwise_router.config import RouterSettings
from loopwise_router.handler import JoinSettings, OutputTopics, Router
from loopwise_router.reload import PolicyHolder
from loopwise_router.state import CallState

SERVICE = "review-router"
log = get_logger(__name__)

ACCEPTED: dict[str, type[TenantEvent]] = {
    m.event_type: m
    for m in (
        CallStartedV1,
        CallEndedV1,
        CallMetadataV1,
        TranscriptSegmentV1,
        SegmentSentimentV1,
        CallSentimentV1,
        SegmentComplianceV1,
        CallComplianceV1,
        ReviewDecisionV1,
    )
}

ROUTED = Counter(
    "loopwise_router_routing_decisions_total",
    "Routing decisions by scope and outcome",
    ["scope", "outcome"],
)
TASK_EVENTS = Counter(
    "loopwise_router_review_task_events_total", "Review task events by kind", ["event"]
)
RELEASED = Counter(
    "loopwise_router_outcomes_released_total", "Released outcomes by release kind", ["release"]
)
REDECIDED = Counter(
    "loopwise_router_redecisions_total",
    "Calls routed again after their release by a late input, by the stronger outcome",
    ["outcome"],
)
OPEN_CALLS = Gauge("loopwise_router_open_calls", "Calls held in this worker's state")
OPEN_TASKS = Gauge("loopwise_router_open_review_tasks", "Open review tasks in this worker's state")
for _scope in ("segment", "call"):
    for _outcome in ("auto", "sample", "hold"):
        ROUTED.labels(_scope, _outcome)
for _late in ("sample", "hold"):
    REDECIDED.labels(_late)
for _event in ("created", "escalated", "expired"):
    TASK_EVENTS.labels(_event)
for _release in ("auto", "sampled", "reviewed", "expired"):
    RELEASED.labels(_release)


def count(emits: Iterable[Emit]) -> None:
    """Count outputs for the service's metrics."""
    for emit in emits:
        event = emit.event
        if isinstance(event, RoutingDecisionV1):
            ROUTED.labels(event.scope, event.outcome).inc()
            if event.redecision_of is not None:
                REDECIDED.labels(event.outcome).inc()
        elif isinstance(event, ReviewTaskCreatedV1):
            TASK_EVENTS.labels("created").inc()
        elif isinstance(event, ReviewTaskEscalatedV1):
            TASK_EVENTS.labels("escalated").inc()
        elif isinstance(event, ReviewTaskExpiredV1):
            TASK_EVENTS.labels("expired").inc()
        elif isinstance(event, ReleasedOutcomeV1):
            RELEASED.labels(event.release).inc()


@dataclass
class RouterApp:
    """The Faust app and what it is built from."""

    app: faust.App
    settings: RouterSettings
    policy: PolicyHolder
    router: Router
    runtime: StreamRuntime
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def build_app(settings: RouterSettings) -> RouterApp:
    """Build the router app; a broken policy file raises ConfigFileError before anything starts."""
    holder = PolicyHolder(settings.policy_path)
    app = create_app(
        SERVICE,
        settings,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
    )
    outputs = OutputTopics(settings.routing_topic, settings.tasks_topic, settings.outcomes_topic)
    router = Router(
        holder,
        outputs,
        JoinSettings(
            segment_window_s=settings.segment_window_s,
            call_window_s=settings.call_window_s,
            call_grace_s=min(settings.call_grace_s, settings.call_window_s),
            needs_sentiment=settings.needs_sentiment,
            needs_compliance=settings.needs_compliance,
            retain_closed_s=settings.retain_closed_s,
        ),
    )
    inputs = [
        settings.calls_topic,
        settings.transcripts_topic,
        settings.sentiment_topic,
        settings.compliance_topic,
        settings.decisions_topic,
    ]
    runtime = StreamRuntime(
        app,
        service=SERVICE,
        settings=settings,
        input_topics=inputs,
        output_topics=[outputs.routing, outputs.tasks, outputs.outcomes],
        accepted=ACCEPTED,
    )
    built = RouterApp(app, settings, holder, router, runtime)
    calls = app.Table(
        "router-calls",
        default=None,
        partitions=settings.topic_partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        help="Per-call router state: the join, holds, review tasks and their deadlines",
    )
    source = app.topic(
        *inputs, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    ticks = app.topic(
        f"{settings.app_id}-router-ticks",
        internal=True,
        partitions=settings.topic_partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        retention=3600.0,
    )
    ticked: dict[str, tuple[float, float]] = {}

    def load(call_id: str) -> CallState | None:
        raw = calls.get(call_id)
        return CallState.model_validate(raw) if raw is not None else None

    kept: dict[str, CallState] = {}

    async def handle(incoming: Incoming) -> list[Emit]:
        call_id = incoming.envelope.call_id or str(getattr(incoming.event, "call_id", ""))
        state, emits = router.handle(
            load(call_id),
            incoming.event,
            incoming.envelope.id,
            time.time(),
            partition=incoming.partition,
        )
        kept["state"] = state
        count(emits)
        return emits

    @app.agent(source)
    async def route(stream: Any) -> None:
        async for event in stream.events():
            async with built.lock:
                kept.clear()
                await runtime.process(event, handle)  # sends and awaits the outputs
                state = kept.get("state")
                if state is not None:
                    calls[state.call_id] = state.model_dump(mode="json")

    @app.agent(ticks)
    async def advance(stream: Any) -> None:
        async for event in stream.events():
            call_id = (event.key or b"").decode("utf-8", errors="replace")
            async with built.lock:
                state = load(call_id)
                if state is None:
                    continue
                now = time.time()
                if router.expired(state, now):
                    del calls[call_id]
                    continue
                if state.wake_at is None or state.wake_at > now:
                    continue
                try:
                    emits = router.tick(state, now)
                except Exception:  # one call's bug must not stop every call's clock (logged)
                    log.exception("tick_failed", call_id=call_id)
                    continue
                await send(emits)
                count(emits)
                calls[call_id] = state.model_dump(mode="json")

    async def send(emits: list[Emit]) -> None:
        for emit in emits:
            key, value, headers, _ = encode(emit.event, source=SERVICE, event_id=emit.event_id)
            topic = runtime.raw_topic(emit.topic)
            fut = await topic.send(key=key, value=value, headers=headers)
            await fut

    @app.timer(settings.tick_interval_s)  # type: ignore[untyped-decorator,misc]
    async def scan_deadlines() -> None:
        now = time.time()
        open_calls = open_tasks = 0
        for call_id, raw in list(calls.items()):
            if raw is None:
                continue
            open_calls += 1
            open_tasks += sum(1 for t in raw.get("tasks", {}).values() if t["status"] == "open")
            wake = raw.get("wake_at")
            closed = raw.get("closed_at")
            due = (wake is not None and wake <= now) or (
                closed is not None and now >= closed + settings.retain_closed_s
            )
            if not due:
                continue
            last = ticked.get(call_id)
            if last is not None and last[0] == wake and now - last[1] < 5.0:
                continue  # a tick for this deadline is on its way
            ticked[call_id] = (wake, now)
            await ticks.send(
                key=call_id.encode(),
                value=json.dumps({"call_id": call_id}).encode(),
                partition=raw.get("partition"),
            )
        OPEN_CALLS.set(open_calls)
        OPEN_TASKS.set(open_tasks)
        for call_id in [c for c, (_, at) in ticked.items() if now - at > 60.0]:
            ticked.pop(call_id, None)

    @app.timer(settings.reload_interval_s)  # type: ignore[untyped-decorator,misc]
    async def watch_policy() -> None:
        holder.reload()

    @app.task  # type: ignore[untyped-decorator,misc]
    async def on_sighup() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: holder.reload(force=True))

    return built


def run(settings: RouterSettings) -> None:
    """Run the router until SIGTERM or SIGINT."""
    from faust.worker import Worker

    built = build_app(settings)
    log.info(
        "router_starting",
        policy=str(settings.policy_path),
        policy_version=built.policy.current.version,
    )
    ensure_internal_topics(
        built.app,
        settings,
        {
            f"{settings.app_id}-router-ticks": (
                settings.topic_partitions,
                {"retention.ms": "3600000"},
            )
        },
    )
    worker = Worker(
        built.app,
        loglevel=settings.observability.log_level.lower(),
        logging_config=dict(built.app.conf.logging_config or {}),
    )
    worker.execute_from_commandline()
