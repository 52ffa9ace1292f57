"""What the admin page, /readyz and /metrics say of the Okta directory, on and off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.okta.standin import STANDIN_TOKEN, create_okta_standin, seeded
from tests.fake_cor import FakeCor
from tests.graph_standin import StandinServer
from tests.inprocess import make_client


@pytest.fixture(scope="module")
def okta_url() -> Iterator[str]:
    served = StandinServer(create_okta_standin(seeded())).start()
    yield served.url
    served.stop()


async def test_off_it_says_still_granted_rests_on_what_was_seen(tmp_path: Path):
    async with make_client(tmp_path, FakeCor()) as client:
        ready = (await client.get("/readyz")).json()["checks"]["okta_directory"]
        assert ready == {
            "configured": False,
            "still_granted": "on the memberships the bridge has seen only (no OKTA_ORG_URL)",
        }
        await client.post("/admin/login", data={"token": "admin-token", "next": "/admin"})
        page = (await client.get("/admin")).text
        assert "Okta directory:" in page and "on the memberships the bridge has seen" in page


async def test_on_the_page_readyz_and_metrics_show_it(tmp_path: Path, okta_url: str):
    settings = {"okta_org_url": okta_url, "okta_api_token": STANDIN_TOKEN, "okta_sync_seconds": 0}
    async with make_client(tmp_path, FakeCor(), **settings) as client:
        ready = (await client.get("/readyz")).json()["checks"]["okta_directory"]
        assert ready["configured"] is True and ready["held"] == 0
        assert ready["still_granted"] == "asked of Okta before each removal"
        assert ready["sync"]["every_seconds"] is None
        await client.post("/admin/login", data={"token": "admin-token", "next": "/admin"})
        page = (await client.get("/admin")).text
        assert "asked before each removal" in page and "0 held for its answer" in page
        metrics = (await client.get("/metrics")).text
        assert 'cor_bridge_held_changes{provider="okta",state="held"} 0.0' in metrics
        assert STANDIN_TOKEN not in page + metrics + str(ready)
