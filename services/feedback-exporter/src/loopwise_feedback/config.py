"""Settings of the feedback exporter (env prefix `LOOPWISE_FEEDBACK_`)."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from loopwise.kafka import WorkerSettings
from loopwise.topics import dead_letter_topic, topic

SERVICE = "feedback-exporter"

AUDIO_FIELDS = frozenset({"tenant_id", "call_id", "segment_id", "speaker"})
"""Placeholders an audio path template may use."""


def default_inputs() -> list[str]:
    """Decisions and outcomes, plus review tasks: a decision names only the task it decides."""
    return [topic("hitl.review-tasks"), topic("hitl.decisions"), topic("hitl.outcomes")]


class FeedbackSettings(WorkerSettings):
    """Where training sets go and how quality is measured."""

    model_config = SettingsConfigDict(env_prefix="LOOPWISE_FEEDBACK_", env_nested_delimiter="__")

    group_id: str = Field(
        default="loopwise-feedback-exporter", min_length=1, description="Consumer group id"
    )
    input_topics: list[str] = Field(
        default_factory=default_inputs, min_length=1, description="Topics to consume (JSON list)"
    )
    dead_letter_topic: str = Field(
        default_factory=lambda: dead_letter_topic(SERVICE),
        min_length=1,
        description="Where undecodable or failing input goes",
    )
    root: Path = Field(
        default=Path("feedback-data"),
        description="Root folder of the training sets and of the state store (feedback.sqlite)",
    )
    audio_path_template: str = Field(
        default="audio/{tenant_id}/{call_id}/{speaker}.wav",
        min_length=1,
        description=(
            "Audio reference written as NeMo audio_filepath; placeholders: "
            "{tenant_id} {call_id} {segment_id} {speaker}"
        ),
    )
    window_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="Sliding window of the quality metrics, seconds of event time",
    )
    publish_interval_s: float = Field(
        default=30.0, gt=0, description="How often changed training sets are rewritten"
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="SQLite durability: FULL survives power loss, NORMAL only a process crash",
    )

    state_retention_s: float = Field(
        default=35 * 86400.0,
        gt=0,
        description=(
            "How long seen event ids and decided tasks are kept; longer than the input topics'"
            " retention (30 days), so a replay from the start is still recognised"
        ),
    )

    @field_validator("audio_path_template")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        unknown = names - AUDIO_FIELDS
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(AUDIO_FIELDS)}"
            )
        return value

    @property
    def store_path(self) -> Path:
        """The SQLite state store next to the data."""
        return self.root / "feedback.sqlite"
