"""Who is calling: bearer tokens stored hashed, or OIDC JWTs; roles and tenants.

Roles: `reviewer` (work the queue), `supervisor` (also reassign, send back,
settle disputes, watch alerts), `auditor` (read only), `admin` (everything,
tokens included). Every caller sees only its tenants' tasks.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal, cast

import jwt
from sqlalchemy import Connection, insert, select

from loopwise_console.config import OidcSettings
from loopwise_console.schema import tokens
from loopwise_console.store import utcnow

Role = Literal["reviewer", "supervisor", "auditor", "admin"]
ROLES: tuple[Role, ...] = ("reviewer", "supervisor", "auditor", "admin")
TOKEN_PREFIX = "lwc_"  # noqa: S105 - a prefix, not a secret

# What each role may do (reading is every role's).
CAN_REVIEW: frozenset[str] = frozenset({"reviewer", "supervisor", "admin"})
CAN_SUPERVISE: frozenset[str] = frozenset({"supervisor", "admin"})
CAN_ADMIN: frozenset[str] = frozenset({"admin"})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    subject: str
    role: Role
    tenants: tuple[str, ...]
    auth: Literal["token", "oidc"]
    token_id: str | None = None

    @property
    def rate_key(self) -> str:
        """What the rate limit counts by."""
        return f"{self.auth}:{self.token_id or self.subject}"


class AuthError(Exception):
    """Authentication failed (401), with a reason safe to show."""


def hash_token(token: str) -> str:
    """SHA-256 of a token, hex (tokens are random 256-bit values: no salt or stretching needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(
    conn: Connection,
    *,
    subject: str,
    role: Role,
    tenants: list[str],
    label: str | None = None,
) -> tuple[str, str]:
    """Store a new token's hash; return (token, token id). The token is never stored."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if not tenants:
        raise ValueError("a token needs at least one tenant")
    token_id = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    conn.execute(
        insert(tokens).values(
            token_hash=hash_token(token),
            token_id=token_id,
            subject=subject,
            role=role,
            tenants=json.dumps(sorted(set(tenants))),
            label=label,
            created_at=utcnow(),
        )
    )
    return token, token_id


def token_principal(conn: Connection, token: str) -> Principal:
    """The principal of a bearer token, or AuthError."""
    row = conn.execute(select(tokens).where(tokens.c.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        raise AuthError("unknown or revoked token")
    return Principal(
        subject=row.subject,
        role=cast(Role, row.role),
        tenants=tuple(json.loads(row.tenants)),
        auth="token",
        token_id=row.token_id,
    )


class OidcVerifier:
    """Validates OIDC JWTs (signature from the issuer's JWKS, iss, aud, exp)."""

    def __init__(self, settings: OidcSettings) -> None:
        assert settings.issuer is not None
        self.settings = settings
        self.issuer = settings.issuer
        self._jwks: jwt.PyJWKClient | None = None

    def _client(self) -> jwt.PyJWKClient:
        if self._jwks is None:
            url = self.settings.jwks_url
            if url is None:
                import httpx

                discovery = f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
                url = str(httpx.get(discovery, timeout=10).raise_for_status().json()["jwks_uri"])
            self._jwks = jwt.PyJWKClient(url, cache_keys=True, lifespan=300)
        return self._jwks

    def verify(self, token: str) -> Principal:
        """The principal of a JWT, or AuthError naming what is wrong."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            if kid is not None:
                keys = [self._client().get_signing_key(kid)]
            else:  # a provider with one key may leave kid out: the signature decides
                keys = self._client().get_signing_keys()
            claims: dict[str, Any] | None = None
            failure: jwt.PyJWTError = jwt.InvalidSignatureError("no key verifies the signature")
            for key in keys:
                try:
                    claims = jwt.decode(
                        token,
                        key.key,
                        algorithms=self.settings.algorithms,
                        audience=self.settings.audience,
                        issuer=self.issuer,
                        options={"require": ["exp", "iss", "sub"]},
                    )
                    break
                except jwt.InvalidSignatureError as exc:
                    failure = exc
            if claims is None:
                raise failure
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        except Exception as exc:  # the JWKS cannot be fetched: not the caller's fault, but no entry
            raise AuthError(f"token cannot be verified: {type(exc).__name__}") from exc
        roles = _as_list(claims.get(self.settings.roles_claim))
        role = next((r for r in ("admin", "supervisor", "reviewer", "auditor") if r in roles), None)
        if role is None:
            raise AuthError(f"the token's {self.settings.roles_claim} claim names no console role")
        tenants = _as_list(claims.get(self.settings.tenants_claim))
        if not tenants:
            raise AuthError(f"the token's {self.settings.tenants_claim} claim names no tenant")
        return Principal(
            subject=str(claims["sub"])[:128], role=role, tenants=tuple(tenants), auth="oidc"
        )


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated parts (opaque console tokens have none)."""
    return token.count(".") == 2
