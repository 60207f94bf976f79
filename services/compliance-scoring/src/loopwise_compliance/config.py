"""Settings of the compliance-scoring service (env prefix `LOOPWISE_COMPLIANCE_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from loopwise.streaming import StreamSettings
from loopwise.topics import topic

SERVICE = "compliance-scoring"


class ComplianceSettings(StreamSettings):
    """Where the rule packs are, which topics to read and write, and the Faust app settings."""

    model_config = SettingsConfigDict(env_prefix="LOOPWISE_COMPLIANCE_", env_nested_delimiter="__")

    app_id: str = Field(
        default="loopwise-compliance-scoring",
        min_length=1,
        description="Faust app id: consumer group and prefix of the call-state changelog",
    )
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
