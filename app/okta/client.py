"""The Okta Management API client: read-only, the only code that speaks HTTP to Okta.

Users and their groups, a group's members (paged by `Link: rel="next"`), and the System Log
as a polling request. Every reply's `X-Rate-Limit-*` headers are kept per endpoint: when a
bucket runs low the next call waits for its reset, so a burst of removals never trips
Okta's limits. Errors (app/http/): 429/5xx/network -> RetryableError (a 429 waits until
`X-Rate-Limit-Reset`), 401/403 -> RetryableError (a credential for an operator to fix;
nothing is decided on a guess meanwhile), 404 -> NotFoundError, others -> PermanentError.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from app.changes import GroupRef, UserRef
from app.errors import PermanentError, RetryableError
from app.http import Api, AuthHeaders, Tokens, api_url, error_from, same_origin

log = structlog.get_logger(__name__)

PAGE_SIZE = 200  # Okta's ceiling for a group's members and a user's groups
LOG_PAGE_SIZE = 1000  # the System Log's ceiling
MAX_PAGES = 10_000
# Keep this share of a bucket for everything else that uses the same token.
RESERVE = 0.1
MAX_PACING_SECONDS = 60.0


@dataclass(frozen=True)
class OktaUser:
    """A user as Okta reports them now."""

    id: str
    status: str
    login: str | None

    @property
    def deprovisioned(self) -> bool:
        """A deactivated user: granted nothing, whatever groups Okta still lists."""
        return self.status == "DEPROVISIONED"


@dataclass(frozen=True)
class LogPage:
    """One page of a System Log polling request and the link to ask next."""

    events: list[dict[str, Any]]
    next_url: str


class RateGate:
    """What Okta said of each rate-limit bucket; waits before a call that would run it dry."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._resume_at: dict[str, float] = {}

    async def wait(self, bucket: str) -> None:
        """Sleep until the bucket's reset if the last reply said it was nearly empty."""
        delay = self._resume_at.get(bucket, 0.0) - self._clock()
        if delay > 0:
            log.info("okta_rate_limit_pacing", bucket=bucket, seconds=round(delay, 1))
            await asyncio.sleep(min(delay, MAX_PACING_SECONDS))

    def pause(self, bucket: str, seconds: float) -> None:
        """Okta answered 429: nothing more in this bucket for `seconds`."""
        self._resume_at[bucket] = max(self._resume_at.get(bucket, 0.0), self._clock() + seconds)

    def note(self, bucket: str, headers: httpx.Headers) -> None:
        """Remember a reply's X-Rate-Limit-* headers."""
        try:
            limit = int(headers["X-Rate-Limit-Limit"])
            remaining = int(headers["X-Rate-Limit-Remaining"])
            reset = float(headers["X-Rate-Limit-Reset"])
        except (KeyError, ValueError):
            return
        low = remaining <= max(1, int(limit * RESERVE))
        self._resume_at[bucket] = reset if low else 0.0


def _okta_error(reply: httpx.Response, who: str) -> Exception:
    return error_from(reply, who, retry_credentials=True)


class OktaClient:
    """Read-only calls to one Okta org's Management API."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        org_url: str,
        tokens: Tokens,
        auth: AuthHeaders,
        *,
        gate: RateGate | None = None,
        dpop: httpx.Auth | None = None,
    ) -> None:
        self._org = org_url.rstrip("/")
        self._dpop = dpop  # a service app that requires DPoP: a proof on every call
        self._api = Api(http, "Okta", tokens, auth=auth, errors=_okta_error)
        self._gate = gate or RateGate()
        self.last_success: float | None = None
        self.last_error: str | None = None

    async def get_user(self, user_id: str) -> OktaUser:
        """`GET /api/v1/users/{id}`: status and login; NotFoundError for a deleted user."""
        body = await self._get_object(api_url(self._org, "api", "v1", "users", user_id))
        profile = body.get("profile") if isinstance(body.get("profile"), dict) else {}
        login = profile.get("login") if isinstance(profile, dict) else None
        return OktaUser(
            id=user_id,
            status=str(body.get("status") or "UNKNOWN"),
            login=login if isinstance(login, str) else None,
        )

    async def user_groups(self, user_id: str) -> tuple[GroupRef, ...]:
        """`GET /api/v1/users/{id}/groups`: every group the user is in now."""
        url = api_url(self._org, "api", "v1", "users", user_id, "groups")
        groups = [_group(item) async for item in self._items(url, {"limit": str(PAGE_SIZE)})]
        return tuple(dict.fromkeys(g for g in groups if g is not None))

    async def group_members(self, group_id: str) -> AsyncIterator[UserRef]:
        """`GET /api/v1/groups/{id}/users`, every page; NotFoundError for a deleted group."""
        url = api_url(self._org, "api", "v1", "groups", group_id, "users")
        async for item in self._items(url, {"limit": str(PAGE_SIZE)}):
            user = _user(item)
            if user is not None:
                yield user

    async def find_groups(self, name: str) -> list[GroupRef]:
        """`GET /api/v1/groups?q=`: the groups named exactly `name` (q matches a prefix)."""
        url = api_url(self._org, "api", "v1", "groups")
        found = [_group(item) async for item in self._items(url, {"q": name, "limit": "200"})]
        return [g for g in found if g is not None and g.name == name]

    def first_log_url(self, since: str, event_types: tuple[str, ...]) -> str:
        """A System Log polling request from `since` (ISO 8601) for these event types."""
        return log_url(self._org, since, event_types)

    async def log_page(self, url: str) -> LogPage:
        """One page of a polling request; its `rel="next"` link is where to go on from."""
        self._check_origin(url)
        reply = await self._send(url, None)
        try:
            body = reply.json()
        except ValueError as exc:
            raise RetryableError("Okta sent a System Log page that is not JSON") from exc
        if not isinstance(body, list):
            raise RetryableError("Okta sent a System Log page that is not a JSON list")
        next_url = reply.links.get("next", {}).get("url")
        if not next_url:
            # A polling request always links on; without it the position would be lost.
            raise RetryableError("Okta sent a System Log page without a rel=next link")
        self._check_origin(next_url)
        return LogPage([e for e in body if isinstance(e, dict)], next_url)

    async def _get_object(self, url: str) -> dict[str, Any]:
        reply = await self._send(url, None)
        try:
            body = reply.json()
        except ValueError as exc:
            raise RetryableError("Okta sent a reply that is not JSON") from exc
        if not isinstance(body, dict):
            raise RetryableError("Okta sent a reply that is not a JSON object")
        return body

    async def _items(self, url: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Each item of a paged list, following `Link: rel="next"` on the org's host only."""
        query: dict[str, str] | None = params
        next_url: str | None = url
        for _ in range(MAX_PAGES):
            if next_url is None:
                return
            reply = await self._send(next_url, query)
            try:
                body = reply.json()
            except ValueError as exc:
                raise RetryableError("Okta sent a page that is not JSON") from exc
            for item in body if isinstance(body, list) else []:
                if isinstance(item, dict):
                    yield item
            next_url, query = reply.links.get("next", {}).get("url"), None
            if next_url is not None:
                self._check_origin(next_url)
        raise PermanentError(f"Okta kept paging {httpx.URL(url).path} past {MAX_PAGES} pages")

    async def _send(self, url: str, params: dict[str, str] | None) -> httpx.Response:
        bucket = _bucket(url)
        await self._gate.wait(bucket)
        try:
            extra = {"auth": self._dpop} if self._dpop is not None else {}
            reply = await self._api.send("GET", url, params=params, **extra)
        except RetryableError as exc:
            self.last_error = exc.message
            if exc.status == 429 and exc.retry_after is not None:
                # Every call in this bucket waits for the reset, not just this one's retry.
                self._gate.pause(bucket, exc.retry_after)
            raise
        except PermanentError as exc:
            if exc.status != 404:
                self.last_error = exc.message
            raise
        self._gate.note(bucket, reply.headers)
        self.last_success = time.time()
        return reply

    def _check_origin(self, url: str) -> None:
        # The token must never travel to another host, whatever a reply says.
        if not same_origin(self._org, url):
            raise PermanentError(f"Okta sent a link outside {self._org}")


def log_url(org_url: str, since: str, event_types: tuple[str, ...]) -> str:
    """`{org}/api/v1/logs` as a polling request from `since` for these event types."""
    wanted = " or ".join(f'eventType eq "{t}"' for t in event_types)
    params = {"since": since, "sortOrder": "ASCENDING", "limit": str(LOG_PAGE_SIZE)}
    params["filter"] = wanted
    return str(httpx.URL(api_url(org_url, "api", "v1", "logs"), params=params))


def _bucket(url: str) -> str:
    """Okta's rate limits are per endpoint: /api/v1/users, /api/v1/groups, /api/v1/logs."""
    parts = httpx.URL(url).path.split("/")
    return "/".join(parts[:4])


def _group(item: dict[str, Any]) -> GroupRef | None:
    profile = item.get("profile") if isinstance(item.get("profile"), dict) else {}
    name = profile.get("name") if isinstance(profile, dict) else None
    group_id = item.get("id")
    if not isinstance(group_id, str) or not group_id:
        return None
    return GroupRef(id=group_id, name=name if isinstance(name, str) and name else None)


def _user(item: dict[str, Any]) -> UserRef | None:
    profile = item.get("profile") if isinstance(item.get("profile"), dict) else {}
    login = profile.get("login") if isinstance(profile, dict) else None
    user_id = item.get("id")
    if not isinstance(user_id, str) or not user_id:
        return None
    login = login if isinstance(login, str) and login else None
    return UserRef(id=user_id, login=login, email=login if login and "@" in login else None)
