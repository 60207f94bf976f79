"""The streaming service: the shared Worker with each call's rule state in the `StateStore`.

Both input topics are keyed by call id and co-partitioned, so every event of a call
reaches the same worker and the same changelog partition. A call's state goes to the
changelog `<group_id>-state-changelog` as parts: a header (the rule state without the
ids it has seen) and one small part per event id, segment id and late event id it
remembers, each written once; so the bytes per event stay flat as calls get longer.
After a crash or restart the states of the assigned partitions are rebuilt from the
changelog before their input is read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from loopwise.events import (
    CallComplianceV1,
    CallEndedV1,
    CallEvent,
    CallMetadataV1,
    CallStartedV1,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise.kafka import Worker
from loopwise.kafka.intake import Emit, Incoming
from loopwise.kafka.state import StateStore, changelog_topic_name, ensure_changelog
from loopwise.kafka.worker import serve
from loopwise.logging import configure_logging, get_logger
from loopwise_compliance import metrics
from loopwise_compliance.config import SERVICE, ComplianceSettings
from loopwise_compliance.engine import CallState
from loopwise_compliance.handler import MAX_SEEN_IDS, ComplianceScorer
from loopwise_compliance.rules import PackIndex

log = get_logger(__name__)

ACCEPTED: dict[str, type[TenantEvent]] = {
    model.event_type: model
    for model in (TranscriptSegmentV1, CallStartedV1, CallEndedV1, CallMetadataV1)
}
_LISTS = {"e/": "seen_event_ids", "g/": "seen_segment_ids", "l/": "late_event_ids"}
_HEADER = ""


def _unwritten(state: CallState, written: set[str]) -> list[tuple[str, int, str]]:
    """(prefix, position, item) of the remembered ids not written yet, oldest first.

    The lists only grow at the end (their oldest ids may be dropped at the front), and a
    write records every id they hold, so the ids not written yet are a suffix of each list:
    the walk stops at the first written one, and a batch costs the same however long the
    call already is.
    """
    found: list[tuple[str, int, str]] = []
    for prefix, name in _LISTS.items():
        items: list[str] = getattr(state, name)
        index = len(items) - 1
        while index >= 0 and prefix + items[index] not in written:
            index -= 1
        found.extend((prefix, i, items[i]) for i in range(index + 1, len(items)))
    return found


def dirty_parts(state: CallState) -> dict[str, bytes | None]:
    """The header, and one part per remembered id not written yet (value: when it was)."""
    parts: dict[str, bytes | None] = {
        _HEADER: state.model_dump_json(exclude=set(_LISTS.values())).encode("utf-8")
    }
    stamp = str(time.time_ns()).encode()
    for prefix, index, item in _unwritten(state, state._written):
        # keeps the order within a write: stamp, then position
        parts[prefix + item] = stamp + b"." + str(index).zfill(6).encode()
    return parts


def mark_clean(state: CallState) -> None:
    """Every part of the state was written."""
    written = state._written
    written.update(prefix + item for prefix, _, item in _unwritten(state, written))


def load_parts(parts: Mapping[str, bytes]) -> CallState:
    """A call state rebuilt from its parts (ids in the order they were remembered)."""
    if _HEADER not in parts:
        raise ValueError("call state has no header part")
    data = json.loads(parts[_HEADER])
    for prefix, name in _LISTS.items():
        found = [
            (raw, part[len(prefix) :]) for part, raw in parts.items() if part.startswith(prefix)
        ]
        data[name] = [item for _, item in sorted(found)]
    state = CallState.model_validate(data)
    del state.seen_event_ids[:-MAX_SEEN_IDS]
    return state


@dataclass
class ComplianceState:
    """The compliance scorer as a stateful handler of the shared `StateStore`."""

    scorer: ComplianceScorer
    output_topic: str

    def key_of(self, incoming: Incoming) -> str:
        return incoming.envelope.call_id or str(getattr(incoming.event, "call_id", ""))

    def handle(
        self, state: CallState | None, incoming: Incoming, now: float
    ) -> tuple[CallState | None, list[Emit]]:
        event = incoming.event
        if not isinstance(event, CallEvent):
            raise TypeError(f"{type(event).__name__} is not a call event")
        outcome = self.scorer.handle(state, event, incoming.envelope.id)
        if outcome.redelivered:
            metrics.REDELIVERED.inc()
        if outcome.revised:
            metrics.REVISIONS.inc()
        metrics.count_outputs(outcome.outputs)
        # a call's result revisions replace one another: a batch sends only its last
        emits = [
            Emit(
                self.output_topic,
                out,
                supersedes=f"call-result/{out.tenant_id}/{out.call_id}"
                if isinstance(out, CallComplianceV1)
                else None,
            )
            for out in outcome.outputs
        ]
        return (outcome.state if outcome.state is not None else state), emits

    def tick(self, state: CallState, now: float) -> tuple[CallState | None, list[Emit]]:
        return state, []

    def wake_at(self, state: CallState) -> float | None:
        return None

    def dirty_parts(self, state: CallState) -> dict[str, bytes | None]:
        return dirty_parts(state)

    def mark_clean(self, state: CallState) -> None:
        mark_clean(state)

    def load(self, key: str, parts: Mapping[str, bytes]) -> CallState:
        return load_parts(parts)


def build_worker(
    settings: ComplianceSettings, packs: PackIndex
) -> tuple[Worker, StateStore[CallState]]:
    """The service's worker and its state store, ready to run."""
    scorer = ComplianceScorer(packs)
    metrics.init_metrics(packs)
    store: StateStore[CallState] = StateStore(
        ComplianceState(scorer, settings.output_topic), changelog_topic_name(settings.group_id)
    )
    timeouts = {
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.session_timeout_s * 1000 / 6),
    }
    worker_settings = settings.model_copy(
        update={"consumer_overrides": {**timeouts, **settings.consumer_overrides}}
    )
    worker = Worker(
        service=SERVICE,
        settings=worker_settings,
        handler=store.handle,
        output_topics=[settings.output_topic],
        accepted=ACCEPTED,
        state=store,
    )
    return worker, store


def run(settings: ComplianceSettings, packs: PackIndex) -> None:
    """Run the service until SIGTERM/SIGINT."""
    obs = settings.observability
    configure_logging(SERVICE, log_format=obs.log_format, level=obs.log_level)
    worker, store = build_worker(settings, packs)
    log.info(
        "rule_packs_loaded",
        packs=[f"{p.name}@{p.version_label}" for p in packs.packs()],
        tenants=sorted(packs.tenants),
    )
    ensure_changelog(
        settings.kafka.librdkafka(),
        store.changelog_topic,
        settings.input_topics,
        replication_factor=settings.replication_factor,
    )
    serve(worker)
