"""The compliance handler: call and transcript events in, compliance events out (no Kafka here).

`ComplianceScorer.handle` is a pure function of (call state, event, event id):
it returns the new state and the events to publish. It is idempotent by event
id and by segment id: a redelivered segment gets the same findings again (same
ids downstream) but is not counted twice, and a redelivered CallEnded gets the
stored call result back. A segment that arrives after CallEnded (calls and
transcripts are separate topics, and the transcriber flushes its last segments
when the call ends) is added to the call and yields a revised call result
(`revision` 1, 2, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loopwise.events import (
    CallComplianceV1,
    CallEndedV1,
    CallMetadataV1,
    CallStartedV1,
    ModelRef,
    SegmentComplianceV1,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise.logging import get_logger
from loopwise_compliance.engine import (
    CallState,
    CompiledPack,
    Segment,
    check_segment,
    decide_call,
    observe_segment,
)
from loopwise_compliance.matching import normalise
from loopwise_compliance.rules import PackIndex, RulePack

log = get_logger(__name__)

MAX_SEEN_IDS = 5_000
"""Event ids remembered per call; a call with more events than this is not expected."""


class UnsupportedEvent(TypeError):
    """The handler was given an event type it does not process."""


@dataclass(frozen=True)
class Outcome:
    """What handling one event produced: the call's new state (None: unchanged) and outputs."""

    state: CallState | None
    outputs: list[TenantEvent]
    redelivered: bool = False
    revised: bool = False


def segment_of(event: TranscriptSegmentV1) -> Segment:
    """The rule engine's view of a transcript segment event."""
    return Segment(
        segment_id=event.segment_id,
        speaker=event.speaker,
        start_s=event.start_s,
        end_s=event.end_s,
        text=event.text,
        redactions=tuple(event.redactions),
        words=tuple(event.words),
    )


class ComplianceScorer:
    """Applies each tenant's rule pack to call and transcript events."""

    def __init__(self, packs: PackIndex) -> None:
        self.packs = packs
        self._compiled: dict[str, CompiledPack] = {}

    def compiled(self, tenant_id: str | None) -> CompiledPack:
        """The compiled pack of a tenant."""
        pack = self.packs.for_tenant(tenant_id)
        if pack.content_hash not in self._compiled:
            self._compiled[pack.content_hash] = CompiledPack.compile(pack)
        return self._compiled[pack.content_hash]

    @staticmethod
    def producer(pack: RulePack) -> ModelRef:
        """The `producer` of events made with a pack."""
        return ModelRef(name=pack.name, version=pack.version)

    def handle(self, state: CallState | None, event: TenantEvent, event_id: str) -> Outcome:
        """Apply the rules to one event of a call."""
        if isinstance(event, TranscriptSegmentV1):
            return self._segment(state, event, event_id)
        if isinstance(event, CallStartedV1):
            return self._started(state, event, event_id)
        if isinstance(event, CallEndedV1):
            return self._ended(state, event, event_id)
        if isinstance(event, CallMetadataV1):
            return Outcome(None, [])  # no rule reads call metadata yet
        raise UnsupportedEvent(f"compliance-scoring does not handle {type(event).__name__}")

    @staticmethod
    def _fresh(state: CallState | None, event: TenantEvent, call_id: str) -> CallState:
        """A copy of the state to change, leaving the stored one as it was.

        Only the containers the handler changes in place are copied: hits and findings are
        frozen or replaced whole, never changed in place. (A deep copy cost more than the
        rules themselves: a call's ids and hits, item by item, for every segment.)
        """
        if state is None:
            return CallState(tenant_id=event.tenant_id, call_id=call_id)
        new = state.model_copy(
            update={
                "seen_event_ids": list(state.seen_event_ids),
                "seen_segment_ids": list(state.seen_segment_ids),
                "late_event_ids": list(state.late_event_ids),
                "first_speech_s": dict(state.first_speech_s),
                "hits": dict(state.hits),
            }
        )
        new._written = set(state._written)
        return new

    @staticmethod
    def _remember(state: CallState, event_id: str) -> None:
        state.seen_event_ids.append(event_id)
        del state.seen_event_ids[:-MAX_SEEN_IDS]

    def _started(self, state: CallState | None, event: CallStartedV1, event_id: str) -> Outcome:
        if state is not None and event_id in state.seen_event_ids:
            return Outcome(None, [], redelivered=True)
        new = self._fresh(state, event, event.call_id)
        new.queue = event.queue
        new.started = True
        self._remember(new, event_id)
        return Outcome(new, [])

    def _segment(
        self, state: CallState | None, event: TranscriptSegmentV1, event_id: str
    ) -> Outcome:
        cp = self.compiled(event.tenant_id)
        queue = state.queue if state is not None else None
        segment = segment_of(event)
        words = normalise(segment.text)  # once: both rule passes share its scoring
        findings = check_segment(cp, segment, event.call_id, queue, words)
        output = SegmentComplianceV1(
            tenant_id=event.tenant_id,
            call_id=event.call_id,
            occurred_at=event.occurred_at,
            producer=self.producer(cp.pack),
            derived_from=[event_id],
            segment_id=event.segment_id,
            findings=findings,
            rule_pack_hash=cp.pack.content_hash,
        )
        if state is not None and (
            event_id in state.seen_event_ids or event.segment_id in state.seen_segment_ids
        ):
            # Redelivered: publish the same findings again (same ids), count nothing. A late
            # segment's revision of the call result is published again too, as it is now.
            outputs: list[TenantEvent] = [output]
            if event_id in state.late_event_ids:
                outputs.append(self._call_event(cp, state, event))
            return Outcome(None, outputs, redelivered=True)
        new = self._fresh(state, event, event.call_id)
        observe_segment(cp, new, segment, words)
        self._remember(new, event_id)
        if new.ended_event_id is None:
            return Outcome(new, [output])
        # The call was already decided (the transcriber flushes its last segments after the
        # call ended): decide again with this segment and publish the revised result.
        new.call_findings = decide_call(cp, new)
        new.revision += 1
        new.late_event_ids.append(event_id)
        log.debug("call_result_revised", call_id=event.call_id, revision=new.revision)
        return Outcome(new, [output, self._call_event(cp, new, event)], revised=True)

    def _ended(self, state: CallState | None, event: CallEndedV1, event_id: str) -> Outcome:
        cp = self.compiled(event.tenant_id)
        if state is not None and state.ended_event_id is not None:
            if state.ended_event_id != event_id:
                log.warning("call_ended_twice", call_id=event.call_id)
                return Outcome(None, [])
            return Outcome(None, [self._call_event(cp, state, event)], redelivered=True)
        new = self._fresh(state, event, event.call_id)
        new.call_findings = decide_call(cp, new)
        new.ended_event_id = event_id
        self._remember(new, event_id)
        return Outcome(new, [self._call_event(cp, new, event)])

    def _call_event(
        self, cp: CompiledPack, state: CallState, event: TenantEvent
    ) -> CallComplianceV1:
        return CallComplianceV1(
            tenant_id=state.tenant_id,
            call_id=state.call_id,
            occurred_at=event.occurred_at,
            producer=self.producer(cp.pack),
            derived_from=list(state.seen_event_ids)[-10_000:],
            findings=state.call_findings or [],
            segments_checked=state.segments_checked,
            revision=state.revision,
            rule_pack_hash=cp.pack.content_hash,
        )


def state_to_json(state: CallState) -> dict[str, Any]:
    """A call state as a JSON-ready dict (for the table)."""
    return state.model_dump(mode="json")


def state_from_json(data: dict[str, Any] | None) -> CallState | None:
    """A call state read back from the table."""
    return None if data is None else CallState.model_validate(data)
