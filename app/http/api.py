"""One authorised request to an outside API: the token, the one 401 re-fetch, our errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from app.errors import RetryableError
from app.http.replies import error_from
from app.http.tokens import Tokens
from app.http.transport import Direct

log = structlog.get_logger(__name__)


def bearer(token: str, method: str, url: str) -> dict[str, str]:
    """The usual `Authorization: Bearer <token>` header."""
    return {"Authorization": f"Bearer {token}"}


AuthHeaders = Callable[[str, str, str], dict[str, str]]
ErrorFactory = Callable[[httpx.Response, str], Exception]


@dataclass
class Api:
    """One outside API: its HTTP client, its credentials and how its errors read."""

    http: httpx.AsyncClient | Direct
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
