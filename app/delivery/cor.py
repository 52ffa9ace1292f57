"""The COR client: the only code that speaks HTTP to COR (through app/http/).

Errors raised (see app/errors.py):
    RetryableError  429, 500, 502, 503, 504, timeouts and network errors (with Retry-After);
                    any error of the token endpoint, a token reply that carries no token,
                    and a 401 that survives one fresh token (refused credentials wait for an
                    operator, see `cor_error`)
    PermanentError  any other non-2xx of the detach call
     └── UnsafeIdentifierError  a user id that cannot be one path segment: nothing is sent
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from app.errors import PermanentError, RetryableError
from app.http import RETRYABLE_STATUS, Api, CachedToken, Tokens, api_url, error_from, fetch_token
from app.http.transport import Direct

# Every status: a token request COR refuses is the bridge's credentials, not the job.
TOKEN_RETRY_STATUS = range(100, 600)
# A 401 that survives a fresh token is the bridge's credentials too.
DETACH_RETRY_STATUS = RETRYABLE_STATUS | {401}


@dataclass(frozen=True)
class DetachResult:
    """COR's answer to a detach: the workspaces the user still has."""

    status: int
    remaining: list[str]


class ClientCredentials(CachedToken):
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
        async def fetch() -> tuple[str, float]:
            # COR takes the grant type in the query and the key and secret as Basic auth.
            return await fetch_token(
                http,
                token_url,
                "COR token endpoint",
                on_fetch=on_fetch,
                retry_status=TOKEN_RETRY_STATUS,
                params={"grant_type": "client_credentials"},
                auth=httpx.BasicAuth(client_id, client_secret),
            )

        super().__init__(fetch, clock=clock)


def cor_error(reply: httpx.Response, who: str) -> RetryableError | PermanentError:
    """Turn a non-2xx detach reply into our error, keeping COR's code and message.

    Refused credentials (a 401 that survives a fresh token) are the bridge's problem, not the
    job's: retried with backoff until an operator fixes them, so a wrong secret does not turn
    every pending removal into a dead letter within minutes.
    """
    return error_from(reply, who, retry_status=DETACH_RETRY_STATUS)


class CorClient:
    """Detaches workspaces from COR users."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        tokens: Tokens,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`transport`: the one `http` sends through, given when no proxy is mounted for COR
        (app/http/transport.py, `cor_transport`): detaches then go to it straight, without
        httpx's client layer (~0.1 ms of CPU a call); the token endpoint always goes by `http`."""
        self._base = base_url
        sender = http if transport is None else Direct(http, transport)
        self._api = Api(sender, "COR", tokens, errors=cor_error, path_in_errors=False)

    async def detach(self, user_id: str, workspaces: list[str], source: str) -> DetachResult:
        """`PUT /v2/integrations/users/{user_id}/detach`; re-fetches the token once on 401."""
        # UnsafeIdentifierError for "", "." and "..": never a call to another route.
        url = api_url(self._base, "v2", "integrations", "users", user_id, "detach")
        body = {"workspaces": workspaces, "metadata": {"source": source}}
        reply = await self._api.send("PUT", url, json=body)
        return DetachResult(reply.status_code, _remaining_workspaces(reply))


def _remaining_workspaces(reply: httpx.Response) -> list[str]:
    """The external ids of the workspaces COR says the user still has."""
    try:
        body: Any = reply.json()
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
