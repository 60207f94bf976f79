"""Per-call state of the router: the join of transcripts, scores and call events, holds, tasks.

Plain pydantic models that round-trip through JSON; the backtest builds the very same
objects. In the service a call's state is kept in the shared `StateStore` as parts: a
header (the call without its segments and tasks), one part per segment and one per task.
Segments and tasks note when a field is set, so only the parts that changed go to the
changelog: the bytes written per event stay flat however long the call gets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from loopwise_router.policy import Mode, Outcome, Priority

SegmentStatus = Literal["pending", "released", "held", "awaiting_call", "rejected"]
_SETTLED = frozenset({"released", "rejected"})
TaskStatus = Literal["open", "decided", "expired"]


class _State(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=False)


class _Part(_State):
    """A state part that knows whether it changed since it was last written.

    The flag is read and set straight in pydantic's private-attribute dict: a call's
    every segment is asked after every event, and going through pydantic's
    `__getattr__`/`__setattr__` for it made that walk the router's largest cost on long
    calls.
    """

    _dirty: bool = PrivateAttr(default=True)
    # the owning call's set of changed segment ids (see CallState.live_segments); None
    # until the call attaches the part
    _touched: set[str] | None = PrivateAttr(default=None)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if not name.startswith("_"):
            private = self.__pydantic_private__
            private["_dirty"] = True  # type: ignore[index]
            touched = private.get("_touched")  # type: ignore[union-attr]
            if touched is not None:
                touched.add(self.__dict__["segment_id"])

    @property
    def dirty(self) -> bool:
        """Whether the part changed since it was last written."""
        return bool(self.__pydantic_private__["_dirty"])  # type: ignore[index]

    def mark_written(self) -> None:
        """The part as it is now is on the changelog."""
        self.__pydantic_private__["_dirty"] = False  # type: ignore[index]


class SentimentFacts(_State):
    """The sentiment of one segment."""

    label: str = Field(description="negative, neutral or positive")
    score: float = Field(description="Polarity in [-1, 1]")
    confidence: float = Field(description="Model confidence")


class CallSentimentFacts(_State):
    """The latest rolling customer sentiment of the call."""

    final: float | None = Field(default=None, description="Score at call end")
    worst: float | None = Field(default=None, description="Lowest rolling score")
    trend: float | None = Field(default=None, description="Change per minute")
    label: str | None = Field(default=None, description="Class of the current score")
    confidence: float | None = Field(default=None, description="Mean confidence")
    at_end: bool = Field(default=False, description="Published at call end")


class SegmentState(_Part):
    """One segment: what the join has seen so far and what became of it."""

    segment_id: str = Field(description="Segment id")
    speaker: str = Field(default="unknown", description="Who spoke")
    start_s: float = Field(default=0.0, description="Start, seconds")
    end_s: float = Field(default=0.0, description="End, seconds")
    text: str | None = Field(default=None, description="Redacted text; None until transcribed")
    confidence: float | None = Field(default=None, description="ASR confidence")
    language: str | None = Field(default=None, description="Language code")
    words: int = Field(default=0, description="Word count")
    sentiment: SentimentFacts | None = Field(default=None, description="Sentiment, once scored")
    findings: list[dict[str, Any]] | None = Field(
        default=None, description="Compliance findings (ComplianceFinding JSON); None = unchecked"
    )
    seen_at: float | None = Field(default=None, description="Epoch seconds the transcript came")
    asr_model: dict[str, str] | None = Field(
        default=None, description="Name and version of the ASR model behind the text"
    )
    sentiment_model: dict[str, str] | None = Field(
        default=None, description="Name and version of the sentiment model"
    )
    compliance_pack: dict[str, str] | None = Field(
        default=None, description="Name and version of the rule pack that scored the segment"
    )
    sources: list[str] = Field(default_factory=list, description="Input event ids joined")
    status: SegmentStatus = Field(default="pending", description="Where the segment stands")
    outcome: Outcome | None = Field(default=None, description="Routing outcome")
    rule_id: str | None = Field(default=None, description="Deciding rule")
    mode: Mode | None = Field(default=None, description="Mode of the deciding rule")
    task_id: str | None = Field(default=None, description="Review task, if any")
    corrected_text: str | None = Field(default=None, description="Reviewer's text")
    relabel: str | None = Field(default=None, description="Reviewer's sentiment label")
    missing: list[str] = Field(
        default_factory=list, description="Inputs missing when the segment was decided"
    )
    recheck: bool = Field(
        default=False, description="A score came after the segment was decided: route it again"
    )
    late_outcome: Outcome | None = Field(
        default=None, description="Strongest outcome of a re-decision after the segment's"
    )

    @property
    def transcribed(self) -> bool:
        """Whether the transcript of this segment has arrived."""
        return self.text is not None


def by_start(seg: SegmentState) -> tuple[float, str]:
    """The order a call's segments are routed and listed in: start time, then id."""
    return (seg.start_s, seg.segment_id)


class ParkedDecision(_State):
    """A review decision that came before its task (after a router restart, the decision
    can be read before the redelivered input that creates the task again)."""

    decision: str = Field(description="The ReviewDecisionV1, as JSON")
    event_id: str = Field(description="Its event id")
    parked_at: float = Field(description="Epoch seconds it was parked")
    topic: str | None = Field(default=None, description="Where it was read (for a dead letter)")
    partition: int | None = Field(default=None, description="Its partition")
    offset: int | None = Field(default=None, description="Its offset")


class TaskState(_Part):
    """A review task and its SLA clock."""

    task_id: str = Field(description="Task id")
    scope: Literal["segment", "call"] = Field(description="Segment or call")
    segment_id: str | None = Field(default=None, description="Segment, for a segment task")
    kind: Literal["hold", "sample"] = Field(description="hold blocks release")
    mode: Mode = Field(description="realtime or post_call")
    priority: Priority = Field(description="Current priority")
    due_at: float = Field(description="Epoch seconds of the SLA deadline")
    sla_s: int = Field(description="SLA length, reused for each escalation")
    level: int = Field(default=0, description="Escalations so far")
    max_level: int = Field(description="Escalations before expiry")
    on_expiry: Literal["release", "keep_held"] = Field(description="What expiry does to a hold")
    rule_ids: list[str] = Field(description="Rules that asked for review")
    status: TaskStatus = Field(default="open", description="open, decided or expired")
    decision_id: str | None = Field(default=None, description="Decision applied")
    late: bool = Field(
        default=False,
        description="Opened by a re-decision after the call was released: it blocks nothing",
    )


class CallState(_State):
    """Everything the router keeps for one call."""

    tenant_id: str = Field(description="Tenant")
    call_id: str = Field(description="Call id")
    partition: int | None = Field(default=None, description="Input partition (for timer ticks)")
    started: bool = Field(default=False, description="CallStarted seen")
    queue: str | None = Field(default=None, description="Queue")
    region: str | None = Field(default=None, description="Region")
    language: str | None = Field(default=None, description="Call language hint")
    direction: str | None = Field(default=None, description="inbound or outbound")
    agent_id: str | None = Field(default=None, description="Agent id")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Call metadata")
    ended_at: float | None = Field(default=None, description="Epoch seconds CallEnded came")
    end_reason: str | None = Field(default=None, description="Why the call ended")
    duration_s: float | None = Field(default=None, description="Call length")
    call_sentiment: CallSentimentFacts | None = Field(default=None, description="Call sentiment")
    call_findings: list[dict[str, Any]] | None = Field(
        default=None, description="Call-level findings; None until published"
    )
    call_compliance_revision: int | None = Field(
        default=None, description="Revision of the call-level compliance result held"
    )
    segments: dict[str, SegmentState] = Field(default_factory=dict, description="By segment id")
    tasks: dict[str, TaskState] = Field(default_factory=dict, description="By task id")
    call_status: Literal["open", "released", "held", "rejected"] = Field(
        default="open", description="Whether the call outcome was decided and released"
    )
    call_outcome: Outcome | None = Field(default=None, description="Call routing outcome")
    call_rule_id: str | None = Field(default=None, description="Deciding rule of the call")
    late_outcome: Outcome | None = Field(
        default=None, description="Strongest outcome of a re-decision after the call was decided"
    )
    recheck: bool = Field(
        default=False,
        description="An input changed a decided call: route it again once its segments are in",
    )
    waiting_rules: list[str] = Field(
        default_factory=list, description="Segment rules that hold the whole call (post_call)"
    )
    policy_version: str | None = Field(default=None, description="Policy of the last decision")
    sources: list[str] = Field(
        default_factory=list, description="Call-level input event ids (call sentiment apart)"
    )
    call_sentiment_source: str | None = Field(
        default=None, description="Event id of the call sentiment held (each replaces the last)"
    )
    parked: dict[str, ParkedDecision] = Field(
        default_factory=dict, description="Decisions for tasks not created yet, by task id"
    )
    wake_at: float | None = Field(default=None, description="Next time the clock matters")
    closed_at: float | None = Field(default=None, description="When nothing was left to do")

    # An index over the segments, so that an event costs the same however long the call:
    # every change of an attached segment adds its id to `_touched`; `_live` holds the ids
    # of segments that may still be routed, rechecked or keep the call busy, `_unwritten`
    # those changed since the parts were last written. Built on first use (after a load,
    # a copy, or segments added to the dict directly) by one walk over the segments.
    _touched: set[str] = PrivateAttr(default_factory=set)
    _live: set[str] | None = PrivateAttr(default=None)
    _unwritten: set[str] = PrivateAttr(default_factory=set)
    _attached: int = PrivateAttr(default=-1)

    def segment(self, segment_id: str) -> SegmentState:
        """The segment with this id, created empty on first sight."""
        seg = self.segments.get(segment_id)
        if seg is None:
            seg = self.segments[segment_id] = SegmentState(segment_id=segment_id)
            index = self.__pydantic_private__
            assert index is not None
            if index["_live"] is not None and index["_attached"] == len(self.segments) - 1:
                seg.__pydantic_private__["_touched"] = index["_touched"]  # type: ignore[index]
                index["_attached"] += 1
                index["_touched"].add(segment_id)
        return seg

    # The index is read straight from pydantic's private-attribute dict: going through
    # pydantic's __getattr__ for it on every event cost more than the walk it saves.
    def _indexed(self) -> set[str]:
        """The live ids, with every change since the last call taken in."""
        index = self.__pydantic_private__
        assert index is not None
        live: set[str] | None = index["_live"]
        touched: set[str] = index["_touched"]
        segments = self.segments
        if live is None or index["_attached"] != len(segments):
            for seg in segments.values():
                seg.__pydantic_private__["_touched"] = touched  # type: ignore[index]
            live = index["_live"] = set(segments)
            index["_unwritten"] = set(segments)
            index["_attached"] = len(segments)
            touched.clear()
        elif touched:
            live |= touched
            index["_unwritten"] |= touched
            touched.clear()
        return live

    def live_segments(self) -> list[SegmentState]:
        """Segments not settled: pending, held, awaiting the call, or marked for a recheck.

        A released or rejected segment without a recheck needs nothing more from the
        clock; it becomes live again only through a change (a late score sets `recheck`),
        which the index sees.
        """
        live = self._indexed()
        segments = self.segments
        found: list[SegmentState] = []
        settled: list[str] = []
        for segment_id in live:
            seg = segments.get(segment_id)
            if seg is None or (seg.status in _SETTLED and not seg.recheck):
                settled.append(segment_id)
            else:
                found.append(seg)
        live.difference_update(settled)
        return found

    def unwritten_segments(self) -> list[SegmentState]:
        """Segments changed since the parts were last written (a superset: check `dirty`)."""
        self._indexed()
        unwritten: set[str] = self.__pydantic_private__["_unwritten"]  # type: ignore[index]
        segments = self.segments
        return [segments[i] for i in sorted(unwritten) if i in segments]

    def written(self) -> None:
        """Every segment part as it is now is on the changelog."""
        self._indexed()
        self.__pydantic_private__["_unwritten"].clear()  # type: ignore[index]

    def ordered_segments(
        self, where: Callable[[SegmentState], bool] | None = None
    ) -> list[SegmentState]:
        """Transcribed segments by start time (only those `where` accepts, if given)."""
        return sorted(
            (s for s in self.segments.values() if s.transcribed and (where is None or where(s))),
            key=by_start,
        )


HEADER = ""
_SEGMENT = "s/"
_TASK = "t/"


def dirty_parts(state: CallState) -> dict[str, bytes | None]:
    """The parts of a call state to write: the header, and segments and tasks that changed."""
    parts: dict[str, bytes | None] = {
        HEADER: state.model_dump_json(exclude={"segments", "tasks"}).encode("utf-8")
    }
    for seg in state.unwritten_segments():
        if seg.dirty:
            parts[_SEGMENT + seg.segment_id] = seg.model_dump_json().encode("utf-8")
    for task_id, task in state.tasks.items():
        if task.dirty:
            parts[_TASK + task_id] = task.model_dump_json().encode("utf-8")
    return parts


def mark_clean(state: CallState) -> None:
    """Every part of the state was written."""
    for part in (*state.unwritten_segments(), *state.tasks.values()):
        if part.dirty:
            part.mark_written()
    state.written()


def load_parts(parts: Mapping[str, bytes]) -> CallState:
    """A call state rebuilt from its parts."""
    if HEADER not in parts:
        raise ValueError("call state has no header part")
    state = CallState.model_validate_json(parts[HEADER])
    for name, raw in parts.items():
        if name.startswith(_SEGMENT):
            seg = SegmentState.model_validate_json(raw)
            state.segments[seg.segment_id] = seg
        elif name.startswith(_TASK):
            task = TaskState.model_validate_json(raw)
            state.tasks[task.task_id] = task
    return state
