"""What a SCIM read costs others: it never holds the write turn (an Okta delivery is
acknowledged while a costly filter runs; a 700-term filter once held Okta's acks for 12-35 s),
and a filter's cost is bounded (narrowed in SQL, at most 100 comparisons)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from app.store import Database
from app.store.db import serialize_intake
from tests.fake_cor import FakeCor
from tests.inprocess import ADMIN, make_client

SCIM = {"Authorization": "Bearer scim-token", "Content-Type": "application/scim+json"}
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
FILTER = 'userName co "jane"'


async def test_scim_reads_and_admin_reads_go_on_while_a_writer_holds_intake_s_turn(
    tmp_path: Path, database_url: str
):
    async with make_client(
        tmp_path, FakeCor(), database_url=database_url, scim_token="scim-token"
    ) as client:
        body = {"schemas": [USER], "userName": "jane@acme.example", "active": True}
        assert (await client.post("/scim/v2/Users", json=body, headers=SCIM)).status_code == 201
        other = Database(database_url)
        try:
            # Another writer in intake (SQLite: the write lock; PostgreSQL: intake's turn),
            # as an Okta delivery or a SCIM PATCH would be.
            with other.begin() as conn:
                serialize_intake(conn)
                conn.execute(text("UPDATE events SET decision = decision"))
                reads = (
                    client.get("/scim/v2/Users", params={"filter": FILTER}, headers=SCIM),
                    client.get("/admin/jobs", headers=ADMIN),
                    client.get("/readyz"),
                )
                replies = await asyncio.wait_for(asyncio.gather(*reads), timeout=5)
        finally:
            other.dispose()
        assert [r.status_code for r in replies] == [200, 200, 200]
        assert replies[0].json()["totalResults"] == 1


async def test_a_filter_is_narrowed_in_sql_and_bounded(tmp_path: Path, database_url: str):
    async with make_client(
        tmp_path, FakeCor(), database_url=database_url, scim_token="scim-token"
    ) as client:
        names = [f"user{i:02}@acme.example" for i in range(30)]
        for name in names:
            body = {"schemas": [USER], "userName": name, "active": True}
            assert (await client.post("/scim/v2/Users", json=body, headers=SCIM)).status_code == 201
        some = " or ".join(f'userName eq "{n.upper()}"' for n in names[3:9])
        found = await client.get("/scim/v2/Users", params={"filter": some}, headers=SCIM)
        assert sorted(r["userName"] for r in found.json()["Resources"]) == names[3:9]
        both = f"({some}) and active eq true"
        found = await client.get("/scim/v2/Users", params={"filter": both}, headers=SCIM)
        assert found.json()["totalResults"] == 6
        page = await client.get(
            "/scim/v2/Users", params={"startIndex": 11, "count": 5}, headers=SCIM
        )
        body = page.json()
        assert body["totalResults"] == 30 and body["startIndex"] == 11
        assert [r["userName"] for r in body["Resources"]] == names[10:15]
        too_many = " or ".join(f'userName eq "u{i}"' for i in range(101))
        refused = await client.get("/scim/v2/Users", params={"filter": too_many}, headers=SCIM)
        assert refused.status_code == 400
        assert refused.json()["scimType"] == "invalidFilter"
        assert "101 comparisons; at most 100" in refused.json()["detail"]
