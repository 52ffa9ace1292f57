"""How the bridge proves itself to Okta: an API token (SSWS) or an OAuth 2.0 service app."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import jwt
import structlog

from app.errors import ConfigError, RetryableError
from app.http import CachedToken, StaticToken, Tokens, error_from, json_object

log = structlog.get_logger(__name__)

SCOPES = "okta.users.read okta.groups.read okta.logs.read"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


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
    try:
        jwt.encode({"probe": 1}, pem, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigError("not an RSA private key in PEM form", file=path) from exc
    return pem


def service_app(http: httpx.AsyncClient, org_url: str, client_id: str, pem: str) -> Tokens:
    """Client credentials with `private_key_jwt`, cached until shortly before expiry."""
    token_url = f"{org_url.rstrip('/')}/oauth2/v1/token"

    async def fetch() -> tuple[str, float]:
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        form = {
            "grant_type": "client_credentials",
            "scope": SCOPES,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": jwt.encode(claims, pem, algorithm="RS256"),
        }
        try:
            reply = await http.post(token_url, data=form)
        except httpx.HTTPError as exc:
            raise RetryableError(f"Okta token endpoint unreachable ({type(exc).__name__})") from exc
        if not reply.is_success:
            # A refused app (wrong key, missing scope) waits for an operator; never a guess.
            raise error_from(reply, "Okta token endpoint", retry_credentials=True)
        body = json_object(reply, "Okta token endpoint")
        token, lifetime = body.get("access_token"), body.get("expires_in", 3600)
        if not isinstance(token, str) or not token or not isinstance(lifetime, int | float):
            raise RetryableError("Okta token endpoint sent no access_token")
        log.info("okta_token_fetched", expires_in=lifetime)
        return token, float(lifetime)

    return CachedToken(fetch)
