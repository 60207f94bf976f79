"""Rolling customer sentiment of a call: current, worst stretch, trend; pure functions.

The rolling score after a turn is the confidence-weighted mean of the last
`window` scored turns (ordered by start time), so one doubtful turn moves it
little. The worst stretch is the window with the lowest rolling score; the
trend is the least-squares slope of the rolling score against time (each turn's
mid-point), per minute. `Rolling` keeps these as running figures, so a turn that
follows the others is added in constant time however long the call is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loopwise_sentiment.models import Label, label_of

MIN_WEIGHT = 0.05  # a zero-confidence turn still counts a little, so the mean is defined


@dataclass(frozen=True)
class ScoredTurn:
    """One scored segment of the aggregated side of a call."""

    segment_id: str
    start_s: float
    end_s: float
    score: float
    confidence: float
    event_id: str


@dataclass(frozen=True)
class CallSummary:
    """The rolling aggregate of a call at one moment."""

    segments_scored: int
    current: float
    trend: float
    worst: float
    worst_start_s: float | None
    worst_end_s: float | None
    label: Label
    confidence: float


def turn_order(turn: ScoredTurn) -> tuple[float, str]:
    """The order in which a call's turns are aggregated: start time, then segment id."""
    return (turn.start_s, turn.segment_id)


@dataclass(frozen=True)
class Rolling:
    """The running aggregate of a call's turns, taken in time order, one turn at a time.

    It keeps only what the next turn needs (the last `window` turns, running sums for the
    trend, the worst window so far), so adding a turn costs the same at the call's 400th
    turn as at its 4th. `summarise` is this fold over all turns: the two cannot disagree.
    """

    window: int
    tail: tuple[ScoredTurn, ...] = ()
    """The last `window` turns, in time order."""
    n: int = 0
    confidence_sum: float = 0.0
    t0: float = 0.0
    """The first turn's mid-point; the trend's sums use times from it (no cancellation)."""
    sum_t: float = 0.0
    sum_v: float = 0.0
    sum_tt: float = 0.0
    sum_tv: float = 0.0
    current: float = 0.0
    worst: float = 0.0
    worst_start_s: float | None = None
    worst_end_s: float | None = None

    def follows(self, turn: ScoredTurn) -> bool:
        """True when `turn` comes after every turn taken so far (so `add` may take it)."""
        return not self.tail or turn_order(turn) > turn_order(self.tail[-1])

    def add(self, turn: ScoredTurn) -> Rolling:
        """The aggregate with `turn` taken; it must follow the others (see `follows`)."""
        span = (*self.tail, turn)[-self.window :]
        weights = [max(t.confidence, MIN_WEIGHT) for t in span]
        value = sum(w * t.score for w, t in zip(weights, span, strict=True)) / sum(weights)
        mid = (turn.start_s + turn.end_s) / 2
        t0 = mid if self.n == 0 else self.t0
        t = mid - t0
        worse = self.n == 0 or value < self.worst
        return Rolling(
            window=self.window,
            tail=span,
            n=self.n + 1,
            confidence_sum=self.confidence_sum + turn.confidence,
            t0=t0,
            sum_t=self.sum_t + t,
            sum_v=self.sum_v + value,
            sum_tt=self.sum_tt + t * t,
            sum_tv=self.sum_tv + t * value,
            current=value,
            worst=value if worse else self.worst,
            worst_start_s=span[0].start_s if worse else self.worst_start_s,
            worst_end_s=turn.end_s if worse else self.worst_end_s,
        )

    @classmethod
    def of(cls, turns: Sequence[ScoredTurn], window: int) -> Rolling:
        """The aggregate of turns in any order."""
        rolling = cls(window)
        for turn in sorted(turns, key=turn_order):
            rolling = rolling.add(turn)
        return rolling

    def trend(self) -> float:
        """Least-squares slope of the rolling score against time, per minute."""
        if self.n < 2:
            return 0.0
        var = self.sum_tt - self.sum_t * self.sum_t / self.n
        if var <= 0:
            return 0.0
        return 60.0 * (self.sum_tv - self.sum_t * self.sum_v / self.n) / var

    def summary(self, neutral_band: float) -> CallSummary:
        """The call's rolling summary after the turns taken."""
        if self.n == 0:
            return CallSummary(0, 0.0, 0.0, 0.0, None, None, "neutral", 0.0)
        return CallSummary(
            segments_scored=self.n,
            current=_clip(self.current),
            trend=round(self.trend(), 6),
            worst=_clip(self.worst),
            worst_start_s=self.worst_start_s,
            worst_end_s=self.worst_end_s,
            label=label_of(self.current, neutral_band),
            confidence=round(self.confidence_sum / self.n, 6),
        )


def summarise(turns: Sequence[ScoredTurn], window: int, neutral_band: float) -> CallSummary:
    """Aggregate a call's scored turns (any order) into its rolling summary."""
    return Rolling.of(turns, window).summary(neutral_band)


def _clip(value: float) -> float:
    return round(max(-1.0, min(1.0, value)), 6)


def significant_change(
    summary: CallSummary,
    last_score: float | None,
    last_label: Label | None,
    *,
    min_segments: int,
    delta: float,
) -> bool:
    """True when the rolling score moved by `delta`, or turned or stopped being negative.

    Label flips between neutral and positive near the band do not count, so a call that
    hovers at the edge does not publish on every turn.
    """
    if summary.segments_scored < min_segments:
        return False
    base_score = 0.0 if last_score is None else last_score
    base_label: Label = "neutral" if last_label is None else last_label
    flipped = (summary.label == "negative") != (base_label == "negative")
    return abs(summary.current - base_score) >= delta or flipped
