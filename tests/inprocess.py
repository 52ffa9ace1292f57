"""The bridge in process: the real app and lifespan over ASGI, COR faked by tests/fake_cor.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.types import ASGIApp

from app.main import create_app
from app.server import server_config
from app.settings import Settings
from tests.conftest import MAPPING
from tests.fake_cor import API_URL, CLIENT_ID, CLIENT_SECRET, TOKEN_URL, FakeCor

ADMIN = {"Authorization": "Bearer admin-token"}
OKTA = {"Authorization": "hook-secret"}


@asynccontextmanager
async def make_client(
    tmp_path: Path,
    cor: FakeCor | None = None,
    *,
    mapping_text: str = MAPPING,
    database_url: str | None = None,
    served: bool = False,
    peer: str = "127.0.0.1",
    **overrides: object,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client that talks to it over ASGI.

    COR is `cor` (a fresh FakeCor by default). The database is `database_url` (the
    `database_url` fixture gives both engines), or by default a SQLite file in `tmp_path`.
    `served`: behind the middleware uvicorn adds as `cor-bridge serve` configures it
    (app/server.py); requests come from address `peer`.
    """
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(mapping_text)
    values: dict[str, object] = {
        "bridge_database_url": database_url or f"sqlite:///{tmp_path}/bridge.db",
        "bridge_mapping_file": str(mapping),
        "bridge_admin_token": "admin-token",
        "okta_hook_secret": "hook-secret",
        "cor_api_url": API_URL,
        "cor_token_url": TOKEN_URL,
        "cor_client_id": CLIENT_ID,
        "cor_client_secret": CLIENT_SECRET,
        "bridge_poll_seconds": 0.05,
        **overrides,
    }
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    app = create_app(settings, cor_transport=(cor or FakeCor()).transport())
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
