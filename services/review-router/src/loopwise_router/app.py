"""The wiring: the shared Worker runs the router over its five inputs with per-call state.

Each call's state (the join, holds, tasks and their deadlines) is kept by the shared
`StateStore` and written to the changelog `<group_id>-state-changelog` as parts (a
header, one part per segment and per task), after the outputs it caused are
acknowledged and before the input offsets are stored. Deadlines are part of the state:
the store's clock runs `Router.tick` on every call whose `wake_at` has come, so they
survive a restart or a rebalance with it. See docs/benchmarks.md for why the router
moved from faust-streaming to this runtime.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

from loopwise.events import (
    CallComplianceV1,
    CallEndedV1,
    CallMetadataV1,
    CallSentimentV1,
    CallStartedV1,
    Envelope,
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
)
from loopwise.kafka import Worker
from loopwise.kafka.intake import DeadLetterRequest, Emit, Incoming
from loopwise.kafka.state import StateStore, changelog_topic_name, ensure_changelog
from loopwise.kafka.worker import serve
from loopwise.logging import configure_logging, get_logger
from loopwise_router import state as call_state
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
    "Items routed again after their release by a late input, by the stronger outcome",
    ["outcome"],
)
MISSING = Counter(
    "loopwise_router_missing_inputs_total",
    "Routing decisions taken while an input was missing, by scope and input",
    ["scope", "input"],
)
OPEN_CALLS = Gauge("loopwise_router_open_calls", "Calls held in this worker's state")
OPEN_TASKS = Gauge("loopwise_router_open_review_tasks", "Open review tasks in this worker's state")
for _scope in ("segment", "call"):
    for _outcome in ("auto", "sample", "hold"):
        ROUTED.labels(_scope, _outcome)
    for _input in ("sentiment", "compliance"):
        MISSING.labels(_scope, _input)
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
            for gap in event.missing_inputs:
                if gap != "transcript":
                    MISSING.labels(event.scope, gap).inc()
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
class RouterState:
    """The router as a stateful handler of the shared `StateStore`: one state per call."""

    router: Router

    def key_of(self, incoming: Incoming) -> str:
        return incoming.envelope.call_id or str(getattr(incoming.event, "call_id", ""))

    def handle(
        self, state: CallState | None, incoming: Incoming, now: float
    ) -> tuple[CallState | None, list[Emit]]:
        new, emits = self.router.handle(
            state,
            incoming.event,
            incoming.envelope.id,
            now,
            partition=incoming.partition,
            origin=(incoming.topic, incoming.partition, incoming.offset),
        )
        count(emits)
        return new, emits

    def tick(self, state: CallState, now: float) -> tuple[CallState | None, list[Emit]]:
        if self.router.expired(state, now):
            return None, []  # kept long enough after it closed: forget it (tombstones)
        emits = self.router.tick(state, now)
        count(emits)
        if self.router.empty(state):
            return None, emits  # made only to park a decision, given up on since
        return state, emits

    def take_dead_letters(self) -> list[DeadLetterRequest]:
        """Parked decisions whose task never came, as dead letters of their own input."""
        requests = []
        for given in self.router.take_given_up():
            parked = given.parked
            if parked.topic is None or parked.partition is None or parked.offset is None:
                log.warning("parked_decision_dropped", call_id=given.call_id, reason=given.reason)
                continue
            event = ReviewDecisionV1.model_validate_json(parked.decision)
            envelope = Envelope(
                type=ReviewDecisionV1.event_type,
                source="unknown",
                id=parked.event_id,
                tenant_id=given.tenant_id,
                call_id=given.call_id,
            )
            incoming = Incoming(envelope, event, parked.topic, parked.partition, parked.offset)
            requests.append(DeadLetterRequest(incoming, "DecisionRejected", given.reason))
        return requests

    def wake_at(self, state: CallState) -> float | None:
        if state.closed_at is not None:
            expiry = state.closed_at + self.router.join.retain_closed_s
            return min(state.wake_at, expiry) if state.wake_at is not None else expiry
        return state.wake_at

    def dirty_parts(self, state: CallState) -> dict[str, bytes | None]:
        return call_state.dirty_parts(state)

    def mark_clean(self, state: CallState) -> None:
        call_state.mark_clean(state)

    def load(self, key: str, parts: Mapping[str, bytes]) -> CallState:
        return call_state.load_parts(parts)


@dataclass
class RouterService:
    """The worker and what it is built from."""

    worker: Worker
    settings: RouterSettings
    policy: PolicyHolder
    router: Router
    store: StateStore[CallState]


def build_router(settings: RouterSettings, policy: PolicyHolder) -> Router:
    """The pure router with the settings' join windows."""
    outputs = OutputTopics(settings.routing_topic, settings.tasks_topic, settings.outcomes_topic)
    return Router(
        policy,
        outputs,
        JoinSettings(
            segment_window_s=settings.segment_window_s,
            call_window_s=settings.call_window_s,
            call_grace_s=min(settings.call_grace_s, settings.call_window_s),
            needs_sentiment=settings.needs_sentiment,
            needs_compliance=settings.needs_compliance,
            retain_closed_s=settings.retain_closed_s,
            decision_park_s=settings.decision_park_s,
        ),
    )


def build_service(settings: RouterSettings) -> RouterService:
    """Build the router; a broken policy file raises ConfigFileError before anything starts."""
    holder = PolicyHolder(settings.policy_path)
    router = build_router(settings, holder)
    handler = RouterState(router)
    store: StateStore[CallState] = StateStore(handler, changelog_topic_name(settings.group_id))
    timeouts = {
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.heartbeat_interval_s * 1000),
    }
    worker_settings = settings.model_copy(
        update={"consumer_overrides": {**timeouts, **settings.consumer_overrides}}
    )
    last_reload = [time.monotonic()]

    def clock() -> Iterable[Any]:
        # the policy file is checked on the worker's timer too: no thread touches it
        if time.monotonic() - last_reload[0] >= settings.reload_interval_s:
            last_reload[0] = time.monotonic()
            holder.reload()
        states = store.states()
        OPEN_CALLS.set(len(states))
        OPEN_TASKS.set(sum(1 for c in states for t in c.tasks.values() if t.status == "open"))
        return ()

    worker = Worker(
        service=SERVICE,
        settings=worker_settings,
        handler=store.handle,
        output_topics=[router.topics.routing, router.topics.tasks, router.topics.outcomes],
        accepted=ACCEPTED,
        tick=clock,
        tick_interval_s=settings.tick_interval_s,
        state=store,
        dead_letters=handler.take_dead_letters,
    )
    return RouterService(worker, settings, holder, router, store)


def run(settings: RouterSettings) -> None:
    """Run the router until SIGTERM or SIGINT; SIGHUP reloads the policy."""
    obs = settings.observability
    configure_logging(SERVICE, log_format=obs.log_format, level=obs.log_level)
    service = build_service(settings)
    log.info(
        "router_starting",
        policy=str(settings.policy_path),
        policy_version=service.policy.current.version,
    )
    ensure_changelog(
        settings.kafka.librdkafka(),
        service.store.changelog_topic,
        settings.input_topics,
        replication_factor=settings.replication_factor,
    )
    signal.signal(signal.SIGHUP, lambda *_: service.policy.reload(force=True))
    serve(service.worker)
