"""Settings of the review router (env prefix `LOOPWISE_ROUTER_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from loopwise.kafka import WorkerSettings
from loopwise.topics import dead_letter_topic, topic


class RouterSettings(WorkerSettings):
    """Topics, policy file, join windows and clocks of the router."""

    model_config = SettingsConfigDict(
        env_prefix="LOOPWISE_ROUTER_", env_nested_delimiter="__", extra="ignore"
    )

    group_id: str = Field(
        default="loopwise-review-router",
        min_length=1,
        description="Consumer group; its state changelog is <group_id>-state-changelog",
    )
    input_topics: list[str] = Field(
        default_factory=list,
        description="Set from the five input topics below (calls, transcripts, sentiment, "
        "compliance, decisions); they must have equal partition counts",
    )
    replication_factor: int = Field(default=1, ge=1, description="Replicas of the changelog")
    dead_letter_topic: str = Field(
        default_factory=lambda: dead_letter_topic("review-router"), description="Dead letters"
    )
    policy_path: Path = Field(
        default=Path("deploy/policies/default.yaml"), description="Routing policy YAML"
    )
    calls_topic: str = Field(default_factory=lambda: topic("cx.calls"), description="Call events")
    transcripts_topic: str = Field(
        default_factory=lambda: topic("cx.transcripts"), description="Transcript segments"
    )
    sentiment_topic: str = Field(
        default_factory=lambda: topic("cx.sentiment"), description="Sentiment scores"
    )
    compliance_topic: str = Field(
        default_factory=lambda: topic("cx.compliance"), description="Compliance findings"
    )
    decisions_topic: str = Field(
        default_factory=lambda: topic("hitl.decisions"), description="Reviewers' decisions"
    )
    routing_topic: str = Field(
        default_factory=lambda: topic("hitl.routing-decisions"), description="Routing decisions"
    )
    tasks_topic: str = Field(
        default_factory=lambda: topic("hitl.review-tasks"), description="Review tasks"
    )
    outcomes_topic: str = Field(
        default_factory=lambda: topic("hitl.outcomes"), description="Released outcomes"
    )
    segment_window_s: float = Field(
        default=5.0, gt=0, description="Wait this long after a transcript for its scores"
    )
    call_window_s: float = Field(
        default=10.0, gt=0, description="Wait this long after CallEnded for call-level scores"
    )
    call_grace_s: float = Field(
        default=2.0,
        ge=0,
        description=(
            "Least wait after CallEnded before a call is decided, even with every score in: "
            "room for the transcriber's last segments flushed at hang-up"
        ),
    )
    needs_sentiment: bool = Field(default=True, description="Wait for sentiment before deciding")
    needs_compliance: bool = Field(default=True, description="Wait for compliance before deciding")
    tick_interval_s: float = Field(default=1.0, gt=0, description="How often deadlines are scanned")
    reload_interval_s: float = Field(
        default=5.0, gt=0, description="How often the policy file is checked for changes"
    )
    decision_park_s: float = Field(
        default=3600.0,
        gt=0,
        description=(
            "Keep a review decision whose task is not known yet this long (after a restart "
            "the decision can come before the redelivered input that creates its task); "
            "then dead-letter it"
        ),
    )
    retain_closed_s: float = Field(
        default=7 * 86400.0,
        ge=0,
        description="Keep a finished call's state this long (late decisions)",
    )
    session_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Kafka group session timeout: how soon a dead worker's partitions move",
    )
    heartbeat_interval_s: float = Field(
        default=3.0, gt=0, description="Kafka group heartbeat interval (under a third of the above)"
    )

    @model_validator(mode="after")
    def _inputs(self) -> RouterSettings:
        self.input_topics = [
            self.calls_topic,
            self.transcripts_topic,
            self.sentiment_topic,
            self.compliance_topic,
            self.decisions_topic,
        ]
        return self
