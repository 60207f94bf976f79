"""Audit checkpoints and dead letters."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AwareDatetime, Field

from loopwise.events.base import ContractModel, TenantEvent


class AuditCheckpointV1(TenantEvent):
    """The head of a tenant's audit hash chain, signed; keyed by tenant id."""

    event_type = "io.loopwise.audit.checkpoint.v1"

    sequence: int = Field(ge=0, description="Sequence number of the chain head")
    head_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the head record, hex")
    hmac: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="HMAC-SHA-256 of sequence and hash, hex"
    )
    key_id: str = Field(min_length=1, max_length=128, description="Which secret key signed it")
    records: int = Field(ge=0, description="Records in the chain up to the head")
    chain_scheme: str | None = Field(
        default=None,
        max_length=64,
        description="Hashing scheme of the chain, e.g. loopwise.audit.v1 (see docs/audit.md)",
    )
    head_recorded_at: AwareDatetime | None = Field(
        default=None, description="When the head record was written to the audit store"
    )


class DeadLetterV1(ContractModel):
    """A message a service could not process, with why; keyed by the original key."""

    event_type: ClassVar[str] = "io.loopwise.deadletter.v1"

    service: str = Field(max_length=64, description="Service that gave up on the message")
    stage: str = Field(
        max_length=32, description="Where it failed: decode, validate, handle, produce"
    )
    error_class: str = Field(max_length=128, description="Error class name")
    reason: str = Field(max_length=4_000, description="Readable reason (never message content)")
    original_topic: str = Field(max_length=249, description="Topic the message came from")
    original_partition: int = Field(ge=0, description="Its partition")
    original_offset: int = Field(ge=0, description="Its offset")
    original_headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Its headers, decoded as UTF-8 where possible",
    )
    payload_b64: str | None = Field(
        default=None,
        description="The original value, base64; absent where the service marks input sensitive",
    )
    payload_bytes: int = Field(ge=0, description="Size of the original value")
    tenant_id: str | None = Field(
        default=None,
        max_length=128,
        description="Tenant from the original headers, if any (shortened if over 128 characters)",
    )
    call_id: str | None = Field(
        default=None,
        max_length=128,
        description="Call from the original headers, if any (shortened if over 128 characters)",
    )
    payload_truncated: bool = Field(
        default=False,
        description="payload_b64 holds only the first bytes of the value (size limit)",
    )
    original_lengths: dict[str, int] = Field(
        default_factory=dict,
        max_length=256,
        description=(
            "Original length of each value shortened here (a prefix and a SHA-256 of the "
            "whole): tenant_id, call_id, reason, key (bytes; the key is then its SHA-256), "
            "header:NAME, and headers (how many there were, where not all are kept)"
        ),
    )
    fallback: bool = Field(
        default=False,
        description="The full record could not be built: only coordinates, stage and class",
    )
