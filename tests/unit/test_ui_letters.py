"""The admin page's other dead letters: listed on the dashboard, replayed by their button
(CSRF-checked), and logout that needs the form's CSRF token."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.builders import okta_delivery, okta_event
from tests.fake_cor import FakeCor
from tests.inprocess import ADMIN, OKTA, make_client
from tests.unit.test_dead_letters import FIXED, NO_ID
from tests.unit.test_ui import csrf_of, log_in
from tests.waiting import wait_for_async


async def test_an_unresolved_removal_is_shown_and_its_button_sends_it_again(tmp_path: Path):
    cor = FakeCor()
    async with make_client(
        tmp_path, cor, mapping_text=NO_ID, bridge_mapping_poll_seconds=0.05
    ) as client:
        event = okta_event("group.user_membership.remove", user="jane")
        event["target"][0]["alternateId"] = "jane"
        assert (
            await client.post("/hooks/okta", json=okta_delivery(event), headers=OKTA)
        ).status_code == 200
        [letter] = (await client.get("/admin/dead-letters", headers=ADMIN)).json()["unresolved"]

        await log_in(client)
        html = (await client.get("/admin")).text
        assert "Other dead letters (1)" in html
        row = re.search(rf'<tr id="unresolved-{letter["id"]}">.*?</tr>', html, re.S)
        assert row is not None and "jane" in row.group(0) and "email" in row.group(0)
        form = {"kind": "unresolved", "id": str(letter["id"]), "back": "/admin#letters"}

        refused = await client.post("/admin/ui/dead-letters/replay", data=form)
        assert refused.status_code == 403  # no CSRF token: nothing sent
        bad = {**form, "kind": "jobs", "csrf": csrf_of(html)}
        assert (await client.post("/admin/ui/dead-letters/replay", data=bad)).status_code == 400

        groups = await _groups(client)
        (tmp_path / "mapping.yaml").write_text(FIXED)

        async def reloaded() -> bool:
            return await _groups(client) == groups + 1

        await wait_for_async(reloaded)
        reply = await client.post(
            "/admin/ui/dead-letters/replay", data={**form, "csrf": csrf_of(html)}
        )
        assert reply.status_code == 303 and reply.headers["location"] == "/admin#letters"
        await wait_for_async(lambda: bool(cor.detaches))
        assert cor.detaches[0].path == "/v2/integrations/users/jane/detach"
        shown = (await client.get("/admin")).text
        assert f"Unresolved removal {letter['id']}: sent again." in shown
        assert "Other dead letters (0)" in shown

        again = await client.post(
            "/admin/ui/dead-letters/replay", data={**form, "csrf": csrf_of(html)}
        )
        assert again.status_code == 303
        shown = (await client.get("/admin")).text
        assert f"Unresolved removal {letter['id']}: not a dead letter any more." in shown
        assert len(cor.detaches) == 1


async def _groups(client: httpx.AsyncClient) -> int:
    ready = (await client.get("/readyz")).json()
    return int(ready["checks"]["mapping"]["groups"])


async def test_logout_needs_the_forms_csrf_token(tmp_path: Path):
    async with make_client(tmp_path, FakeCor()) as client:
        await log_in(client)
        page = (await client.get("/admin")).text
        refused = await client.post("/admin/logout", data={"csrf": "0" * 64})
        assert refused.status_code == 403
        assert "Queue health" in (await client.get("/admin")).text  # still logged in
        out = await client.post("/admin/logout", data={"csrf": csrf_of(page)})
        assert out.status_code == 303
        assert 'action="/admin/login"' in (await client.get("/admin")).text
