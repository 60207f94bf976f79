"""Settings of the sentiment service (env prefix `LOOPWISE_SENTIMENT_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from loopwise.events.base import PartyRole
from loopwise.kafka import WorkerSettings
from loopwise.topics import dead_letter_topic, topic

SERVICE = "sentiment"


class AggregationSettings(BaseModel):
    """How the rolling per-call sentiment is formed and when it is published."""

    speakers: list[PartyRole] = Field(
        default_factory=lambda: list[PartyRole](["customer"]),
        min_length=1,
        description="Sides aggregated per call",
    )
    window: int = Field(default=3, ge=1, le=50, description="Turns in the rolling window")
    neutral_band: float = Field(
        default=0.1, ge=0, lt=1, description="|rolling score| below this is neutral"
    )
    significant_delta: float = Field(
        default=0.3, gt=0, le=2, description="Rolling-score change that is published at once"
    )
    min_segments: int = Field(
        default=2, ge=1, description="Turns needed before a significant change is published"
    )


class SentimentSettings(WorkerSettings):
    """Everything the sentiment service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="LOOPWISE_SENTIMENT_", env_nested_delimiter="__", extra="ignore"
    )

    group_id: str = Field(default="loopwise-sentiment", min_length=1, description="Consumer group")
    input_topics: list[str] = Field(
        default_factory=lambda: [topic("cx.transcripts"), topic("cx.calls")],
        min_length=1,
        description="Transcript segments and call lifecycle topics (JSON list)",
    )
    dead_letter_topic: str = Field(
        default_factory=lambda: dead_letter_topic(SERVICE), description="Dead-letter topic"
    )
    output_topic: str = Field(
        default_factory=lambda: topic("cx.sentiment"), description="Where sentiment events go"
    )
    model: str = Field(
        default="vader-ngram",
        min_length=1,
        description="Entry point in loopwise.sentiment.models (vader, vader-calibrated, "
        "vader-ngram) or package.module:factory",
    )
    model_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description='Keyword options for the model factory (JSON), e.g. {"calibration": "f.json"}',
    )
    state_path: Path = Field(
        default=Path("var/loopwise-sentiment/state.sqlite3"),
        description="SQLite file of per-call state; put it on a persistent volume",
    )
    retain_ended_calls: int = Field(
        default=10_000, ge=1, description="Ended calls kept (for late segments and redeliveries)"
    )
    aggregation: AggregationSettings = Field(
        default_factory=AggregationSettings, description="Rolling per-call sentiment"
    )
