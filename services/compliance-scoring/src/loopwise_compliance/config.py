"""Settings of the compliance-scoring service (env prefix `LOOPWISE_COMPLIANCE_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from loopwise.kafka import WorkerSettings
from loopwise.topics import topic

SERVICE = "compliance-scoring"


class ComplianceSettings(WorkerSettings):
    """Where the rule packs are, which topics to read and write, and the worker's settings."""

    model_config = SettingsConfigDict(env_prefix="LOOPWISE_COMPLIANCE_", env_nested_delimiter="__")

    group_id: str = Field(
        default="loopwise-compliance-scoring",
        min_length=1,
        description="Consumer group; its call-state changelog is <group_id>-state-changelog",
    )
    input_topics: list[str] = Field(
        default_factory=list,
        description="Set from calls_topic and transcripts_topic (equal partition counts)",
    )
    replication_factor: int = Field(default=1, ge=1, description="Replicas of the changelog")
    dead_letter_topic: str = Field(
        default_factory=lambda: topic("dlq.compliance-scoring"),
        min_length=1,
        description="Where rejected input goes",
    )
    rule_packs: Path = Field(
        default=Path("deploy/rule-packs/index.yaml"),
        description="Rule pack index file, a directory holding index.yaml, or one pack file",
    )
    calls_topic: str = Field(
        default_factory=lambda: topic("cx.calls"), min_length=1, description="Call lifecycle"
    )
    transcripts_topic: str = Field(
        default_factory=lambda: topic("cx.transcripts"),
        min_length=1,
        description="Redacted transcript segments",
    )
    session_timeout_s: float = Field(
        default=60.0,
        ge=6.0,
        le=600.0,
        description="Consumer session timeout: how soon a crashed instance's calls move on",
    )
    output_topic: str = Field(
        default_factory=lambda: topic("cx.compliance"),
        min_length=1,
        description="Where segment and call findings go",
    )

    @model_validator(mode="after")
    def _inputs(self) -> ComplianceSettings:
        self.input_topics = [self.calls_topic, self.transcripts_topic]
        return self
