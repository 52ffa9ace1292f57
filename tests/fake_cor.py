"""A fake COR for httpx.MockTransport: records every request, serves scripted replies.

The one COR fake of the unit tests (`cor` in tests/unit/conftest.py; the in-process app of
tests/inprocess.py talks to it too). Unscripted, it behaves like COR: the token endpoint checks
Basic auth and issues numbered tokens, the detach route checks the bearer token and answers
the user with the workspaces that remain. Script a reply with `script_token(...)` /
`script_detach(...)`: each item is a status (answered with a COR error body), an
`httpx.Response`, or an exception to raise.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx

from tests.builders import load_fixture

API_URL = "https://integrations.cor.test"
TOKEN_URL = "https://api.cor.test/v1/oauth/token"
CLIENT_ID = "key-4711"
CLIENT_SECRET = "cs-SUPERSECRET-value"
DETACH_PREFIX = "/v2/integrations/users/"

Reply = int | httpx.Response | Exception


@dataclass(frozen=True)
class Detach:
    """One detach call as COR saw it."""

    user_id: str
    raw_path: str
    body: dict[str, Any]
    token: str | None

    @property
    def workspaces(self) -> list[str]:
        """The workspaces the call asked to detach, in the order sent."""
        return list(self.body["workspaces"])

    @property
    def path(self) -> str:
        """The path as COR routes it: escapes decoded, no query."""
        return unquote(self.raw_path.split("?")[0])


def cor_error(
    status: int,
    code: str = "ZC000",
    message: str = "Something went wrong",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A reply shaped like COR's errors."""
    body = {"status": status, "name": "CORCustomError", "code": code, "message": message}
    return httpx.Response(status, json=body, headers=headers)


class FakeCor:
    """COR's token endpoint and detach route as one async MockTransport handler."""

    def __init__(self, *, delay: float = 0.0, lifetime: float = 3600) -> None:
        self.requests: list[httpx.Request] = []
        self.detaches: list[Detach] = []
        self.token_requests: list[httpx.Request] = []
        self.issued: list[str] = []
        self.valid: set[str] = set()
        # External user id -> the workspaces COR holds for them.
        self.users: dict[str, set[str]] = {}
        # Workspaces COR does not know the user in: a detach naming one answers 400 ZC001.
        self.refuse: set[str] = set()
        # Users COR does not know: a detach for one answers 400 ZC001.
        self.unknown: set[str] = set()
        self.delay = delay
        self.lifetime = lifetime
        self.in_flight = 0
        self.max_in_flight = 0
        self.on_detach: Callable[[Detach], None] | None = None
        self._token_script: deque[Reply] = deque()
        self._detach_script: deque[Reply] = deque()

    def script_token(self, *replies: Reply) -> None:
        """Answer the next token requests with these, in order."""
        self._token_script.extend(replies)

    def script_detach(self, *replies: Reply) -> None:
        """Answer the next detach calls with these, in order."""
        self._detach_script.extend(replies)

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working."""
        self.valid.clear()

    def sent(self) -> list[tuple[str, dict[str, Any]]]:
        """(path, body) of every detach call, in order."""
        return [(call.path, call.body) for call in self.detaches]

    @property
    def raw_paths(self) -> list[str]:
        """Every detach call's path exactly as sent (escapes kept, no query)."""
        return [call.raw_path.split("?")[0] for call in self.detaches]

    def transport(self) -> httpx.MockTransport:
        """A transport that routes an AsyncClient to this fake."""
        return httpx.MockTransport(self.handle)

    def client(self) -> httpx.AsyncClient:
        """An AsyncClient wired to this fake."""
        return httpx.AsyncClient(transport=self.transport())

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """The MockTransport handler."""
        self.requests.append(request)
        if str(request.url.copy_with(query=None)) == TOKEN_URL:
            return self._token(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return self._detach(request)
        finally:
            self.in_flight -= 1

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request)
        if self._token_script:
            return _serve(self._token_script.popleft())
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return httpx.Response(401, json=load_fixture("cor/error-unauthorized.json"))
        token = f"at-SECRET-{len(self.issued) + 1}"
        self.issued.append(token)
        self.valid.add(token)
        reply = dict(load_fixture("cor/token-response.json"))
        reply.update(access_token=token, expires_in=self.lifetime)
        return httpx.Response(200, json=reply)

    def _detach(self, request: httpx.Request) -> httpx.Response:
        raw_path = request.url.raw_path.decode()
        assert request.method == "PUT", request.method
        assert DETACH_PREFIX in raw_path and raw_path.endswith("/detach"), raw_path
        quoted = raw_path.split(DETACH_PREFIX, 1)[1].removesuffix("/detach")
        assert "/" not in quoted, f"user id not URL-encoded: {raw_path}"
        user_id = unquote(quoted)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        call = Detach(user_id, raw_path, json.loads(request.content), token)
        self.detaches.append(call)
        if self.on_detach is not None:
            self.on_detach(call)
        if self._detach_script:
            return _serve(self._detach_script.popleft())
        if token not in self.valid:
            return httpx.Response(401, json=load_fixture("cor/error-unauthorized.json"))
        if user_id in self.unknown or self.refuse & set(call.workspaces):
            return httpx.Response(400, json=load_fixture("cor/error-unknown-user.json"))
        held = self.users.setdefault(user_id, set())
        held -= set(call.workspaces)
        return httpx.Response(200, json=_user_reply(user_id, sorted(held)))


def _serve(reply: Reply) -> httpx.Response:
    if isinstance(reply, Exception):
        raise reply
    if isinstance(reply, int):
        return cor_error(reply)
    return reply


def _user_reply(user_id: str, workspaces: list[str]) -> dict[str, Any]:
    """COR's detach reply: the user, with the workspaces that remain."""
    body = dict(load_fixture("cor/detach-response.json"))
    template = body["workspaces"][0]
    body["email"] = user_id
    body["workspaces"] = [
        {
            **template,
            "id": n,
            "name": ws,
            "json_integrations": {**template["json_integrations"], "origin_external_id": ws},
        }
        for n, ws in enumerate(workspaces, start=1)
    ]
    return body
