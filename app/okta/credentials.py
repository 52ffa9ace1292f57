"""How the bridge proves itself to Okta: an API token (SSWS) or an OAuth 2.0 service app.

PyJWT and cryptography (about 8 MB of a process) are imported only by a bridge that signs:
one with a service app's key.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import structlog

from app.errors import ConfigError, RetryableError
from app.http import RETRYABLE_STATUS, CachedToken, StaticToken, Tokens, fetch_token

log = structlog.get_logger(__name__)

SCOPES = "okta.users.read okta.groups.read okta.logs.read"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
WHO = "Okta token endpoint"  # in error messages


def ssws(token: str, method: str, url: str) -> dict[str, str]:
    """Okta's API-token header."""
    return {"Authorization": f"SSWS {token}"}


def bearer(token: str, method: str, url: str) -> dict[str, str]:
    """An OAuth access token's header."""
    return {"Authorization": f"Bearer {token}"}


def api_token(token: str) -> Tokens:
    """A read-only admin's API token: sent as `SSWS <token>`, never refreshed."""
    return StaticToken(token)


def read_private_key(path: str) -> str:
    """The service app's PEM private key; ConfigError naming the file when unreadable."""
    try:
        pem = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the Okta private key: {exc.strerror}", file=path) from exc
    import jwt

    try:
        jwt.encode({"probe": 1}, pem, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigError("not an RSA private key in PEM form", file=path) from exc
    return pem


def service_app(
    http: httpx.AsyncClient,
    org_url: str,
    client_id: str,
    pem: str,
    *,
    dpop: httpx.Auth | None = None,
) -> Tokens:
    """Client credentials with `private_key_jwt` (and a DPoP proof when `dpop` is given),
    cached until shortly before expiry."""
    import jwt

    token_url = f"{org_url.rstrip('/')}/oauth2/v1/token"

    def form() -> dict[str, str]:
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,  # never reused: a retry signs a new assertion
        }
        return {
            "grant_type": "client_credentials",
            "scope": SCOPES,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": jwt.encode(claims, pem, algorithm="RS256"),
        }

    async def fetch() -> tuple[str, float]:
        # A refused app (wrong key, missing scope) waits for an operator: never a guess.
        refused = (*RETRYABLE_STATUS, 400, 401, 403)
        for first in (True, False):
            try:
                return await fetch_token(
                    http, token_url, WHO, retry_status=refused, data=form(), auth=dpop
                )
            except RetryableError as exc:
                # DPoP: the first proof had no nonce; DPoPAuth kept the one Okta sent.
                if not (first and dpop is not None and exc.code == "use_dpop_nonce"):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    return CachedToken(fetch)
