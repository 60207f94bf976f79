"""Settings shared by every service: Kafka connection (SASL/TLS), metrics port, logging.

A service subclasses `ServiceSettings` with its own env prefix, for example
`LOOPWISE_SENTIMENT_`. The Kafka connection reads the standard `KAFKA_*`
variables, and a service may override any of them with
`<PREFIX>KAFKA__<NAME>` (for example `LOOPWISE_SENTIMENT_KAFKA__SASL_USERNAME`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster; read from `KAFKA_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        min_length=1, description="Comma-separated host:port list of brokers (required)"
    )
    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: SaslMechanism | None = Field(default=None, description="SASL mechanism")
    sasl_username: str | None = Field(default=None, description="SASL user name")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (secret)")
    ssl_ca_location: Path | None = Field(default=None, description="CA bundle to trust (PEM)")
    ssl_certificate_location: Path | None = Field(default=None, description="Client cert (PEM)")
    ssl_key_location: Path | None = Field(default=None, description="Client key (PEM)")
    ssl_key_password: SecretStr | None = Field(default=None, description="Client key password")
    client_id: str = Field(default="loopwise", description="Client id prefix seen by brokers")

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError("sasl_mechanism is required with a SASL security protocol")
            if self.sasl_mechanism != "OAUTHBEARER" and (
                self.sasl_username is None or self.sasl_password is None
            ):
                raise ValueError("sasl_username and sasl_password are required for SASL")
        return self

    def librdkafka(self) -> dict[str, Any]:
        """Return the connection part of a librdkafka (confluent-kafka) configuration."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            value = getattr(self, name)
            if value is not None:
                conf[name.replace("_", ".")] = str(value)
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return conf


class ObservabilitySettings(BaseModel):
    """Where metrics and probes are served and how logs look."""

    host: str = Field(
        default="0.0.0.0",  # noqa: S104 - probes must be reachable by the kubelet and Prometheus
        description="Address of the /metrics, /healthz, /readyz server",
    )
    port: int = Field(
        default=8080, ge=0, le=65535, description="Port of that server; 0 picks a free one"
    )
    log_format: Literal["json", "console"] = Field(default="json", description="json in production")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level"
    )


class ServiceSettings(BaseSettings):
    """Settings every service has; subclass with `env_prefix="LOOPWISE_<NAME>_"`."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Kafka connection")  # type: ignore[arg-type]
    observability: ObservabilitySettings = Field(
        default_factory=ObservabilitySettings, description="Metrics, probes and logs"
    )


class ConfigurationError(SystemExit):
    """Start-up configuration is invalid; the message names where and which rule."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment; on error print which variable broke which rule."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        # A failing default_factory (the Kafka block) raises its own error, titled by its class.
        if exc.title == KafkaSettings.__name__:
            prefix, joiner = "KAFKA_", "_"
        else:
            prefix, joiner = str(cls.model_config.get("env_prefix", "")), "__"
        lines = [f"invalid settings for {cls.__name__}:"]
        for err in exc.errors(include_input=False, include_url=False):
            variable = prefix + joiner.join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {variable.rstrip('_') or cls.__name__}: {err['msg']}")
        message = "\n".join(lines)
        print(message, file=sys.stderr)
        raise ConfigurationError(message) from None
