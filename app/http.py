"""The one HTTP seam every outside API goes through: COR, Microsoft Graph and Okta.

Each client keeps only its endpoints; what they share lives here:

    segment / api_url   identifiers as exactly one path segment ("", ".", ".." refused)
    fetch_token         one OAuth2 token request: (access_token, expires_in) or our error
    CachedToken         a token fetched on demand, cached until shortly before it expires
    StaticToken         a fixed token (COR_ACCESS_TOKEN, OKTA_API_TOKEN)
    Api.send            one authorised request: network errors and non-2xx become our errors,
                        a 401 fetches a fresh token once
    error_from          a non-2xx reply as RetryableError / PermanentError / NotFoundError,
                        with the API's own code and message (never a secret)

Errors raised (see app/errors.py):
    RetryableError      429, 500, 502, 503, 504, timeouts, network errors (with the wait the
                        reply asked for: Retry-After, or Okta's X-Rate-Limit-Reset)
    PermanentError      any other non-2xx
     ├── NotFoundError  404: the object does not exist (any more)
     └── UnsafeIdentifierError  an identifier that cannot be one path segment; nothing sent
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote, unquote

import httpx
import structlog

from app.errors import PermanentError, RetryableError

log = structlog.get_logger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Fetch a new token this long before the old one expires.
TOKEN_MARGIN_SECONDS = 60.0
# The lifetime of a token whose reply does not say (OAuth2 makes expires_in optional).
DEFAULT_TOKEN_SECONDS = 3600.0
DOT_SEGMENTS = frozenset({"", ".", ".."})


class NotFoundError(PermanentError):
    """The API answered 404: the object is gone (or never existed)."""


class UnsafeIdentifierError(PermanentError):
    """An identifier that would not survive as exactly one URL path segment."""


def unsafe_segment_reason(value: str) -> str | None:
    """Why `value` cannot be a path segment, or None when it can."""
    if value in DOT_SEGMENTS:
        # Quoting leaves dots alone and URL normalisation removes dot segments: ".." would
        # move the call to another route, with the bridge's credentials.
        return f"{value!r} is not a usable identifier in a URL path (empty or a dot segment)"
    return None


def segment(value: str) -> str:
    """`value` quoted as exactly one path segment; UnsafeIdentifierError for "", ".", ".."."""
    reason = unsafe_segment_reason(value)
    if reason is not None:
        raise UnsafeIdentifierError(reason)
    return quote(value, safe="")


def api_url(base: str, *parts: str) -> str:
    """`base` followed by each part as one path segment (see `segment`)."""
    return base.rstrip("/") + "".join("/" + segment(p) for p in parts)


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


def bearer(token: str, method: str, url: str) -> dict[str, str]:
    """The usual `Authorization: Bearer <token>` header."""
    return {"Authorization": f"Bearer {token}"}


AuthHeaders = Callable[[str, str, str], dict[str, str]]
ErrorFactory = Callable[[httpx.Response, str], Exception]


def error_from(
    reply: httpx.Response,
    who: str,
    *,
    retry_credentials: bool = False,
    retry_status: Container[int] = RETRYABLE_STATUS,
) -> RetryableError | PermanentError:
    """A non-2xx reply as our error, with the API's code and message (never a secret).

    `retry_status`: the statuses worth trying again (COR adds 401; a token endpoint, every
    status). `retry_credentials`: a refused credential (401, 403) is the bridge's problem, not
    the work's: retried with backoff until an operator fixes it, never a dead letter.
    """
    code, message = error_body(reply)
    status = reply.status_code
    text = f"{who} answered {status}" + (f" {code}" if code else "")
    text += f": {message}" if message else ""
    if status in retry_status or (retry_credentials and status in (401, 403)):
        return RetryableError(text, status=status, code=code, retry_after=wait_asked(reply))
    if status == 404:
        return NotFoundError(text, status=status, code=code)
    return PermanentError(text, status=status, code=code)


def error_body(reply: httpx.Response) -> tuple[str | None, str | None]:
    """(code, message) from any of the error bodies the bridge meets.

    COR `{"code","message"}`, OAuth `{"error","error_description"}`, Graph
    `{"error": {"code","message"}}`, Okta `{"errorCode","errorSummary","errorCauses"}`.
    """
    try:
        body: Any = reply.json()
    except ValueError:
        return None, _short(reply.text, 200)  # an HTML error page says little past that
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):
        return _text(error.get("code")), _short(error.get("message"))
    code = body.get("code") or body.get("errorCode") or (error if isinstance(error, str) else None)
    message = body.get("message") or body.get("errorSummary") or body.get("error_description")
    causes = body.get("errorCauses")
    if isinstance(causes, list) and causes and isinstance(causes[0], dict):
        cause = causes[0].get("errorSummary")
        message = f"{message} ({cause})" if message and cause else message or cause
    return _text(code), _short(message)


def wait_asked(reply: httpx.Response, now: datetime | None = None) -> float | None:
    """Seconds the reply asks to wait: Retry-After, else Okta's X-Rate-Limit-Reset on a 429."""
    after = parse_retry_after(reply.headers.get("Retry-After"), now)
    if after is not None or reply.status_code != 429:
        return after
    return seconds_until_reset(reply.headers.get("X-Rate-Limit-Reset"), now)


def seconds_until_reset(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds until an epoch-seconds reset time (Okta's X-Rate-Limit-Reset)."""
    try:
        reset = float(value) if value else math.nan
    except ValueError:
        return None
    if not math.isfinite(reset):
        return None
    return max(reset - (now or datetime.now(UTC)).timestamp(), 0.0)


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


@dataclass
class Api:
    """One outside API: its HTTP client, its credentials and how its errors read."""

    http: httpx.AsyncClient
    name: str
    tokens: Tokens
    auth: AuthHeaders = bearer
    errors: ErrorFactory = error_from
    # Name the method and path in errors ("Graph GET /v1.0/users/..."); an API of one
    # endpoint (COR) reads better without.
    path_in_errors: bool = True

    async def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request with credentials; a 2xx reply, or our error. A 401 re-fetches once."""
        extra = kwargs.pop("headers", None) or {}
        for first_try in (True, False):
            token = await self.tokens.get()
            headers = {**extra, **self.auth(token, method, url)}
            try:
                reply = await self.http.request(method, url, headers=headers, **kwargs)
            except httpx.TimeoutException as exc:
                raise RetryableError(f"{self.name} timed out ({type(exc).__name__})") from exc
            except httpx.HTTPError as exc:
                raise RetryableError(f"{self.name} unreachable ({type(exc).__name__})") from exc
            if reply.status_code == 401 and first_try:
                log.info("unauthorized_refetching_token", api=self.name)
                self.tokens.invalidate(token)
                continue
            if reply.is_success:
                return reply
            who = self.name
            if self.path_in_errors:  # as sent: an id "a/b" reads a%2Fb, not as two segments
                who += f" {method} {httpx.URL(url).raw_path.decode('ascii').split('?')[0]}"
            raise self.errors(reply, who)
        raise AssertionError("unreachable")  # pragma: no cover


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


def json_object(reply: httpx.Response, who: str) -> dict[str, Any]:
    """A reply's JSON object ({} for an empty reply); RetryableError when it is not one."""
    if reply.status_code == 204 or not reply.content:
        return {}
    try:
        body = reply.json()
    except ValueError as exc:
        raise RetryableError(f"{who} sent a reply that is not JSON ({reply.status_code})") from exc
    if not isinstance(body, dict):
        raise RetryableError(f"{who} sent a reply that is not a JSON object")
    return body


def same_origin(base: str, url: str) -> bool:
    """Whether `url` is under `base` (a paging link must never take the token elsewhere)."""
    prefix = base.rstrip("/") + "/"
    if not url.startswith(prefix):
        return False
    # A dot segment, plain or percent-encoded, would climb out of `base` on the same host.
    path = url[len(prefix) :].split("?", 1)[0].split("#", 1)[0]
    return not any(unquote(part) in (".", "..") for part in path.split("/"))


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and str(value) else None


def _short(value: Any, limit: int = 300) -> str | None:
    return str(value)[:limit] if value else None
