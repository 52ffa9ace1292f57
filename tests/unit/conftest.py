"""Fixtures the unit tests share: one fake COR, the bridge in process, a Graph client.

`cor` is the FakeCor (tests/fake_cor.py) the app's COR calls reach. `client` is an HTTP client
to the real app with its lifespan running (tests/inprocess.py), on both engines through
`database_url`. A module that needs other settings (a mapping, a source switched on)
overrides `bridge_settings`; one that needs SQLite only overrides `database_url`.
`graph_client` is the bridge's Graph client against the Graph stand-in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.graph.client import GraphClient, GraphCredentials
from tests.fake_cor import FakeCor
from tests.graph_standin import CLIENT_ID, CLIENT_SECRET, TENANT, StandinServer
from tests.inprocess import make_client


@pytest.fixture
def cor() -> FakeCor:
    """COR, faked: records every call, answers like COR unless scripted."""
    return FakeCor()


@pytest.fixture
def bridge_settings() -> dict[str, Any]:
    """`make_client` keywords for `client` (mapping_text=..., settings); modules override it."""
    return {}


@pytest.fixture
async def client(
    tmp_path: Path, cor: FakeCor, database_url: str, bridge_settings: dict[str, Any]
) -> AsyncIterator[httpx.AsyncClient]:
    """The bridge in process, its COR calls going to `cor`."""
    async with make_client(tmp_path, cor, database_url=database_url, **bridge_settings) as c:
        yield c


@pytest.fixture
async def graph_client(standin_server: StandinServer) -> AsyncIterator[GraphClient]:
    """A Graph client against the Graph stand-in (a module's `standin` fixture resets it)."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        creds = GraphCredentials(TENANT, CLIENT_ID, CLIENT_SECRET)
        yield GraphClient(http, standin_server.api_url, standin_server.url, creds)
