"""OIDC JWT sign-in against a local OIDC provider (oidc-provider-mock from PyPI)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

CLIENT = "loopwise-console"
REDIRECT = "http://127.0.0.1/callback"


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    """A running OIDC provider with two users: a supervisor of acme and one with no role."""
    from oidc_provider_mock import User, run_server_in_thread

    users = [
        User(
            sub="oidc-sue", claims={"loopwise_roles": ["supervisor"], "loopwise_tenants": ["acme"]}
        ),
        User(sub="oidc-nobody", claims={"loopwise_tenants": ["acme"]}),
    ]
    with run_server_in_thread(user_claims=users) as server:
        yield f"http://localhost:{server.server_port}"


def id_token(issuer: str, sub: str) -> str:
    """Sign in as `sub` through the authorization-code flow; return the ID token (a JWT)."""
    with httpx.Client(base_url=issuer, follow_redirects=False, timeout=10) as http:
        params = {
            "client_id": CLIENT,
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": "openid",
            "state": "s",
            "nonce": "n",
        }
        answer = http.post("/oauth2/authorize", params=params, data={"sub": sub})
        assert answer.status_code in (302, 303), answer.text[:500]
        code = parse_qs(urlparse(answer.headers["location"]).query)["code"][0]
        tokens = http.post(
            "/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "client_id": CLIENT,
                "client_secret": "unused",
            },
        )
        assert tokens.status_code == 200, tokens.text[:500]
        return str(tokens.json()["id_token"])


def test_oidc_jwt_is_validated_and_maps_roles_and_tenants(issuer: str, make_kit: Any) -> None:
    kit = make_kit(oidc={"issuer": issuer, "audience": CLIENT})
    kit.add(kit.task("o-1"), kit.task("x-1", tenant_id="other"))
    token = id_token(issuer, "oidc-sue")
    auth = {"Authorization": f"Bearer {token}"}
    me = kit.client.get("/api/v1/me", headers=auth).json()
    assert me == {"subject": "oidc-sue", "role": "supervisor", "tenants": ["acme"], "auth": "oidc"}
    assert (
        kit.client.post("/api/v1/tasks/o-1/claim", headers=auth).json()["claimed_by"] == "oidc-sue"
    )
    assert kit.client.get("/api/v1/tasks/x-1", headers=auth).status_code == 404

    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    bad = kit.client.get("/api/v1/me", headers={"Authorization": f"Bearer {tampered}"})
    assert bad.status_code == 401 and "invalid token" in bad.json()["error"]["message"]
    no_role = id_token(issuer, "oidc-nobody")
    refused = kit.client.get("/api/v1/me", headers={"Authorization": f"Bearer {no_role}"})
    assert refused.status_code == 401 and "no console role" in refused.json()["error"]["message"]

    other = make_kit(oidc={"issuer": issuer, "audience": "someone-else"})
    wrong_aud = other.client.get("/api/v1/me", headers=auth)
    assert (
        wrong_aud.status_code == 401 and "audience" in wrong_aud.json()["error"]["message"].lower()
    )
