"""The Graph delta query in process, on both engines, against the stand-in over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.store import Database
from app.store import graph as graph_store
from tests.builders import load_fixture
from tests.fake_cor import FakeCor
from tests.graph_standin import StandinServer
from tests.inprocess import ADMIN, make_client
from tests.waiting import wait_for_async

STATE = "graph-client-state-for-tests"
SUB = "092ba742-89d2-4417-a4c7-c120db062842"
ONCALL = "0bc7d487-fd6f-41a0-8362-71ec81074f11"  # WS-ENG, WS-ONCALL
PLATFORM = "a0000000-0000-0000-0000-0000000000a1"  # WS-ENG
FINANCE = "f0000000-0000-0000-0000-00000000f001"  # by name: WS-FIN
ADELE = "4d147cc8-10cb-4158-ac52-90ee8ff9d846"
JOE = "7a1e0d22-3a52-4b55-8e0c-0c0a7b1f9e31"
MAX = "5c0ffee0-0000-4000-8000-00000000000a"
FUTURE = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0).isoformat()
RULES = {
    ONCALL: f"  - provider: entra\n    group_id: {ONCALL}\n    workspaces: [WS-ENG, WS-ONCALL]\n",
    PLATFORM: f"  - provider: entra\n    group_id: {PLATFORM}\n    workspaces: [WS-ENG]\n",
    FINANCE: "  - provider: entra\n    group_name: Finance\n    workspaces: [WS-FIN]\n",
}
HEAD = "providers:\n  entra:\n    cor_source: MICROSOFT_DYNAMICS\n    user_id: '{login}'\ngroups:\n"
Start = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def mapping(*groups: str) -> str:
    return HEAD + "".join(RULES[g] for g in groups)


@pytest.fixture
def standin(standin_server: StandinServer) -> StandinServer:
    state = standin_server.state
    state.reset()
    state.add_group(ONCALL, "eng-oncall")
    state.add_group(PLATFORM, "platform")
    state.add_group(FINANCE, "Finance")
    state.add_user(ADELE, "adele@acme.example")
    state.add_user(JOE, "joe@acme.example")
    state.add_member(ONCALL, ADELE)
    state.add_member(ONCALL, JOE)
    state.delta_page_size = 1  # one member a page: a group's members span pages
    return standin_server


@pytest.fixture
def start(tmp_path: Path, cor: FakeCor, standin: StandinServer, database_url: str) -> Start:
    def start(
        *groups: str, every: float = 0.2, webhook: bool = True
    ) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        settings: dict[str, Any] = {
            "graph_client_state": STATE if webhook else None,
            **standin.settings(),
            "graph_delta_seconds": every,
        }
        text = mapping(*(groups or (ONCALL,)))
        return make_client(tmp_path, cor, mapping_text=text, database_url=database_url, **settings)

    return start


async def delta(client: httpx.AsyncClient) -> dict[str, Any]:
    graph: dict[str, Any] = (await client.get("/readyz")).json()["checks"]["graph"]
    return graph["delta"] | {"inbox_pending": graph["inbox_pending"]}


async def rounds_done(client: httpx.AsyncClient, after: str | None, covered: int) -> str:
    """Wait for a round that finished after `after`, with its inbox resolved."""
    found: dict[str, Any] = {}

    async def done() -> bool:
        found.update(await delta(client))
        last = found["last_round"]
        return (
            last is not None
            and (after is None or last > after)
            and found["groups_covered"] == covered
            and found["inbox_pending"] == 0
        )

    await wait_for_async(done, timeout=15)
    return str(found["last_round"])


def detached(cor: FakeCor) -> list[tuple[str, list[str]]]:
    return [(path.split("/")[-2], sorted(body["workspaces"])) for path, body in cor.sent()]


async def history(client: httpx.AsyncClient, user: str) -> list[dict[str, Any]]:
    reply = await client.get(f"/admin/users/{user}/history", headers=ADMIN)
    events: list[dict[str, Any]] = reply.json()["events"]
    return events


async def test_a_removal_no_notification_told_is_detached_after_the_next_round(
    start: Start, standin: StandinServer, cor: FakeCor
):
    async with start() as client:
        last = await rounds_done(client, None, covered=1)
        assert cor.detaches == []  # the baseline detaches nothing
        baseline = [e for e in await history(client, "adele@acme.example")]
        assert baseline and baseline[0]["detail"][0] == "baseline: Graph lists them as a member"
        standin.state.remove_member(ONCALL, ADELE)
        await rounds_done(client, last, covered=1)
        await wait_for_async(lambda: len(cor.detaches) == 1)
        assert detached(cor) == [("adele@acme.example", ["WS-ENG", "WS-ONCALL"])]
        assert standin.state.calls_to(f"/users/{ADELE}/transitiveMemberOf")
        report = await delta(client)
        assert report["polling"] and report["last_error"] is None and report["batches"] == 1
        metrics = (await client.get("/metrics")).text
        assert 'cor_bridge_directory_poll_age_seconds{poller="graph_delta"}' in metrics
        assert 'cor_bridge_directory_polled_events_total{poller="graph_delta"}' in metrics
        await client.post("/admin/login", data={"token": "admin-token", "next": "/admin"})
        page = (await client.get("/admin")).text
        assert "Graph delta:" in page and "1 groups covered" in page


async def test_a_user_another_group_still_grants_keeps_that_workspace(
    start: Start, standin: StandinServer, cor: FakeCor
):
    standin.state.add_member(PLATFORM, ADELE)
    async with start(ONCALL, PLATFORM) as client:
        last = await rounds_done(client, None, covered=2)
        standin.state.remove_member(ONCALL, ADELE)
        await rounds_done(client, last, covered=2)
        await wait_for_async(lambda: len(cor.detaches) == 1)
        assert detached(cor) == [("adele@acme.example", ["WS-ONCALL"])]


async def test_a_removal_heard_by_notification_and_by_delta_detaches_once(
    start: Start, standin: StandinServer, cor: FakeCor, database_url: str
):
    async with start() as client:
        register(database_url)
        last = await rounds_done(client, None, covered=1)
        standin.state.remove_member(ONCALL, ADELE)
        body = load_fixture("graph/notification-member-removed.json")
        body["value"][0].update(clientState=STATE, subscriptionExpirationDateTime=FUTURE)
        body["value"][0]["resourceData"]["members@delta"] = [{"id": ADELE, "@removed": "deleted"}]
        assert (await client.post("/hooks/graph", json=body)).status_code == 202
        await wait_for_async(lambda: len(cor.detaches) == 1)
        await rounds_done(client, last, covered=1)
        removals: list[str] = []

        async def both_heard() -> bool:
            # A round that began before the removal sees nothing: the next one hears it.
            events = await history(client, "adele@acme.example")
            removals[:] = [e["decision"] for e in events if e["kind"] == "removed"]
            return len(removals) == 2

        await wait_for_async(both_heard, timeout=15)
        # The second to arrive changes nothing: out already, or (a round that began before the
        # notification came, dated by its start) older than what is known.
        assert sorted(removals) in (["already_out", "queued"], ["queued", "superseded"])
        assert len(cor.detaches) == 1


async def test_a_deleted_group_detaches_every_member_the_bridge_knew(
    start: Start, standin: StandinServer, cor: FakeCor
):
    async with start() as client:
        last = await rounds_done(client, None, covered=1)
        standin.state.delete_group(ONCALL)
        await rounds_done(client, last, covered=1)
        await wait_for_async(lambda: len(cor.detaches) == 2)
        assert sorted(detached(cor)) == [
            ("adele@acme.example", ["WS-ENG", "WS-ONCALL"]),
            ("joe@acme.example", ["WS-ENG", "WS-ONCALL"]),
        ]


@pytest.mark.parametrize("status", [400, 410])  # Graph's groups: 400 syncStateNotFound
async def test_an_expired_token_resyncs_and_detaches_whoever_left_unseen(
    start: Start, standin: StandinServer, cor: FakeCor, status: int
):
    standin.state.add_user(MAX, "max@acme.example")
    standin.state.add_member(ONCALL, MAX)
    standin.state.add_member(PLATFORM, ADELE)
    async with start(ONCALL, PLATFORM) as client:
        await rounds_done(client, None, covered=2)
    # While the bridge is away for longer than a delta token lives, two leave eng-oncall.
    standin.state.remove_member(ONCALL, ADELE)  # platform still grants her WS-ENG
    standin.state.remove_member(ONCALL, JOE)
    standin.state.expire_delta_tokens(status)
    standin.state.calls.clear()  # from here: the second bridge's calls
    async with start(ONCALL, PLATFORM) as client:
        await wait_for_async(lambda: len(cor.detaches) == 2, timeout=15)
        events = await history(client, "joe@acme.example")
        removal = next(e for e in events if e["kind"] == "removed")
        assert removal["detail"][0].startswith("resync: the delta token expired")
        assert removal["decision"] == "queued"
        # Max, still listed, was known: the resync asked Graph nothing about him.
        assert [e["kind"] for e in await history(client, "max@acme.example")] == ["added"]
        assert not standin.state.calls_to(f"/users/{MAX}")
    assert sorted(detached(cor)) == [
        ("adele@acme.example", ["WS-ONCALL"]),
        ("joe@acme.example", ["WS-ENG", "WS-ONCALL"]),
    ]
    calls = standin.state.calls_to("/groups/delta")
    assert calls[0]["status"] == status and "$deltatoken" in calls[0]["query"]
    assert "$filter" in calls[1]["query"]  # read whole again


async def test_a_group_the_mapping_adds_gets_its_own_baseline_and_no_detaches(
    start: Start, standin: StandinServer, cor: FakeCor
):
    standin.state.add_member(FINANCE, JOE)
    async with start(ONCALL) as client:
        await rounds_done(client, None, covered=1)
    first = standin.state.calls_to("/groups/delta")
    standin.state.remove_member(ONCALL, JOE)  # while the bridge is away
    standin.state.calls.clear()
    async with start(ONCALL, FINANCE) as client:
        await rounds_done(client, None, covered=2)
        await wait_for_async(lambda: len(cor.detaches) == 1)
    calls = standin.state.calls_to("/groups/delta")
    # The known batch resumed from its deltaLink; only Finance was read from the start.
    assert any("$deltatoken" in c["query"] for c in calls)
    fresh = [c["query"]["$filter"] for c in calls if "$filter" in c["query"]]
    assert fresh == [f"id eq '{FINANCE}'"], (first, calls)
    # Joe's removal from eng-oncall while away is caught; Finance's baseline detached nobody.
    assert detached(cor) == [("joe@acme.example", ["WS-ENG", "WS-ONCALL"])]


def register(database_url: str) -> None:
    db = Database(database_url)
    expires = datetime.now(UTC) + timedelta(days=20)
    with db.begin() as conn:
        graph_store.put_subscription(conn, SUB, f"/groups/{ONCALL}", expires, datetime.now(UTC))
    db.dispose()


async def test_a_notification_of_a_deleted_group_detaches_every_member_the_bridge_knew(
    start: Start, standin: StandinServer, cor: FakeCor, database_url: str
):
    async with start(every=0) as client:
        register(database_url)
        joined = [{"id": ADELE}, {"id": JOE}]
        assert (await client.post("/hooks/graph", json=note(joined))).status_code == 202

        async def resolved() -> bool:
            return bool((await delta(client))["inbox_pending"] == 0)

        await wait_for_async(resolved)
        standin.state.delete_group(ONCALL)
        gone = note(None)
        gone["value"][0]["resourceData"]["@removed"] = {"reason": "deleted"}
        reply = await client.post("/hooks/graph", json=gone)
        assert reply.status_code == 202 and reply.json()["queued"] == 2
        await wait_for_async(lambda: len(cor.detaches) == 2)
        assert sorted(detached(cor)) == [
            ("adele@acme.example", ["WS-ENG", "WS-ONCALL"]),
            ("joe@acme.example", ["WS-ENG", "WS-ONCALL"]),
        ]
        # Graph retries the deletion: the bridge knows nobody in the group any more.
        again = await client.post("/hooks/graph", json=gone)
        assert again.json()["queued"] == 0
        events = await history(client, "joe@acme.example")
        assert events[-1]["detail"][0].startswith(f"graph group {ONCALL} was deleted")


def note(members: list[dict[str, Any]] | None) -> dict[str, Any]:
    body = load_fixture("graph/notification-member-removed.json")
    body["value"][0].update(clientState=STATE, subscriptionExpirationDateTime=FUTURE)
    data = body["value"][0]["resourceData"]
    if members is None:
        del data["members@delta"]
    else:
        data["members@delta"] = members
    return body


async def test_delta_runs_with_credentials_alone_no_webhook_needed(
    start: Start, standin: StandinServer, cor: FakeCor
):
    async with start(webhook=False) as client:
        last = await rounds_done(client, None, covered=1)
        standin.state.remove_member(ONCALL, ADELE)
        await rounds_done(client, last, covered=1)
        await wait_for_async(lambda: len(cor.detaches) == 1)
        assert detached(cor) == [("adele@acme.example", ["WS-ENG", "WS-ONCALL"])]
        graph = (await client.get("/readyz")).json()["checks"]["graph"]
        assert graph["on"] is False and graph["subscriptions"] == []  # the webhook is off
        assert (await client.post("/hooks/graph", json={"value": []})).status_code == 404
