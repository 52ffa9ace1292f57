"""The Graph client: the only code that speaks HTTP to Microsoft Graph.

Tokens come from the Microsoft identity platform's client-credentials grant and are cached
until shortly before they expire. Errors raised (see app/errors.py):

    RetryableError     429, 500, 502, 503, 504, timeouts and network errors (with Retry-After)
    PermanentError     any other non-2xx, token endpoint included
     └── GraphNotFoundError 404: the user, group or subscription does not exist (any more)

A 401 from Graph fetches a fresh token once before it counts as permanent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from app.changes import GroupRef, UserRef
from app.delivery.cor import RETRYABLE_STATUS, TOKEN_MARGIN_SECONDS, parse_retry_after
from app.errors import PermanentError, RetryableError

log = structlog.get_logger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
GROUP_TYPE = "#microsoft.graph.group"
# Graph pages directory lists at 100 by default; 999 is its ceiling and saves round trips.
PAGE_SIZE = 999
MAX_PAGES = 100


class GraphNotFoundError(PermanentError):
    """Graph answered 404: the object is gone (or never existed)."""


@dataclass(frozen=True)
class Subscription:
    """A Graph subscription as Graph reports it."""

    id: str
    resource: str
    expires_at: datetime
    notification_url: str | None = None


@dataclass(frozen=True)
class GraphCredentials:
    """An app registration's client credentials in one tenant."""

    tenant_id: str
    client_id: str
    client_secret: str


class GraphClient:
    """Subscriptions and directory lookups against one tenant's Graph."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_url: str,
        login_url: str,
        credentials: GraphCredentials,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._api = api_url.rstrip("/")
        self._token_url = (
            f"{login_url.rstrip('/')}/{quote(credentials.tenant_id, safe='')}/oauth2/v2.0/token"
        )
        self._credentials = credentials
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def create_subscription(
        self,
        resource: str,
        *,
        notification_url: str,
        lifecycle_url: str | None,
        client_state: str,
        expires_at: datetime,
    ) -> Subscription:
        """POST /subscriptions (changeType updated); Graph validates the URLs first."""
        body: dict[str, Any] = {
            "changeType": "updated",
            "notificationUrl": notification_url,
            "resource": resource,
            "expirationDateTime": _graph_time(expires_at),
            "clientState": client_state,
        }
        if lifecycle_url:
            body["lifecycleNotificationUrl"] = lifecycle_url
        return _subscription(await self._call("POST", "/subscriptions", json=body))

    async def renew_subscription(self, subscription_id: str, expires_at: datetime) -> Subscription:
        """PATCH the expiry of a subscription (which also reauthorizes it)."""
        body = {"expirationDateTime": _graph_time(expires_at)}
        path = f"/subscriptions/{quote(subscription_id, safe='')}"
        return _subscription(await self._call("PATCH", path, json=body))

    async def reauthorize_subscription(self, subscription_id: str) -> None:
        """Answer a reauthorizationRequired challenge without changing the expiry."""
        await self._call("POST", f"/subscriptions/{quote(subscription_id, safe='')}/reauthorize")

    async def list_subscriptions(self) -> list[Subscription]:
        """Every subscription this app owns in the tenant."""
        return [_subscription(item) async for item in self._pages("/subscriptions", {})]

    async def get_group(self, group_id: str) -> GroupRef:
        """A group's id and display name."""
        path = f"/groups/{quote(group_id, safe='')}"
        body = await self._call("GET", path, params={"$select": "id,displayName"})
        return GroupRef(id=group_id, name=_text(body.get("displayName")))

    async def find_groups(self, display_name: str) -> list[GroupRef]:
        """The groups with exactly this display name (names are not unique in Entra)."""
        quoted = display_name.replace("'", "''")
        params = {"$filter": f"displayName eq '{quoted}'", "$select": "id,displayName"}
        return [
            GroupRef(id=str(item["id"]), name=_text(item.get("displayName")))
            async for item in self._pages("/groups", params)
            if item.get("id")
        ]

    async def get_user(self, user_id: str) -> UserRef:
        """A user's object id, userPrincipalName (as login) and mail (as email)."""
        path = f"/users/{quote(user_id, safe='')}"
        body = await self._call("GET", path, params={"$select": "id,userPrincipalName,mail"})
        return UserRef(
            id=user_id, login=_text(body.get("userPrincipalName")), email=_text(body.get("mail"))
        )

    async def transitive_groups(self, user_id: str) -> tuple[GroupRef, ...]:
        """Every group the user is in, directly or through nested groups (roles left out)."""
        path = f"/users/{quote(user_id, safe='')}/transitiveMemberOf"
        params = {"$select": "id,displayName", "$top": str(PAGE_SIZE)}
        groups = [
            GroupRef(id=str(item["id"]), name=_text(item.get("displayName")))
            async for item in self._pages(path, params)
            if item.get("@odata.type") == GROUP_TYPE and item.get("id")
        ]
        return tuple(dict.fromkeys(groups))

    async def _pages(self, path: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Each item of a collection, following @odata.nextLink on Graph's own host only."""
        url: str | None = self._api + path
        query: dict[str, str] | None = params
        for _ in range(MAX_PAGES):
            if url is None:
                return
            body = await self._call("GET", url, params=query, absolute=True)
            for item in body.get("value") or []:
                if isinstance(item, dict):
                    yield item
            url, query = body.get("@odata.nextLink"), None
            # The bearer token must never travel to another host, whatever a reply says.
            if url is not None and not str(url).startswith(self._api + "/"):
                raise PermanentError(f"Graph sent a nextLink outside {self._api}")
        raise PermanentError(f"Graph kept paging {path} past {MAX_PAGES} pages")

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        absolute: bool = False,
    ) -> dict[str, Any]:
        url = path if absolute else self._api + path
        for first_try in (True, False):
            token = await self._get_token()
            try:
                reply = await self._http.request(
                    method, url, json=json, params=params, headers=_auth(token)
                )
            except httpx.TimeoutException as exc:
                raise RetryableError(f"Graph timed out ({type(exc).__name__})") from exc
            except httpx.HTTPError as exc:
                raise RetryableError(f"Graph unreachable ({type(exc).__name__})") from exc
            if reply.status_code == 401 and first_try:
                log.info("graph_unauthorized_refetching_token")
                self._forget(token)
                continue
            if reply.is_success:
                return _json_object(reply)
            raise graph_error(reply, f"Graph {method} {_path_only(url)}")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get_token(self) -> str:
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._token, lifetime = await self._fetch_token()
                self._expires_at = self._clock() + max(lifetime - TOKEN_MARGIN_SECONDS, 0.0)
            return self._token

    def _forget(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def _fetch_token(self) -> tuple[str, float]:
        form = {
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret,
            "scope": GRAPH_SCOPE,
            "grant_type": "client_credentials",
        }
        try:
            reply = await self._http.post(self._token_url, data=form)
        except httpx.HTTPError as exc:
            raise RetryableError(f"Graph token endpoint unreachable: {type(exc).__name__}") from exc
        if not reply.is_success:
            raise graph_error(reply, "Microsoft identity platform token endpoint")
        body = _json_object(reply)
        token, expires_in = body.get("access_token"), body.get("expires_in", 3600)
        try:
            lifetime = float(expires_in)
        except (TypeError, ValueError):
            lifetime = 3600.0
        if not isinstance(token, str) or not token:
            raise RetryableError("Graph token endpoint sent no access_token")
        log.info("graph_token_fetched", expires_in=lifetime)
        return token, lifetime


def graph_error(reply: httpx.Response, who: str) -> RetryableError | PermanentError:
    """A non-2xx reply as our error, with Graph's error code and message (never a secret)."""
    code, message = _error_body(reply)
    text = f"{who} answered {reply.status_code}" + (f" {code}" if code else "")
    text += f": {message}" if message else ""
    if reply.status_code in RETRYABLE_STATUS:
        retry_after = parse_retry_after(reply.headers.get("Retry-After"))
        return RetryableError(text, status=reply.status_code, code=code, retry_after=retry_after)
    if reply.status_code == 404:
        return GraphNotFoundError(text, status=404, code=code)
    return PermanentError(text, status=reply.status_code, code=code)


def _error_body(reply: httpx.Response) -> tuple[str | None, str | None]:
    try:
        body = reply.json()
    except ValueError:
        return None, (reply.text[:200] or None)
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):  # Graph: {"error": {"code": ..., "message": ...}}
        return _text(error.get("code")), _short(error.get("message"))
    # The identity platform: {"error": "invalid_client", "error_description": "AADSTS..."}
    return _text(error), _short(body.get("error_description"))


def _json_object(reply: httpx.Response) -> dict[str, Any]:
    if reply.status_code == 204 or not reply.content:
        return {}
    try:
        body = reply.json()
    except ValueError as exc:
        raise RetryableError(f"Graph sent a reply that is not JSON ({reply.status_code})") from exc
    if not isinstance(body, dict):
        raise RetryableError("Graph sent a reply that is not a JSON object")
    return body


def _subscription(body: dict[str, Any]) -> Subscription:
    try:
        expires = datetime.fromisoformat(str(body["expirationDateTime"]).replace("Z", "+00:00"))
        return Subscription(
            id=str(body["id"]),
            resource=str(body.get("resource") or ""),
            expires_at=expires if expires.tzinfo else expires.replace(tzinfo=UTC),
            notification_url=_text(body.get("notificationUrl")),
        )
    except (KeyError, ValueError) as exc:
        raise PermanentError(f"Graph sent a subscription without id or expiry: {exc}") from exc


def _graph_time(when: datetime) -> str:
    """ISO 8601 in UTC with a Z, as Graph's examples write it."""
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _path_only(url: str) -> str:
    return httpx.URL(url).path


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value else None


def _short(value: Any) -> str | None:
    return str(value)[:300] if value else None
