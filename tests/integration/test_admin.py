"""The operators' API over real HTTP: explicit changes and replay of dead letters (which
sends each at most once more, and never what the user has been granted again)."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

import httpx
import pytest

from tests.builders import T0, minutes, okta_delivery, okta_event
from tests.conftest import ENGINES
from tests.integration.harness import ADMIN_TOKEN, FINANCE, Bridge, Sandbox

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("bridge_engine", ENGINES)]

MIA, GHOST = "mia@acme.example", "ghost@acme.example"


def test_explicit_change_reaches_cor(bridge: Bridge, sandbox: Sandbox) -> None:
    change = {"provider": "okta", "cor_user_id": MIA, "workspaces": ["WS-ONCALL"]}

    reply = bridge.admin("POST", "/changes", json=change)

    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["decision"] == "queued"
    assert answer["event_id"].startswith("admin-")
    [job_id] = answer["jobs"]
    [call] = sandbox.wait_detached(MIA, {"WS-ONCALL"})
    assert call["body"] == {"workspaces": ["WS-ONCALL"], "metadata": {"source": "OKTA"}}
    [job] = bridge.wait_jobs("done", count=1, cor_user_id=MIA)
    assert (job["id"], job["workspace"], job["provider"]) == (job_id, "WS-ONCALL", "okta")
    assert job["remaining"] == ["WS-ENG"]
    [event] = bridge.history(MIA)["events"]
    assert event["source_event_id"] == answer["event_id"]
    assert event["detail"][0] == "operator asked to detach these workspaces"


def test_replay_sends_a_dead_job_again(bridge: Bridge, sandbox: Sandbox) -> None:
    removal = okta_event(
        "group.user_membership.remove", user="ghost", group_id=FINANCE, group_name="finance"
    )
    bridge.deliver(okta_delivery(removal))
    [dead] = bridge.wait_jobs("dead", count=1, cor_user_id=GHOST)
    assert dead["last_code"] == "ZC001"
    # The operator fixes the cause: the user now exists in COR under the OKTA source.
    sandbox.put_user(GHOST, ["WS-FIN", "WS-OPS"])

    dry = bridge.admin("POST", "/replay", json={"filter": {"state": ["dead"]}, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert [j["id"] for j in dry.json()["jobs"]] == [dead["id"]]
    reply = bridge.admin("POST", "/replay", json={"ids": [dead["id"]]})

    assert reply.status_code == 200, reply.text
    assert reply.json() == {"dry_run": False, "jobs": [{"id": dead["id"], "result": "requeued"}]}
    sandbox.wait_detached(GHOST, {"WS-FIN"})
    assert [c["status"] for c in sandbox.detaches(GHOST)] == [400, 200]
    [job] = bridge.wait_jobs("done", count=1, cor_user_id=GHOST)
    assert job["id"] == dead["id"]
    assert job["remaining"] == ["WS-OPS"]
    tried = bridge.job(job["id"])["deliveries"]
    assert [(a["outcome"], a["status"]) for a in tried] == [("dead", 400), ("done", 200)]
    # Replaying it again, now that COR confirmed it, would detach the same change twice.
    again = bridge.admin("POST", "/replay", json={"ids": [job["id"]]}).json()
    [skipped] = again["jobs"]
    assert (skipped["id"], skipped["result"]) == (job["id"], "skipped")
    assert skipped["reason"].startswith("already done: COR confirmed this detach")
    assert bridge.job(job["id"])["attempts"] == 1  # left as it was: done, nothing queued
    assert bridge.jobs(state=["pending", "running"]) == []
    assert [c["status"] for c in sandbox.detaches(GHOST)] == [400, 200]


def test_replay_skips_a_dead_job_whose_workspace_was_granted_again(
    bridge: Bridge, sandbox: Sandbox
) -> None:
    """The user left finance, COR refused the detach, then Okta put them back in finance:
    replaying the dead job would take away what they have again."""
    left = okta_event(
        "group.user_membership.remove", user="ghost", group_id=FINANCE, group_name="finance", at=T0
    )
    bridge.deliver(okta_delivery(left))
    [dead] = bridge.wait_jobs("dead", count=1, cor_user_id=GHOST)
    back = okta_event(
        "group.user_membership.add",
        user="ghost",
        group_id=FINANCE,
        group_name="finance",
        at=T0 + minutes(5),
    )
    bridge.deliver(okta_delivery(back))
    sandbox.put_user(GHOST, ["WS-FIN"])

    dry = bridge.admin("POST", "/replay", json={"filter": {"state": ["dead"]}, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json()["jobs"] == []
    [skipped] = dry.json()["skipped"]
    assert (skipped["id"], skipped["workspace"]) == (dead["id"], "WS-FIN")
    assert skipped["reason"].startswith(
        f"still granted: 00ughost is in okta group {FINANCE} (finance)"
    )
    reply = bridge.admin("POST", "/replay", json={"ids": [dead["id"]]})
    assert reply.json()["jobs"] == [
        {"id": dead["id"], "result": "skipped", "reason": skipped["reason"]}
    ]
    assert bridge.job(dead["id"])["state"] == "dead"
    assert bridge.jobs(state=["pending", "running"]) == []
    assert [c["status"] for c in sandbox.detaches(GHOST)] == [400]


def test_concurrent_replays_of_a_dead_job_detach_once(bridge: Bridge, sandbox: Sandbox) -> None:
    """Two operators (or a double click) replay the same dead letter at the same moment."""
    left = okta_event(
        "group.user_membership.remove", user="ghost", group_id=FINANCE, group_name="finance"
    )
    bridge.deliver(okta_delivery(left))
    [dead] = bridge.wait_jobs("dead", count=1, cor_user_id=GHOST)
    sandbox.put_user(GHOST, ["WS-FIN"])
    start = threading.Barrier(4)

    def replay() -> list[dict[str, Any]]:
        with httpx.Client(timeout=10) as http:
            start.wait()
            reply = http.post(
                f"{bridge.url}/admin/replay",
                json={"ids": [dead["id"]]},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
        assert reply.status_code == 200, reply.text
        jobs: list[dict[str, Any]] = reply.json()["jobs"]
        return jobs

    with ThreadPoolExecutor(4) as pool:
        results = [r for answer in pool.map(lambda _: replay(), range(4)) for r in answer]
    assert sorted(r["result"] for r in results) == ["requeued", "skipped", "skipped", "skipped"]
    bridge.wait_jobs("done", count=1, cor_user_id=GHOST)
    # A barrier: a later removal is sent, so a second detach of ghost's would have been too.
    bridge.deliver(okta_delivery(okta_event("group.user_membership.remove", user="mia")))
    sandbox.wait_detached(MIA, {"WS-ENG", "WS-ONCALL"})
    assert [c["status"] for c in sandbox.detaches(GHOST)] == [400, 200]


def test_replay_of_an_unknown_job_is_404(bridge: Bridge) -> None:
    reply = bridge.admin("POST", "/replay", json={"ids": [424242]})

    assert reply.status_code == 404
    assert reply.json()["detail"] == "no job with id 424242"
    assert bridge.admin("GET", "/jobs/424242").status_code == 404
    assert bridge.admin("POST", "/replay", json={}).status_code == 422


ID_MAX, OFFSET_MAX = 2**31 - 1, 2**63 - 1  # jobs.id is INTEGER (32 bits on PostgreSQL)
TOO_BIG_IDS = [str(ID_MAX + 1), str(OFFSET_MAX + 1), "99999999999999999999999"]
TOO_BIG_OFFSETS = [str(OFFSET_MAX + 1), "99999999999999999999999"]


def test_ids_and_offsets_past_their_columns_are_refused_not_crashed_on(bridge: Bridge) -> None:
    """Every integer an operator can type is bounded to what the store can hold: 422 naming
    the field (an HTML page on the admin page), never a 500 with a traceback in the log."""
    json_type = {"Content-Type": "application/json"}
    asked = [("GET", "/jobs", {"params": {"offset": big}}) for big in TOO_BIG_OFFSETS]
    for big in TOO_BIG_IDS:
        asked += [
            ("GET", f"/jobs/{big}", {}),
            ("POST", f"/jobs/{big}/cancel", {}),
            ("POST", "/replay", {"content": f'{{"ids": [{big}]}}'.encode(), "headers": json_type}),
        ]
    for method, path, kwargs in asked:
        reply = bridge.admin(method, path, **kwargs)
        assert reply.status_code == 422, (method, path, reply.text)
        [error] = reply.json()["detail"]
        assert error["type"] == "less_than_equal", error
        assert "input" not in error
    for path in ("/jobs/0", "/jobs/-1", "/jobs?offset=-1"):
        assert bridge.admin("GET", path).status_code == 422, path
    # The largest values are questions the store can answer.
    assert bridge.admin("GET", f"/jobs/{ID_MAX}").status_code == 404
    assert bridge.admin("POST", f"/jobs/{ID_MAX}/cancel").status_code == 404
    assert bridge.admin("POST", "/replay", json={"ids": [ID_MAX]}).status_code == 404
    assert bridge.admin("GET", "/jobs", params={"offset": OFFSET_MAX}).json()["jobs"] == []

    with httpx.Client(base_url=bridge.url, timeout=10) as browser:
        login = browser.post("/admin/login", data={"token": ADMIN_TOKEN, "next": "/admin"})
        assert login.status_code == 303
        pages = [f"/admin?offset={big}" for big in TOO_BIG_OFFSETS]
        pages += [f"/admin/ui/jobs/{big}" for big in TOO_BIG_IDS]
        for path in pages:
            page = browser.get(path)
            assert page.status_code == 422, path
            assert page.headers["content-type"].startswith("text/html")
            assert "Input should be less than or equal to" in page.text
        assert browser.get(f"/admin/ui/jobs/{ID_MAX}").status_code == 404
        assert browser.get(f"/admin?offset={OFFSET_MAX}").status_code == 200
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', browser.get("/admin").text)
        assert csrf is not None
        for big in TOO_BIG_IDS:
            form = browser.post("/admin/ui/replay", data={"csrf": csrf.group(1), "id": big})
            assert form.status_code == 400
            assert f"job ids must be whole numbers from 1 to {ID_MAX}" in form.text
    logged = bridge.log_path.read_text()
    assert "Traceback" not in logged and '"level": "error"' not in logged


def test_logging_out_of_the_admin_page_ends_that_session_only(bridge: Bridge) -> None:
    def logged_in() -> httpx.Client:
        browser = httpx.Client(base_url=bridge.url, timeout=10)
        login = browser.post("/admin/login", data={"token": ADMIN_TOKEN, "next": "/admin"})
        assert login.status_code == 303
        return browser

    with closing(logged_in()) as first, closing(logged_in()) as second:
        kept = first.cookies["cor_bridge_admin"]
        assert kept != second.cookies["cor_bridge_admin"]
        page = first.get("/admin")
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
        assert csrf is not None
        assert first.post("/admin/logout", data={"csrf": csrf.group(1)}).status_code == 303
        with httpx.Client(base_url=bridge.url, timeout=10) as thief:
            thief.cookies.set("cor_bridge_admin", kept, domain="127.0.0.1", path="/admin")
            again = thief.get("/admin")
            assert again.status_code == 200 and 'action="/admin/login"' in again.text
            assert thief.get("/admin/ui/history", params={"user": MIA}).status_code == 303
        assert "Queue health" in second.get("/admin").text
