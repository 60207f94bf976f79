"""Building training sets offline from a dump of the input topics (JSON lines).

Each line is either a CloudEvents structured-mode event (`{"type": ..., "id": ...,
"data": {...}}`) or a bare event body, whose type is recognised from its fields and
whose id is the SHA-256 of the line, so building twice from one dump adds nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from loopwise.events import TenantEvent, validation_reason
from loopwise_feedback.worker import ACCEPTED, Exporter

DUMP_TOPIC = "dump"
_BARE_ORDER = (
    "io.loopwise.review.task.created.v1",
    "io.loopwise.review.decision.v1",
    "io.loopwise.outcome.released.v1",
)


@dataclass
class BuildResult:
    """What a build did: events stored, already seen, and lines that could not be used."""

    stored: int = 0
    already_seen: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def _event(line: str) -> tuple[TenantEvent, str]:
    raw: Any = json.loads(line)
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    if "type" in raw and "data" in raw:
        model = ACCEPTED.get(str(raw["type"]))
        if model is None:
            raise ValueError(f"event type {raw['type']!r} is not one the exporter reads")
        event_id = str(raw.get("id") or "sha256:" + hashlib.sha256(line.encode()).hexdigest())
        return model.model_validate_json(json.dumps(raw["data"])), event_id
    reasons = []
    for event_type in _BARE_ORDER:
        try:
            event = ACCEPTED[event_type].model_validate_json(line)
        except ValidationError as exc:
            reasons.append(f"{event_type}: {validation_reason(exc, limit=2)}")
            continue
        return event, "sha256:" + hashlib.sha256(line.strip().encode()).hexdigest()
    raise ValueError("not a review task, decision or outcome (" + " | ".join(reasons) + ")")


def build_from_lines(
    lines: Iterable[str], exporter: Exporter, *, commit_every: int = 500
) -> BuildResult:
    """Store every usable line's event (once per event id), committing every N lines."""
    result = BuildResult()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event, event_id = _event(line)
        except json.JSONDecodeError as exc:
            result.errors.append((number, f"invalid JSON: {exc.msg} (column {exc.colno})"))
            continue
        except ValidationError as exc:
            result.errors.append((number, validation_reason(exc)))
            continue
        except ValueError as exc:
            result.errors.append((number, str(exc)))
            continue
        if exporter.apply_event(event, event_id, DUMP_TOPIC):
            result.stored += 1
        else:
            result.already_seen += 1
        if number % commit_every == 0:
            exporter.before_commit()
    exporter.before_commit()
    return result
