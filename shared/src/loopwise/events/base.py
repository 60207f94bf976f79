"""Base classes of the event contract: strict, closed, every field described."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"

Identifier = Annotated[
    str,
    Field(
        pattern=IDENTIFIER_PATTERN,
        description="An identifier: 1-128 characters of letters, digits and . _ : @ -",
    ),
]

PartyRole = Literal["agent", "customer", "ivr", "supervisor", "mixed", "unknown"]
"""Who speaks on a channel; `mixed` is a mono recording of several parties."""

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class ContractModel(BaseModel):
    """A closed, strict, immutable model: unknown fields are rejected."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
        ser_json_timedelta="float",
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )


class ModelRef(ContractModel):
    """The model or rule pack (and its version) that produced a derived event."""

    name: str = Field(min_length=1, max_length=200, description="Model or rule pack name")
    version: str = Field(min_length=1, max_length=200, description="Model or rule pack version")


class TenantEvent(ContractModel):
    """An event that belongs to one tenant."""

    event_type: ClassVar[str]
    """CloudEvents `type` of this event; also the key of the schema registry."""

    key_field: ClassVar[str] = "tenant_id"
    """The field whose value is the Kafka message key."""

    tenant_id: Identifier = Field(
        description="Tenant (contact-center customer) the event belongs to"
    )
    occurred_at: AwareDatetime = Field(
        description="When the event happened, RFC 3339 with a UTC offset"
    )

    def kafka_key(self) -> str:
        """Return the Kafka message key of this event."""
        return str(getattr(self, self.key_field))


class CallEvent(TenantEvent):
    """An event about one call; keyed by call id so a call stays in one partition."""

    key_field: ClassVar[str] = "call_id"

    call_id: Identifier = Field(description="Call identifier, the Kafka key of every call topic")


class DerivedCallEvent(CallEvent):
    """A call event computed by a Loopwise service from earlier events."""

    producer: ModelRef = Field(description="Model or rule pack, with version, that made this event")
    derived_from: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="CloudEvents ids of the events this event was derived from",
    )
