"""Fixtures of the compliance-scoring tests: the shipped packs and builders of call events."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loopwise.events import (
    CallEndedV1,
    CallStartedV1,
    ChannelSpec,
    ModelRef,
    RedactionSpan,
    TenantEvent,
    TranscriptSegmentV1,
)
from loopwise.events.base import PartyRole
from loopwise_compliance.engine import CallState
from loopwise_compliance.handler import ComplianceScorer, Outcome
from loopwise_compliance.rules import PackIndex, load_packs

ROOT = Path(__file__).resolve().parents[3]
PACKS = ROOT / "deploy" / "rule-packs"
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ASR = ModelRef(name="test-asr", version="1")


@dataclass
class CallScript:
    """Builds the events of one call; segment ids and event ids are numbered in order."""

    call_id: str
    tenant_id: str = "acme"
    queue: str = "billing"
    count: int = 0
    events: list[tuple[str, TenantEvent]] = field(default_factory=list)

    def _add(self, event: TenantEvent) -> tuple[str, TenantEvent]:
        item = (f"{self.call_id}-ev-{len(self.events):03d}", event)
        self.events.append(item)
        return item

    def started(self) -> tuple[str, TenantEvent]:
        """CallStartedV1 with this script's queue."""
        return self._add(
            CallStartedV1(
                tenant_id=self.tenant_id,
                call_id=self.call_id,
                occurred_at=T0,
                queue=self.queue,
                region="eu-west",
                channels=[
                    ChannelSpec(index=0, role="agent"),
                    ChannelSpec(index=1, role="customer"),
                ],
            )
        )

    def say(
        self,
        speaker: PartyRole,
        start_s: float,
        text: str,
        redactions: Sequence[RedactionSpan] = (),
        duration_s: float = 4.0,
    ) -> tuple[str, TenantEvent]:
        """A redacted transcript segment."""
        self.count += 1
        return self._add(
            TranscriptSegmentV1(
                tenant_id=self.tenant_id,
                call_id=self.call_id,
                occurred_at=T0 + timedelta(seconds=start_s + duration_s),
                producer=ASR,
                segment_id=f"{self.call_id}-seg-{self.count:03d}",
                speaker=speaker,
                start_s=start_s,
                end_s=start_s + duration_s,
                text=text,
                confidence=0.9,
                language="en",
                redactions=list(redactions),
                source="realtime",
            )
        )

    def ended(self) -> tuple[str, TenantEvent]:
        """CallEndedV1."""
        return self._add(
            CallEndedV1(
                tenant_id=self.tenant_id,
                call_id=self.call_id,
                occurred_at=T0 + timedelta(minutes=5),
                duration_s=300.0,
            )
        )


def card_span(text: str, token: str = "[CARD_NUMBER]") -> RedactionSpan:
    """The redaction span of the first `token` in `text`."""
    start = text.index(token)
    kind = token.strip("[]")
    return RedactionSpan(type=kind, start=start, end=start + len(token), confidence=0.99)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def shipped_packs() -> PackIndex:
    """The packs in deploy/rule-packs."""
    return load_packs(PACKS)


@pytest.fixture
def scorer(shipped_packs: PackIndex) -> ComplianceScorer:
    """A scorer over the shipped packs."""
    return ComplianceScorer(shipped_packs)


class Replayer:
    """Runs events through a scorer, threading the call state as the table would."""

    def __init__(self, scorer: ComplianceScorer) -> None:
        self.scorer = scorer
        self.state: CallState | None = None

    def __call__(self, events: Sequence[tuple[str, TenantEvent]]) -> list[Outcome]:
        outcomes = []
        for event_id, event in events:
            outcome = self.scorer.handle(self.state, event, event_id)
            if outcome.state is not None:
                self.state = outcome.state
            outcomes.append(outcome)
        return outcomes


@dataclass
class Kit:
    """What the tests build calls with."""

    script: type[CallScript] = CallScript
    card_span: Callable[..., RedactionSpan] = card_span
    packs_dir: Path = PACKS
    root: Path = ROOT

    @staticmethod
    def replayer(scorer: ComplianceScorer) -> Replayer:
        """A fresh replayer (one call's state)."""
        return Replayer(scorer)


@pytest.fixture(scope="session")
def kit() -> Kit:
    """Builders and paths for the compliance tests."""
    return Kit()
