"""The Graph client: the only code that speaks HTTP to Microsoft Graph (through app/http/).

Tokens come from the Microsoft identity platform's client-credentials grant and are cached
until shortly before they expire. Errors raised (see app/errors.py):

    RetryableError     429, 500, 502, 503, 504, timeouts and network errors (with Retry-After);
                       401 and 403 too: a credential or permission an operator must fix,
                       waited for (until BRIDGE_MAX_AGE_SECONDS), never a dead letter at once
                       and whatever the token endpoint refuses, for the same reason
    PermanentError     any other non-2xx
     ├── NotFoundError 404: the user, group or subscription does not exist (any more)
     └── UnsafeIdentifierError  an id that cannot be one path segment: nothing is sent

A 401 from Graph fetches a fresh token once before it counts as an error.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from app.changes import GroupRef, UserRef
from app.errors import PermanentError, RetryableError
from app.http import Api, CachedToken, api_url, error_from, fetch_token, json_object, same_origin

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
GROUP_TYPE = "#microsoft.graph.group"
# Graph pages directory lists at 100 by default; 999 is its ceiling and saves round trips.
PAGE_SIZE = 999
MAX_PAGES = 100
DELTA_SELECT = "displayName,members"


@dataclass(frozen=True)
class DeltaPage:
    """One page of a groups delta query: group objects, and where to go next."""

    groups: list[dict[str, Any]]
    next_url: str | None
    delta_url: str | None


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
        base_url: str,
        login_url: str,
        credentials: GraphCredentials,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = base_url
        token_url = api_url(login_url, credentials.tenant_id, "oauth2", "v2.0", "token")
        form = {
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret,
            "scope": GRAPH_SCOPE,
            "grant_type": "client_credentials",
        }

        async def fetch() -> tuple[str, float]:
            who = "Microsoft identity platform token endpoint"
            # Refused credentials are the bridge's (an operator fixes them), not the entry's.
            return await fetch_token(http, token_url, who, retry_status=range(100, 600), data=form)

        self._api = Api(http, "Graph", CachedToken(fetch, clock=clock), errors=_graph_error)

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
        return _subscription(await self._call("POST", self._url("subscriptions"), json=body))

    async def renew_subscription(self, subscription_id: str, expires_at: datetime) -> Subscription:
        """PATCH the expiry of a subscription (which also reauthorizes it)."""
        body = {"expirationDateTime": _graph_time(expires_at)}
        url = self._url("subscriptions", subscription_id)
        return _subscription(await self._call("PATCH", url, json=body))

    async def reauthorize_subscription(self, subscription_id: str) -> None:
        """Answer a reauthorizationRequired challenge without changing the expiry."""
        await self._call("POST", self._url("subscriptions", subscription_id, "reauthorize"))

    async def list_subscriptions(self) -> list[Subscription]:
        """Every subscription this app owns in the tenant."""
        return [_subscription(item) async for item in self._pages(self._url("subscriptions"), {})]

    async def get_group(self, group_id: str) -> GroupRef:
        """A group's id and display name."""
        url = self._url("groups", group_id)
        body = await self._call("GET", url, params={"$select": "id,displayName"})
        return GroupRef(id=group_id, name=_text(body.get("displayName")))

    async def find_groups(self, display_name: str) -> list[GroupRef]:
        """The groups with exactly this display name (names are not unique in Entra)."""
        quoted = display_name.replace("'", "''")
        params = {"$filter": f"displayName eq '{quoted}'", "$select": "id,displayName"}
        return [
            GroupRef(id=str(item["id"]), name=_text(item.get("displayName")))
            async for item in self._pages(self._url("groups"), params)
            if item.get("id")
        ]

    async def get_user(self, user_id: str) -> UserRef:
        """A user's object id, userPrincipalName (as login) and mail (as email)."""
        url = self._url("users", user_id)
        body = await self._call("GET", url, params={"$select": "id,userPrincipalName,mail"})
        return UserRef(
            id=user_id, login=_text(body.get("userPrincipalName")), email=_text(body.get("mail"))
        )

    async def transitive_groups(self, user_id: str) -> tuple[GroupRef, ...]:
        """Every group the user is in, directly or through nested groups (roles left out)."""
        url = self._url("users", user_id, "transitiveMemberOf")
        params = {"$select": "id,displayName", "$top": str(PAGE_SIZE)}
        groups = [
            GroupRef(id=str(item["id"]), name=_text(item.get("displayName")))
            async for item in self._pages(url, params)
            if item.get("@odata.type") == GROUP_TYPE and item.get("id")
        ]
        return tuple(dict.fromkeys(groups))

    async def group_delta(self, link: str | None, group_ids: Sequence[str]) -> DeltaPage:
        """One page of GET /groups/delta over these groups: from the start, or from `link`
        (a nextLink or deltaLink Graph gave, followed on Graph's own host only)."""
        if link is None:
            ids = " or ".join(f"id eq '{gid.replace(chr(39), chr(39) * 2)}'" for gid in group_ids)
            url, params = self._url("groups", "delta"), {"$filter": ids, "$select": DELTA_SELECT}
            body = await self._call("GET", url, params=params)
        else:
            # The bearer token must never travel to another host, whatever a reply says.
            if not same_origin(self._base, link):
                raise PermanentError(f"Graph sent a delta link outside {self._base}")
            body = await self._call("GET", link)
        next_url, delta_url = body.get("@odata.nextLink"), body.get("@odata.deltaLink")
        for found in (next_url, delta_url):
            if found is not None and not same_origin(self._base, str(found)):
                raise PermanentError(f"Graph sent a delta link outside {self._base}")
        if next_url is None and delta_url is None:
            raise PermanentError("Graph sent a delta page with neither nextLink nor deltaLink")
        groups = [g for g in body.get("value") or [] if isinstance(g, dict) and g.get("id")]
        return DeltaPage(
            groups, str(next_url) if next_url else None, str(delta_url) if delta_url else None
        )

    def _url(self, *parts: str) -> str:
        # Every id is exactly one path segment: "/users/.." must never become "/users".
        return api_url(self._base, *parts)

    async def _pages(self, url: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Each item of a collection, following @odata.nextLink on Graph's own host only."""
        first, next_url = url, url
        query: dict[str, str] | None = params
        for _ in range(MAX_PAGES):
            body = await self._call("GET", next_url, params=query)
            for item in body.get("value") or []:
                if isinstance(item, dict):
                    yield item
            link, query = body.get("@odata.nextLink"), None
            if link is None:
                return
            # The bearer token must never travel to another host, whatever a reply says.
            if not same_origin(self._base, str(link)):
                raise PermanentError(f"Graph sent a nextLink outside {self._base}")
            next_url = str(link)
        raise PermanentError(f"Graph kept paging {httpx.URL(first).path} past {MAX_PAGES} pages")

    async def _call(
        self, method: str, url: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        reply = await self._api.send(method, url, json=json, params=params)
        return json_object(reply, "Graph")


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


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value else None


def _graph_error(reply: httpx.Response, who: str) -> RetryableError | PermanentError:
    # A refused credential or a permission not granted (yet) is the operator's to fix: wait.
    return error_from(reply, who, retry_credentials=True)
