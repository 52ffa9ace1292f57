"""Credentials for one API: a fixed token, or an OAuth2 token fetched and cached."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Container
from typing import Any, Protocol

import httpx
import structlog

from app.errors import RetryableError
from app.http.replies import RETRYABLE_STATUS, error_from

log = structlog.get_logger(__name__)

# Fetch a new token this long before the old one expires.
TOKEN_MARGIN_SECONDS = 60.0
# The lifetime of a token whose reply does not say (OAuth2 makes expires_in optional).
DEFAULT_TOKEN_SECONDS = 3600.0


class Tokens(Protocol):
    """Hands out credentials for one API."""

    async def get(self) -> str: ...

    def invalidate(self, token: str) -> None: ...


class StaticToken:
    """A fixed token; nothing to refresh."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get(self) -> str:
        """The token."""
        return self._token

    def invalidate(self, token: str) -> None:
        """Nothing to do: a static token cannot be renewed."""


TokenFetch = Callable[[], Awaitable[tuple[str, float]]]


class CachedToken:
    """A token from `fetch` (token, lifetime in seconds), cached until near its expiry."""

    def __init__(
        self,
        fetch: TokenFetch,
        *,
        clock: Callable[[], float] = time.monotonic,
        margin: float = TOKEN_MARGIN_SECONDS,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._margin = margin
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        """A valid token, fetched only when the cached one is missing or near expiry."""
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                token, lifetime = await self._fetch()
                if not token or not math.isfinite(lifetime):
                    raise RetryableError("the token endpoint sent no usable access_token")
                self._token = token
                self._expires_at = self._clock() + max(lifetime - self._margin, 0.0)
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget `token` so the next `get` fetches a new one."""
        if self._token == token:
            self._token = None


async def fetch_token(
    http: httpx.AsyncClient,
    url: str,
    who: str,
    *,
    on_fetch: Callable[[str], None] | None = None,
    retry_status: Container[int] = RETRYABLE_STATUS,
    **request: Any,
) -> tuple[str, float]:
    """POST to an OAuth2 token endpoint: (access_token, lifetime in seconds), or our error.

    `on_fetch` hears each outcome: "ok", the status of a refusal, "error" (network) or
    "bad_reply" (2xx without a usable token). `request` is the grant (data=, params=, auth=).
    """

    def outcome(what: str) -> None:
        if on_fetch is not None:
            on_fetch(what)

    try:
        reply = await http.post(url, **request)
    except httpx.HTTPError as exc:
        outcome("error")
        raise RetryableError(f"{who} unreachable: {type(exc).__name__}") from exc
    if not reply.is_success:
        outcome(str(reply.status_code))
        raise error_from(reply, who, retry_status=retry_status)
    try:
        body = reply.json()
        token, expires_in = body["access_token"], body.get("expires_in")
        lifetime = DEFAULT_TOKEN_SECONDS if expires_in is None else float(expires_in)
    except (ValueError, KeyError, TypeError) as exc:
        outcome("bad_reply")
        raise RetryableError(f"{who} sent no access_token") from exc
    # A null or empty token would otherwise be sent as "Bearer None" until it expired.
    if not isinstance(token, str) or not token or not math.isfinite(lifetime):
        outcome("bad_reply")
        raise RetryableError(f"{who} sent no access_token")
    outcome("ok")
    log.info("token_fetched", api=who, expires_in=lifetime)
    return token, lifetime
