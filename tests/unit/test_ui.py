"""The admin page in process: login, session cookie, CSRF, escaping and replay (COR faked)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr

from app.ui import auth
from tests.fake_cor import FakeCor
from tests.inprocess import ADMIN, make_client
from tests.waiting import wait_for_async

TOKEN = "admin-token"
GHOST = "ghost@acme.example"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(autouse=True)
def ghost_is_unknown(cor: FakeCor) -> None:
    """COR answers 400 ZC001 for GHOST (until a test takes it out of `cor.unknown`)."""
    cor.unknown.add(GHOST)


async def log_in(client: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    return await client.post("/admin/login", data={"token": token, "next": "/admin"})


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def dead_job(client: httpx.AsyncClient, user: str = GHOST) -> int:
    """Queue a detach that COR refuses and wait until it is a dead letter."""
    change = {"provider": "okta", "cor_user_id": user, "workspaces": ["WS-FIN"]}
    reply = await client.post("/admin/changes", json=change, headers=ADMIN)
    [job_id] = reply.json()["jobs"]

    async def is_dead() -> bool:
        job = (await client.get(f"/admin/jobs/{job_id}", headers=ADMIN)).json()
        return bool(job["state"] == "dead")

    await wait_for_async(is_dead)
    return int(job_id)


async def test_everything_is_404_when_the_admin_token_is_unset(tmp_path: Path, cor: FakeCor):
    async with make_client(tmp_path, cor, bridge_admin_token=None) as c:
        assert (await c.get("/admin")).status_code == 404
        assert (await c.get("/admin/ui/history", params={"user": GHOST})).status_code == 404
        assert (await c.get("/admin/ui/jobs/1")).status_code == 404
        assert (await c.post("/admin/login", data={"token": ""})).status_code == 404
        assert (await c.post("/admin/ui/replay", data={"id": "1"})).status_code == 404
        assert (await c.post("/admin/logout")).status_code == 404
        letters = await c.post("/admin/ui/dead-letters/replay", data={"kind": "inbox"})
        assert letters.status_code == 404


async def test_without_a_session_the_page_is_a_login_form(client: httpx.AsyncClient):
    reply = await client.get("/admin")
    assert reply.status_code == 200
    assert 'action="/admin/login"' in reply.text and "Dead letters" not in reply.text
    assert "default-src 'none'" in reply.headers["content-security-policy"]
    assert reply.headers["x-frame-options"] == "DENY"
    later = await client.get("/admin/ui/history", params={"user": GHOST})
    assert later.status_code == 303
    wanted = "/admin/ui/history?user=ghost%40acme.example"
    assert later.headers["location"] == "/admin?" + urlencode({"next": wanted})


async def test_a_wrong_token_is_refused(client: httpx.AsyncClient):
    reply = await log_in(client, "not-the-token")
    assert reply.status_code == 401
    assert "That is not the admin token." in reply.text
    assert "set-cookie" not in reply.headers
    assert (await log_in(client, "")).status_code == 401
    assert "Dead letters" not in (await client.get("/admin")).text


async def test_login_sets_a_cookie_that_holds_no_token_and_logout_clears_it(
    client: httpx.AsyncClient,
):
    reply = await log_in(client)
    assert reply.status_code == 303 and reply.headers["location"] == "/admin"
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"{auth.SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie  # plain http here; https is below
    value = client.cookies[auth.SESSION_COOKIE]
    assert TOKEN not in value and TOKEN not in cookie
    assert auth.session_key(SecretStr(TOKEN), value) is not None

    page = await client.get("/admin")
    assert page.status_code == 200 and "Dead letters (0)" in page.text
    assert "Queue health" in page.text and 'name="user"' in page.text

    out = await client.post("/admin/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303
    assert f'{auth.SESSION_COOKIE}=""' in out.headers["set-cookie"]
    after = await client.get("/admin")
    assert "Logged out." in after.text and 'action="/admin/login"' in after.text
    # The bearer-token JSON API does not take the browser's cookie.
    await log_in(client)
    assert (await client.get("/admin/jobs")).status_code == 401


async def test_the_cookie_is_secure_over_https(tmp_path: Path, cor: FakeCor):
    async with make_client(tmp_path, cor) as c:
        c.base_url = httpx.URL("https://bridge")
        reply = await log_in(c)
        assert "Secure" in reply.headers["set-cookie"]


async def test_login_goes_back_to_the_page_asked_for_and_nowhere_else(client: httpx.AsyncClient):
    target = "/admin/ui/history?user=ghost%40acme.example"
    reply = await client.post("/admin/login", data={"token": TOKEN, "next": target})
    assert reply.headers["location"] == target
    for evil in ("https://evil.example/", "//evil.example", "/admin/../x", "/adminx"):
        reply = await client.post("/admin/login", data={"token": TOKEN, "next": evil})
        assert reply.headers["location"] == "/admin", evil


def test_session_values_are_random_and_cannot_be_forged():
    token = SecretStr(TOKEN)
    fresh = auth.new_session(token)
    key = auth.session_key(token, fresh)
    assert key is not None and key not in fresh  # the table keeps a hash, not the secret
    assert auth.new_session(token) != fresh
    assert auth.session_key(SecretStr("another-token"), fresh) is None
    secret, _, mac = fresh.partition(".")
    changed = "A" if secret[-1] != "A" else "B"  # one character of the secret, changed
    assert auth.session_key(token, f"{secret[:-1]}{changed}.{mac}") is None
    assert auth.session_key(token, f"{secret}.{'0' * 64}") is None
    for junk in ("", ".", "x.y", f".{mac}", f"{secret}x.{mac}", None):
        assert auth.session_key(token, junk) is None
    assert auth.csrf_token(token, fresh) != auth.csrf_token(token, auth.new_session(token))


def as_cookie(session: str) -> dict[str, str]:
    return {"Cookie": f"{auth.SESSION_COOKIE}={session}"}


async def test_each_login_is_its_own_session_and_logout_ends_it(
    tmp_path: Path, cor: FakeCor, database_url: str
):
    async with make_client(tmp_path, cor, database_url=database_url) as c:
        sessions = []
        for _ in range(2):  # in the same second
            assert (await log_in(c)).status_code == 303
            sessions.append(c.cookies[auth.SESSION_COOKIE])
            c.cookies.clear()
        first, second = sessions
        assert first != second
        page = await c.get("/admin", headers=as_cookie(first))
        assert "Queue health" in page.text
        csrf = csrf_of(page.text)

        out = await c.post("/admin/logout", data={"csrf": csrf}, headers=as_cookie(first))
        assert out.status_code == 303
        c.cookies.clear()
        # The old cookie, kept by whoever copied it, opens nothing any more ...
        again = await c.get("/admin", headers=as_cookie(first))
        assert 'action="/admin/login"' in again.text and "Queue health" not in again.text
        assert (await c.get("/admin/ui/jobs/1", headers=as_cookie(first))).status_code == 303
        form = {"id": "1", "csrf": csrf}
        refused = await c.post("/admin/ui/replay", data=form, headers=as_cookie(first))
        assert refused.status_code == 401
        # ... and the other login is untouched.
        assert "Queue health" in (await c.get("/admin", headers=as_cookie(second))).text


async def test_changing_the_admin_token_ends_every_session(tmp_path: Path, cor: FakeCor):
    async with make_client(tmp_path, cor) as c:
        await log_in(c)
        session = c.cookies[auth.SESSION_COOKIE]
    async with make_client(tmp_path, cor, bridge_admin_token="a-new-token") as c:
        page = await c.get("/admin", headers=as_cookie(session))
        assert 'action="/admin/login"' in page.text


async def test_replay_needs_the_forms_csrf_token(client: httpx.AsyncClient, cor: FakeCor):
    job_id = await dead_job(client)
    await log_in(client)
    html = (await client.get("/admin")).text

    for data in ({"id": str(job_id)}, {"id": str(job_id), "csrf": "0" * 64}):
        refused = await client.post("/admin/ui/replay", data=data)
        assert refused.status_code == 403
        assert "stale or did not come from this page" in refused.text
    # A valid CSRF token without the session cookie is refused too.
    client.cookies.clear()
    alone = await client.post("/admin/ui/replay", data={"id": str(job_id), "csrf": csrf_of(html)})
    assert alone.status_code == 401
    job = (await client.get(f"/admin/jobs/{job_id}", headers=ADMIN)).json()
    assert job["state"] == "dead" and len(cor.detaches) == 1


async def test_a_form_must_be_a_form(client: httpx.AsyncClient):
    await log_in(client)
    reply = await client.post("/admin/ui/replay", json={"id": 1})
    assert reply.status_code == 415


async def test_the_dead_letter_replay_button_requeues_and_cor_is_called(
    client: httpx.AsyncClient, cor: FakeCor
):
    job_id = await dead_job(client)
    await log_in(client)
    html = (await client.get("/admin")).text
    assert "Dead letters (1)" in html
    row = re.search(rf'<tr id="dead-{job_id}">.*?</tr>', html, re.S)
    assert row is not None
    cells = row.group(0)
    assert GHOST in cells and "ZC001" in cells and "Entity is not associated" in cells
    assert f'name="id" value="{job_id}"' in cells

    cor.unknown.clear()  # the operator fixed the cause in COR
    data = {"id": str(job_id), "csrf": csrf_of(html), "back": "/admin#dead"}
    reply = await client.post("/admin/ui/replay", data=data)

    assert reply.status_code == 303 and reply.headers["location"] == "/admin#dead"
    await wait_for_async(lambda: len(cor.detaches) == 2)
    assert cor.detaches[-1].path == f"/v2/integrations/users/{GHOST}/detach"
    shown = (await client.get("/admin")).text
    assert f"Job {job_id}: requeued." in shown
    assert f"Job {job_id}: requeued." not in (await client.get("/admin")).text  # shown once

    async def done() -> bool:
        job = (await client.get(f"/admin/jobs/{job_id}", headers=ADMIN)).json()
        return bool(job["state"] == "done")

    await wait_for_async(done)
    detail = (await client.get(f"/admin/ui/jobs/{job_id}")).text
    assert detail.count('<tr id="attempt-') == 2
    assert "Delivery attempts (2)" in detail and "ZC001" in detail


async def test_replay_all_dead_asks_first(client: httpx.AsyncClient, cor: FakeCor):
    cor.unknown.add("ghost2@acme.example")
    ids = [await dead_job(client), await dead_job(client, "ghost2@acme.example")]
    await log_in(client)
    confirm = await client.get("/admin/ui/replay-dead")
    assert "These 2 dead jobs will be queued again" in confirm.text
    for job_id in ids:
        assert f'<input type="hidden" name="id" value="{job_id}">' in confirm.text
    data = [("csrf", csrf_of(confirm.text)), ("back", "/admin#dead")] + [
        ("id", str(i)) for i in ids
    ]
    reply = await client.post("/admin/ui/replay", content=urlencode(data), headers=FORM)
    assert reply.status_code == 303
    shown = (await client.get("/admin")).text
    assert all(f"Job {i}: requeued." in shown for i in ids)


async def test_user_names_are_escaped(client: httpx.AsyncClient):
    evil = "<script>alert(1)</script>@acme.example"
    change = {"provider": "okta", "cor_user_id": evil, "workspaces": ["WS-<b>x</b>"]}
    assert (await client.post("/admin/changes", json=change, headers=ADMIN)).status_code == 200
    await log_in(client)
    for reply in (
        await client.get("/admin"),
        await client.get("/admin/ui/history", params={"user": evil}),
        await client.get("/admin/ui/jobs/1"),
    ):
        assert reply.status_code == 200
        assert "<script>" not in reply.text and "<b>x</b>" not in reply.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;@acme.example" in reply.text


async def test_history_shows_events_with_decision_and_detail(client: httpx.AsyncClient):
    job_id = await dead_job(client)
    await log_in(client)
    page = await client.get("/admin/ui/history", params={"user": GHOST})
    assert page.status_code == 200
    assert "Events received (1)" in page.text and "Detach jobs (1)" in page.text
    assert "operator asked to detach these workspaces" in page.text
    assert "<b>queued</b>" in page.text
    assert f'<tr id="job-{job_id}">' in page.text and "Entity is not associated" in page.text
    empty = await client.get("/admin/ui/history", params={"user": "nobody@acme.example"})
    assert "No event mentions this user." in empty.text
    assert (await client.get("/admin/ui/jobs/4242")).status_code == 404
