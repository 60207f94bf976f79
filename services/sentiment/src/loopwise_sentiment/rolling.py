"""Rolling customer sentiment of a call: current, worst stretch, trend; pure functions.

The rolling score after a turn is the confidence-weighted mean of the last
`window` scored turns (ordered by start time), so one doubtful turn moves it
little. The worst stretch is the window with the lowest rolling score; the
trend is the least-squares slope of the rolling score against time, per minute.
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


def rolling_scores(turns: Sequence[ScoredTurn], window: int) -> list[float]:
    """The rolling score after each turn (turns in time order)."""
    out = []
    for i in range(len(turns)):
        span = turns[max(0, i - window + 1) : i + 1]
        weights = [max(t.confidence, MIN_WEIGHT) for t in span]
        out.append(sum(w * t.score for w, t in zip(weights, span, strict=True)) / sum(weights))
    return out


def _slope_per_minute(times: Sequence[float], values: Sequence[float]) -> float:
    n = len(times)
    if n < 2:
        return 0.0
    mt, mv = sum(times) / n, sum(values) / n
    var = sum((t - mt) ** 2 for t in times)
    if var == 0:
        return 0.0
    return 60.0 * sum((t - mt) * (v - mv) for t, v in zip(times, values, strict=True)) / var


def summarise(turns: Sequence[ScoredTurn], window: int, neutral_band: float) -> CallSummary:
    """Aggregate a call's scored turns (any order) into its rolling summary."""
    ordered = sorted(turns, key=lambda t: (t.start_s, t.segment_id))
    if not ordered:
        return CallSummary(0, 0.0, 0.0, 0.0, None, None, "neutral", 0.0)
    rolling = rolling_scores(ordered, window)
    worst_i = min(range(len(rolling)), key=lambda i: rolling[i])
    first = ordered[max(0, worst_i - window + 1)]
    current = rolling[-1]
    mids = [(t.start_s + t.end_s) / 2 for t in ordered]
    return CallSummary(
        segments_scored=len(ordered),
        current=_clip(current),
        trend=round(_slope_per_minute(mids, rolling), 6),
        worst=_clip(rolling[worst_i]),
        worst_start_s=first.start_s,
        worst_end_s=ordered[worst_i].end_s,
        label=label_of(current, neutral_band),
        confidence=round(sum(t.confidence for t in ordered) / len(ordered), 6),
    )


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
