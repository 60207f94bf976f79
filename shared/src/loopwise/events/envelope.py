"""CloudEvents 1.0 Kafka binary-mode headers, plus tenant_id, call_id and traceparent."""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from loopwise.events.base import IDENTIFIER_PATTERN

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)

HEADER_LIMITS: dict[str, int] = {
    "ce_specversion": 16,
    "ce_id": 256,
    "ce_type": 256,
    "ce_source": 256,
    "ce_time": 64,
    "content-type": 128,
    "tenant_id": 128,
    "call_id": 128,
    "traceparent": 128,
}
"""The envelope's headers and the most characters each may hold."""

Headers = list[tuple[str, bytes]]


class EnvelopeError(ValueError):
    """The Kafka headers do not form a valid Loopwise envelope."""


def new_traceparent(parent: str | None = None) -> str:
    """Return a W3C traceparent: a child span of `parent`, or a new trace."""
    match = _TRACEPARENT.match(parent) if parent else None
    trace_id = match.group(1) if match else f"{_nonzero_bits(128):032x}"
    flags = match.group(3) if match else "01"
    return f"00-{trace_id}-{_nonzero_bits(64):016x}-{flags}"


def _nonzero_bits(bits: int) -> int:
    """Random bits for a trace or span id, never all zero (W3C: an invalid id).

    Ids need to be unique, not secret: the process's PRNG does it at a fraction of the
    cost of `secrets` (a system call per id, on every output of every service).
    """
    return random.getrandbits(bits) or 1


@dataclass(frozen=True)
class Envelope:
    """The metadata that travels in Kafka headers next to an event's JSON value."""

    type: str
    source: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    tenant_id: str | None = None
    call_id: str | None = None
    traceparent: str | None = None
    specversion: str = SPEC_VERSION
    content_type: str = CONTENT_TYPE

    def to_headers(self) -> Headers:
        """Encode as Kafka headers (CloudEvents binary mode)."""
        headers: Headers = [
            ("ce_specversion", self.specversion.encode()),
            ("ce_id", self.id.encode()),
            ("ce_type", self.type.encode()),
            ("ce_source", self.source.encode()),
            ("ce_time", self.time.isoformat().encode()),
            ("content-type", self.content_type.encode()),
        ]
        for name in ("tenant_id", "call_id", "traceparent"):
            value = getattr(self, name)
            if value is not None:
                headers.append((name, value.encode()))
        return headers

    @classmethod
    def from_headers(cls, headers: Headers | None) -> Envelope:
        """Decode Kafka headers; raise EnvelopeError naming what is missing or wrong.

        Only the envelope's own headers are read; others (a platform's tracing headers,
        binary ones included) are ignored. Errors name the header, never its value.
        """
        values: dict[str, str] = {}
        seen: set[str] = set()
        for name, raw in headers or ():
            limit = HEADER_LIMITS.get(name)
            if limit is None or raw is None:
                continue
            problem: str | None = None
            text = ""
            if name in seen:
                problem = f"header {name} appears more than once"
            else:
                seen.add(name)
                try:
                    text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
                except (UnicodeDecodeError, TypeError):
                    problem = f"header {name} is not UTF-8"
                else:
                    if len(text) > limit:
                        problem = f"header {name} is {len(text)} characters, limit {limit}"
            if problem is not None:
                if name == "traceparent":  # a broken trace context is dropped (W3C), not fatal
                    values.pop(name, None)
                    continue
                raise EnvelopeError(problem)
            values[name] = text
        missing = [
            h for h in ("ce_specversion", "ce_id", "ce_type", "ce_source") if not values.get(h)
        ]
        if missing:
            raise EnvelopeError(f"missing or empty CloudEvents header(s): {', '.join(missing)}")
        if values["ce_specversion"] != SPEC_VERSION:
            raise EnvelopeError(f"unsupported ce_specversion (expected {SPEC_VERSION})")
        content_type = values.get("content-type", CONTENT_TYPE)
        if not content_type.startswith(CONTENT_TYPE):
            raise EnvelopeError(f"unsupported content-type (expected {CONTENT_TYPE})")
        for name in ("tenant_id", "call_id"):
            if name in values and not _IDENTIFIER.match(values[name]):
                raise EnvelopeError(
                    f"header {name} is not an identifier ({len(values[name])} characters; "
                    "1-128 letters, digits and . _ : @ -)"
                )
        try:
            time = datetime.fromisoformat(values["ce_time"]) if "ce_time" in values else None
        except ValueError as exc:
            raise EnvelopeError("ce_time is not an RFC 3339 timestamp") from exc
        traceparent = values.get("traceparent")
        if traceparent is not None and not _TRACEPARENT.match(traceparent):
            traceparent = None  # a broken trace context is dropped, not fatal (W3C rule)
        return cls(
            type=values["ce_type"],
            source=values["ce_source"],
            id=values["ce_id"],
            time=time or datetime.now(UTC),
            tenant_id=values.get("tenant_id"),
            call_id=values.get("call_id"),
            traceparent=traceparent,
            specversion=values["ce_specversion"],
            content_type=content_type,
        )
