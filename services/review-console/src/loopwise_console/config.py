"""Settings of the review console (env prefix `LOOPWISE_CONSOLE_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from loopwise.kafka import WorkerSettings
from loopwise.topics import dead_letter_topic, topic

ENV_PREFIX = "LOOPWISE_CONSOLE_"
Priority = Literal["p1", "p2", "p3", "p4"]


class OidcSettings(BaseModel):
    """OIDC JWT validation (optional; bearer tokens from `create-token` always work)."""

    issuer: str | None = Field(default=None, description="Expected `iss`; enables OIDC when set")
    audience: str | None = Field(default=None, description="Expected `aud`")
    jwks_url: str | None = Field(
        default=None, description="JWKS URL; default: from the issuer's discovery document"
    )
    roles_claim: str = Field(default="loopwise_roles", description="Claim listing the roles")
    tenants_claim: str = Field(default="loopwise_tenants", description="Claim listing tenants")
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)


class LimitSettings(BaseModel):
    """Request limits."""

    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger bodies: 413")
    max_page_size: int = Field(default=200, ge=1, le=10_000, description="Largest page")
    requests_per_minute: int = Field(
        default=600, ge=1, description="Per token (or per client address before sign-in): 429"
    )


class StoreSettings(BaseSettings):
    """Where the console's SQL store is (all that `create-token` needs)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Field(default=Path("var/console"), description="Home of the SQLite file")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite:///<data_dir>/console.db; or postgresql://",
    )

    @field_validator("database_url")
    @classmethod
    def _supported(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("sqlite:", "postgresql:", "postgresql+psycopg:")
        ):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    def db_url(self) -> str:
        """The store's URL."""
        return self.database_url or f"sqlite:///{self.data_dir / 'console.db'}"


class ConsoleSettings(WorkerSettings, StoreSettings):
    """The console: its SQL store, HTTP server, Kafka materialiser and outbox."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    http_host: str = Field(default="127.0.0.1", description="Address of the web UI and API")
    http_port: int = Field(default=8400, ge=0, le=65535, description="Port of the web UI and API")
    group_id: str = Field(default="loopwise-review-console", min_length=1)
    input_topics: list[str] = Field(
        default_factory=lambda: [topic("hitl.review-tasks"), topic("hitl.routing-decisions")],
        min_length=1,
        description="Review tasks, and routing decisions (for why a task was held)",
    )
    dead_letter_topic: str = Field(
        default_factory=lambda: dead_letter_topic("review-console"), min_length=1
    )
    decisions_topic: str = Field(default_factory=lambda: topic("hitl.decisions"), min_length=1)
    audit_topic: str = Field(default_factory=lambda: topic("audit.console"), min_length=1)
    audit_tenant: str = Field(
        default="loopwise-console",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$",
        description="Tenant under which denials of unauthenticated callers are audited",
    )
    lease_s: int = Field(default=900, ge=10, le=86_400, description="Claim lease, seconds")
    second_opinion: list[Priority] = Field(
        default_factory=list,
        description='Priorities that need two reviewers\' agreement (JSON list, e.g. ["p1"])',
    )
    blind_review: bool = Field(
        default=False, description="Hide the model's labels until the reviewer gave their own"
    )
    outbox_interval_s: float = Field(default=0.5, gt=0, description="Outbox publish period")
    gauges_interval_s: float = Field(default=5.0, gt=0, description="Queue gauges refresh")
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
