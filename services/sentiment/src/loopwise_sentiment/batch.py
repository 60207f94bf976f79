"""`loopwise-sentiment batch`: JSON lines in, the same lines with sentiment added, out.

Follows the batch contract between the CLIs: every field it does not own passes
through unchanged. A segment line (with `text`) gets `sentiment`; a dialogue line
(with `turns`) gets `sentiment` on every turn with text and `call_sentiment` for
the aggregated side (customer by default; a turn without `start` is timed by its
index, in seconds). Other lines (e.g. a compliance call line) pass through.
Broken lines are reported on stderr with their number and left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from loopwise_sentiment.config import AggregationSettings
from loopwise_sentiment.models import SentimentModel, SentimentResult
from loopwise_sentiment.rolling import ScoredTurn, summarise


@dataclass(frozen=True)
class LineError:
    """A line that could not be processed."""

    number: int
    reason: str


def sentiment_object(model: SentimentModel, result: SentimentResult) -> dict[str, Any]:
    """The `sentiment` object of the batch contract."""
    return {
        "label": result.label,
        "score": result.score,
        "confidence": result.confidence,
        "signals": [s.name for s in result.signals],
        "model": {"name": model.name, "version": model.version},
    }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _asr(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and 0.0 <= number <= 1.0 else None


def _lang(obj: dict[str, Any]) -> str | None:
    value = obj.get("language")
    return value if isinstance(value, str) else None


def annotate_segment(model: SentimentModel, line: dict[str, Any]) -> dict[str, Any]:
    """A segment line with its sentiment."""
    result = model.score(
        line["text"], asr_confidence=_asr(line.get("confidence")), language=_lang(line)
    )
    return {**line, "sentiment": sentiment_object(model, result)}


def annotate_dialogue(
    model: SentimentModel, line: dict[str, Any], settings: AggregationSettings
) -> dict[str, Any]:
    """A dialogue line with sentiment on every turn and the call's rolling sentiment."""
    turns_out: list[Any] = []
    scored: list[ScoredTurn] = []
    for index, turn in enumerate(line["turns"]):
        if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
            turns_out.append(turn)
            continue
        result = model.score(
            turn["text"],
            asr_confidence=_asr(turn.get("confidence")),
            language=_lang(turn) or _lang(line),
        )
        turns_out.append({**turn, "sentiment": sentiment_object(model, result)})
        if turn.get("speaker") in settings.speakers:
            start = _number(turn.get("start"))
            start = float(index) if start is None else start
            end = _number(turn.get("end"))
            scored.append(
                ScoredTurn(
                    segment_id=str(turn.get("id", index)),
                    start_s=start,
                    end_s=start + 1.0 if end is None else end,
                    score=result.score,
                    confidence=result.confidence,
                    event_id=str(index),
                )
            )
    summary = summarise(scored, settings.window, settings.neutral_band)
    call = {
        "speakers": list(settings.speakers),
        "segments_scored": summary.segments_scored,
        "final": summary.current,
        "worst": summary.worst,
        "worst_start": summary.worst_start_s,
        "worst_end": summary.worst_end_s,
        "trend": summary.trend,
        "label": summary.label,
        "confidence": summary.confidence,
        "model": {"name": model.name, "version": model.version},
    }
    return {**line, "turns": turns_out, "call_sentiment": call}


def annotate_lines(
    lines: Iterable[str], model: SentimentModel, settings: AggregationSettings
) -> Iterator[str | LineError]:
    """Process JSON lines; yield output lines or errors in input order."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield LineError(number, f"invalid JSON: {exc}")
            continue
        if not isinstance(line, dict):
            yield LineError(number, "a line must be a JSON object")
            continue
        if "turns" in line:
            if not isinstance(line["turns"], list):
                yield LineError(number, "turns must be a list")
                continue
            out = annotate_dialogue(model, line, settings)
        elif "text" in line:
            if not isinstance(line["text"], str):
                yield LineError(number, "text must be a string")
                continue
            out = annotate_segment(model, line)
        else:
            out = line
        yield json.dumps(out, ensure_ascii=False)
