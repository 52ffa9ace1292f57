"""The bridge in process: the real app and lifespan over ASGI, with COR faked by MockTransport."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.types import ASGIApp

from app.main import create_app
from app.server import server_config
from app.settings import Settings
from tests.builders import load_fixture
from tests.conftest import MAPPING

ADMIN = {"Authorization": "Bearer admin-token"}
OKTA = {"Authorization": "hook-secret"}


class FakeCor:
    """Answers COR's token and detach calls, recording the detaches."""

    def __init__(self) -> None:
        self.detaches: list[tuple[str, dict[str, object]]] = []
        # Every other call's path exactly as sent (escapes kept, no query).
        self.raw_paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return httpx.Response(200, json=load_fixture("cor/token-response.json"))
        self.raw_paths.append(request.url.raw_path.decode("ascii").split("?")[0])
        self.detaches.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, json={"id": 1, "workspaces": []})


@asynccontextmanager
async def make_client(
    tmp_path: Path,
    cor: FakeCor,
    *,
    mapping_text: str = MAPPING,
    database_url: str | None = None,
    served: bool = False,
    peer: str = "127.0.0.1",
    **overrides: object,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client that talks to it over ASGI.

    The database is `database_url` (the `database_url` fixture gives both engines), or by
    default a SQLite file in `tmp_path`. `served`: behind the middleware uvicorn adds as
    `cor-bridge serve` configures it (app/server.py); requests come from address `peer`.
    """
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(mapping_text)
    values: dict[str, object] = {
        "bridge_database_url": database_url or f"sqlite:///{tmp_path}/bridge.db",
        "bridge_mapping_file": str(mapping),
        "bridge_admin_token": "admin-token",
        "okta_hook_secret": "hook-secret",
        "cor_api_url": "http://cor.test",
        "cor_token_url": "http://cor.test/v1/oauth/token",
        "cor_client_id": "id",
        "cor_client_secret": "super-secret-value",
        "bridge_poll_seconds": 0.05,
        **overrides,
    }
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    app = create_app(settings, cor_transport=httpx.MockTransport(cor))
    outer: ASGIApp = app
    if served:
        config = server_config(app, settings, "127.0.0.1", 8080)
        config.load()
        outer = config.loaded_app
    transport = httpx.ASGITransport(app=outer, client=(peer, 41234))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bridge") as c,
    ):
        yield c


async def wait_for(predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = predicate()
        if not isinstance(done, bool):
            done = await done
        if done:
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
