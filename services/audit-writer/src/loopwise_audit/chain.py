"""The hash chain: canonical JSON, record hashes with domain separation, checkpoint HMACs.

Canonical JSON follows RFC 8785 for the values an audit record may hold (strings,
integers, booleans, null, lists and objects with ASCII keys): keys sorted, no
whitespace, UTF-8, no floats (scores are stored as decimal strings so that every
language re-derives the same bytes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

RECORD_DOMAIN = b"loopwise.audit.v1\x00"
"""Prefix of every record hash, so no other SHA-256 in the system can collide with one."""

CHECKPOINT_DOMAIN = b"loopwise.audit.checkpoint.v1\x00"
"""Prefix of every checkpoint HMAC message."""

CHAIN_SCHEME = "loopwise.audit.v1"
"""Name of this hashing scheme, written into checkpoints and exports."""

GENESIS_HASH = "0" * 64
"""The previous hash of a tenant's first record."""


def _reject_floats(value: Any) -> None:
    if isinstance(value, float):
        raise TypeError("audit records hold no floats (store decimals as strings)")
    if isinstance(value, dict):
        for item in value.values():
            _reject_floats(item)
    elif isinstance(value, list):
        for item in value:
            _reject_floats(item)


def canonical_json(value: Any) -> str:
    """Serialise a JSON value canonically (sorted keys, no spaces); floats are refused."""
    _reject_floats(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(prev_hash: str, body: str) -> str:
    """SHA-256 of the domain tag, the previous record's hash (32 bytes) and the canonical body."""
    digest = hashlib.sha256(RECORD_DOMAIN)
    digest.update(bytes.fromhex(prev_hash))
    digest.update(body.encode("utf-8"))
    return digest.hexdigest()


def checkpoint_message(tenant_id: str, sequence: int, head_hash: str, records: int) -> bytes:
    """The bytes a checkpoint's HMAC signs: tenant, sequence, head hash and record count."""
    payload = canonical_json(
        {"tenant_id": tenant_id, "sequence": sequence, "head_hash": head_hash, "records": records}
    )
    return CHECKPOINT_DOMAIN + payload.encode("utf-8")


def checkpoint_hmac(key: bytes, tenant_id: str, sequence: int, head_hash: str, records: int) -> str:
    """HMAC-SHA-256 of a chain head, hex."""
    message = checkpoint_message(tenant_id, sequence, head_hash, records)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sha256_hex(data: bytes) -> str:
    """SHA-256 of bytes, hex."""
    return hashlib.sha256(data).hexdigest()
