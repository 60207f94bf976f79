"""Settings of the audit writer (env prefix `LOOPWISE_AUDIT_`).

`TrailSettings` is what every command needs (the store, the checkpoint files,
the keys); `AuditWorkerSettings` adds the Kafka worker for `run`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from loopwise.kafka import WorkerSettings
from loopwise.settings import ConfigurationError, ObservabilitySettings
from loopwise.topics import catalogue, dead_letter_topic, topic
from loopwise_audit.checkpoints import KeyRing

ENV_PREFIX = "LOOPWISE_AUDIT_"
MIN_KEY_BYTES = 32


def pipeline_topics() -> list[str]:
    """Every pipeline topic of the catalogue: all but dead letters and the checkpoints."""
    return [
        t.name
        for t in catalogue().topics
        if not t.label.startswith("dlq.") and t.label != "audit.checkpoints"
    ]


class TrailSettings(BaseSettings):
    """Where the audit trail lives and how checkpoints are signed."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    database_url: str = Field(
        default="sqlite:///loopwise-audit.db",
        description="SQLAlchemy URL: sqlite:///path (default) or postgresql://user@host/db",
    )
    checkpoint_dir: Path = Field(
        default=Path("audit-checkpoints"),
        description="Directory of the checkpoint files; keep it off the database's host",
    )
    hmac_key: SecretStr | None = Field(
        default=None,
        description=(
            f"Secret key that signs and verifies checkpoints (at least {MIN_KEY_BYTES} bytes); "
            "required by run, verify and export"
        ),
    )
    key_id: str = Field(
        default="audit-1", min_length=1, max_length=128, description="Name of hmac_key"
    )
    old_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Retired keys by id (JSON object), to verify checkpoints they signed",
    )
    checkpoint_topic: str = Field(
        default_factory=lambda: topic("audit.checkpoints"),
        min_length=1,
        description="Topic the signed chain heads are published to",
    )
    observability: ObservabilitySettings = Field(
        default_factory=ObservabilitySettings, description="Metrics, probes and logs"
    )

    @field_validator("hmac_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode("utf-8")) < MIN_KEY_BYTES:
            raise ValueError(f"must be at least {MIN_KEY_BYTES} bytes")
        return value

    @field_validator("database_url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    def keyring(self) -> KeyRing:
        """The signing key and every verifying key."""
        if self.hmac_key is None:
            message = f"{ENV_PREFIX}HMAC_KEY is not set: checkpoints cannot be signed or verified"
            print(message, file=sys.stderr)
            raise ConfigurationError(message)
        keys = {k: v.get_secret_value().encode("utf-8") for k, v in self.old_keys.items()}
        keys[self.key_id] = self.hmac_key.get_secret_value().encode("utf-8")
        return KeyRing(self.key_id, keys)


class AuditWorkerSettings(WorkerSettings, TrailSettings):
    """The audit writer as a Kafka sink."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    group_id: str = Field(
        default="loopwise-audit-writer", min_length=1, description="Consumer group"
    )
    input_topics: list[str] = Field(
        default_factory=pipeline_topics,
        min_length=1,
        description="Topics to audit (JSON list); default: every pipeline topic of the catalogue",
    )
    dead_letter_topic: str = Field(
        default_factory=lambda: dead_letter_topic("audit-writer"),
        min_length=1,
        description="Where undecodable input goes (payloads are never kept)",
    )
    checkpoint_every_records: int = Field(
        default=1000, ge=1, description="Checkpoint a tenant after this many new records"
    )
    checkpoint_every_s: float = Field(
        default=60.0, gt=0, description="...or this many seconds after its last checkpoint"
    )
    verify_every_s: float = Field(
        default=900.0,
        ge=0,
        description=(
            "Verify every chain against the checkpoint files this often and export the result "
            "as loopwise_audit_verification_* metrics (0: never)"
        ),
    )

    @model_validator(mode="after")
    def _key_present(self) -> AuditWorkerSettings:
        if self.hmac_key is None:
            raise ValueError("hmac_key is required to run the writer (checkpoints are signed)")
        return self
