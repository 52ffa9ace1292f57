"""The COR client: the only code that speaks HTTP to COR.

Errors raised (see app/errors.py):
    RetryableError  429, 500, 502, 503, 504, timeouts and network errors (with Retry-After),
                    a token reply that carries no token
    PermanentError  any other non-2xx (token endpoint too), a 401 that survives one fresh token
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import structlog

from app.errors import PermanentError, RetryableError

log = structlog.get_logger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Fetch a new token this long before the old one expires.
TOKEN_MARGIN_SECONDS = 60.0


@dataclass(frozen=True)
class DetachResult:
    """COR's answer to a detach: the workspaces the user still has."""

    status: int
    remaining: list[str]


class TokenSource(Protocol):
    """Hands out bearer tokens for COR."""

    async def get(self) -> str: ...

    def invalidate(self, token: str) -> None: ...


class StaticToken:
    """A fixed `COR_ACCESS_TOKEN`; nothing to refresh."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get(self) -> str:
        """The token."""
        return self._token

    def invalidate(self, token: str) -> None:
        """Nothing to do: a static token cannot be renewed."""


class ClientCredentials:
    """OAuth2 client credentials against COR's token endpoint, cached until near expiry."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_fetch: Callable[[str], None] | None = None,
    ) -> None:
        self._http = http
        self._url = token_url
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._clock = clock
        self._on_fetch = on_fetch
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        """A valid token, fetched only when the cached one is missing or near expiry."""
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._token, lifetime = await self._fetch()
                self._expires_at = self._clock() + max(lifetime - TOKEN_MARGIN_SECONDS, 0.0)
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget `token` so the next `get` fetches a new one."""
        if self._token == token:
            self._token = None

    async def _fetch(self) -> tuple[str, float]:
        try:
            reply = await self._http.post(
                self._url, params={"grant_type": "client_credentials"}, auth=self._auth
            )
        except httpx.HTTPError as exc:
            self._count("error")
            raise RetryableError(f"COR token endpoint unreachable: {type(exc).__name__}") from exc
        if not reply.is_success:
            self._count(str(reply.status_code))
            raise _error_from(reply, "COR token endpoint")
        try:
            body = reply.json()
            token, expires_in = body["access_token"], body.get("expires_in")
            lifetime = 3600.0 if expires_in is None else float(expires_in)
        except (ValueError, KeyError, TypeError) as exc:
            self._count("bad_reply")
            raise RetryableError("COR token endpoint sent no access_token") from exc
        # A null or empty token would otherwise be sent as "Bearer None" until it expired.
        if not isinstance(token, str) or not token or not math.isfinite(lifetime):
            self._count("bad_reply")
            raise RetryableError("COR token endpoint sent no access_token")
        self._count("ok")
        log.info("cor_token_fetched", expires_in=lifetime)
        return token, lifetime

    def _count(self, outcome: str) -> None:
        if self._on_fetch is not None:
            self._on_fetch(outcome)


class CorClient:
    """Detaches workspaces from COR users."""

    def __init__(self, http: httpx.AsyncClient, api_url: str, tokens: TokenSource) -> None:
        self._http = http
        self._api_url = api_url.rstrip("/")
        self._tokens = tokens

    async def detach(self, user_id: str, workspaces: list[str], source: str) -> DetachResult:
        """`PUT /v2/integrations/users/{user_id}/detach`; re-fetches the token once on 401."""
        url = f"{self._api_url}/v2/integrations/users/{quote(user_id, safe='')}/detach"
        body = {"workspaces": workspaces, "metadata": {"source": source}}
        for first_try in (True, False):
            token = await self._tokens.get()
            try:
                reply = await self._http.put(
                    url, json=body, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.TimeoutException as exc:
                raise RetryableError(f"COR timed out ({type(exc).__name__})") from exc
            except httpx.HTTPError as exc:
                raise RetryableError(f"COR unreachable ({type(exc).__name__})") from exc
            if reply.status_code == 401 and first_try:
                log.info("cor_unauthorized_refetching_token")
                self._tokens.invalidate(token)
                continue
            if reply.is_success:
                return DetachResult(reply.status_code, _remaining_workspaces(reply))
            raise _error_from(reply, "COR")
        raise AssertionError("unreachable")  # pragma: no cover


def _remaining_workspaces(reply: httpx.Response) -> list[str]:
    """The external ids of the workspaces COR says the user still has."""
    try:
        body = reply.json()
    except ValueError:
        return []
    listed = body.get("workspaces") if isinstance(body, dict) else None
    remaining = []
    for ws in listed if isinstance(listed, list) else []:
        if not isinstance(ws, dict):
            continue
        integration = ws.get("json_integrations") or {}
        ext = integration.get("origin_external_id") if isinstance(integration, dict) else None
        if ext is None:
            ext = ws.get("id")
        if ext is not None:  # neither id: nothing we could match, and never the text "None"
            remaining.append(str(ext))
    return remaining


def _error_from(reply: httpx.Response, who: str) -> RetryableError | PermanentError:
    """Turn a non-2xx reply into our error, keeping COR's code and message (never its secrets).

    Refused credentials (any token endpoint error, a 401 that survives a fresh token) are the
    bridge's problem, not the job's: retried with backoff until an operator fixes them, so a
    wrong secret does not turn every pending removal into a dead letter within minutes.
    """
    code, message = _cor_error_body(reply)
    text = f"{who} answered {reply.status_code}" + (f" {code}" if code else "")
    text += f": {message}" if message else ""
    credentials = who.endswith("token endpoint") or reply.status_code == 401
    if reply.status_code in RETRYABLE_STATUS or credentials:
        return RetryableError(
            text,
            status=reply.status_code,
            code=code,
            retry_after=parse_retry_after(reply.headers.get("Retry-After")),
        )
    return PermanentError(text, status=reply.status_code, code=code)


def _cor_error_body(reply: httpx.Response) -> tuple[str | None, str | None]:
    try:
        body: Any = reply.json()
    except ValueError:
        return None, (reply.text[:200] or None)
    if not isinstance(body, dict):
        return None, None
    code = body.get("code")
    # COR's own errors say "message"; an OAuth2 token endpoint says "error_description".
    message = body.get("message") or body.get("error_description")
    if code is None and isinstance(body.get("error"), str):
        code = body["error"]
    return (str(code) if code is not None else None), (str(message)[:500] if message else None)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "nan" and "inf" parse as floats but are no delay; NaN would break the scheduler.
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
