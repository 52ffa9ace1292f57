"""The Graph webhook in process: handshake, auth, dedupe, unknown subscriptions, lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.errors import ConfigError
from app.store import Database
from app.store import graph as graph_store
from app.store.schema import events
from tests.builders import load_fixture
from tests.fake_cor import FakeCor
from tests.graph_standin import StandinServer
from tests.inprocess import ADMIN, make_client
from tests.waiting import wait_for_async

STATE = "graph-client-state-for-tests"
SUB = "092ba742-89d2-4417-a4c7-c120db062842"
GROUP = "0bc7d487-fd6f-41a0-8362-71ec81074f11"
# The fixtures' expiry is a fixed date; one in the future keeps these tests true after it.
FUTURE = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0).isoformat()
LEFT = "4d147cc8-10cb-4158-ac52-90ee8ff9d846"
JOINED = "7a1e0d22-3a52-4b55-8e0c-0c0a7b1f9e31"
MAPPING = f"""
providers:
  entra:
    cor_source: MICROSOFT_DYNAMICS
    user_id: "{{login}}"
groups:
  - provider: entra
    group_id: {GROUP}
    workspaces: [WS-ENG, WS-ONCALL]
"""


@pytest.fixture
def standin(standin_server: StandinServer) -> StandinServer:
    standin_server.state.reset()
    standin_server.state.add_user(LEFT, "adele@acme.example")
    standin_server.state.add_user(JOINED, "joe@acme.example")
    return standin_server


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (`inbox` reads the file): the Graph store runs on both engines elsewhere."""
    return f"sqlite:///{tmp_path}/bridge.db"


@pytest.fixture
def bridge_settings(standin: StandinServer, tmp_path: Path) -> dict[str, Any]:
    """Graph on, against the stand-in; the app starts with subscription SUB on record."""
    register(tmp_path, SUB, expires=datetime.now(UTC) + timedelta(days=20))
    return {"mapping_text": MAPPING, "graph_client_state": STATE, **standin.settings()}


def register(tmp_path: Path, sub: str, *, expires: datetime) -> None:
    db = Database(f"sqlite:///{tmp_path}/bridge.db")
    db.migrate()
    with db.begin() as conn:
        graph_store.put_subscription(conn, sub, f"/groups/{GROUP}", expires, datetime.now(UTC))
    db.dispose()


def notification(client_state: str = STATE, **changes: Any) -> dict[str, Any]:
    body = load_fixture("graph/notification-member-removed.json")
    body["value"][0].update(clientState=client_state, subscriptionExpirationDateTime=FUTURE)
    body["value"][0].update(changes)
    return body


async def inbox(tmp_path: Path) -> dict[str, Any]:
    db = Database(f"sqlite:///{tmp_path}/bridge.db")
    with db.begin() as conn:
        stats = graph_store.inbox_stats(conn)
    db.dispose()
    return stats


@pytest.mark.parametrize("path", ["/hooks/graph", "/hooks/graph/lifecycle"])
async def test_the_validation_handshake_echoes_the_decoded_token(
    client: httpx.AsyncClient, path: str
):
    fixture = load_fixture("graph/validation-request.json")
    query = fixture["path"].split("?", 1)[1]
    reply = await client.post(f"{path}?{query}", content=b"")
    assert reply.status_code == fixture["expect"]["status"]
    assert reply.headers["content-type"].startswith(fixture["expect"]["content_type"])
    assert reply.text == fixture["expect"]["body"]
    assert reply.headers["x-content-type-options"] == "nosniff"


async def test_a_removal_reaches_cor_once_however_often_graph_retries(
    client: httpx.AsyncClient, cor: FakeCor, standin: StandinServer
):
    reply = await client.post("/hooks/graph", json=notification())
    assert reply.status_code == 202
    assert reply.json() == {"queued": 2, "retries": 0, "ignored": 0, "lifecycle": 0}
    await wait_for_async(lambda: bool(cor.detaches))
    again = await client.post("/hooks/graph", json=notification())
    assert again.json()["retries"] == 2 and again.json()["queued"] == 0
    history = (await client.get("/admin/users/adele@acme.example/history", headers=ADMIN)).json()
    assert [(e["kind"], e["decision"]) for e in history["events"]] == [("removed", "queued")]
    assert cor.sent() == [
        (
            "/v2/integrations/users/adele@acme.example/detach",
            {"workspaces": ["WS-ENG", "WS-ONCALL"], "metadata": {"source": "MICROSOFT_DYNAMICS"}},
        )
    ]
    graph = (await client.get("/readyz")).json()["checks"]["graph"]
    assert graph["on"] and graph["credentials"] and graph["inbox_pending"] == 0
    [sub] = graph["subscriptions"]
    assert sub["id"] == SUB and 19 * 86400 < sub["expires_in_seconds"] <= 20 * 86400


async def test_dotted_ids_are_ignored_and_the_rest_of_the_delivery_counts(
    client: httpx.AsyncClient, cor: FakeCor, standin: StandinServer, tmp_path: Path
):
    standin.state.add_user(ODD, "..")  # a userPrincipalName no COR user id can be
    members = [{"id": m, "@removed": "deleted"} for m in ("..", ".", ODD, LEFT)]
    body = notification(resourceData={"id": GROUP, "members@delta": members})
    steered = notification(id="n-2", resource="Groups/..", resourceData={"members@delta": members})
    body["value"] += steered["value"]
    reply = await client.post("/hooks/graph", json=body)
    assert reply.status_code == 202
    assert reply.json() == {"queued": 2, "retries": 0, "ignored": 3, "lifecycle": 0}
    await wait_for_async(lambda: bool(cor.detaches))
    await wait_for_async(lambda: inbox_empty(tmp_path))
    decided = await decisions(tmp_path)
    assert decided[".."] == ("ignored", [MEMBER_REASON.format("'..'")])
    assert decided["."] == ("ignored", [MEMBER_REASON.format("'.'")])
    assert decided["graph:n-2"][0] == "ignored" and "group id '..'" in decided["graph:n-2"][1][0]
    assert decided[ODD][0] == "unresolved" and "'..' is not a usable" in decided[ODD][1][0]
    assert decided[LEFT][0] == "queued"
    assert [path for path, _ in cor.sent()] == ["/v2/integrations/users/adele@acme.example/detach"]
    assert cor.raw_paths == ["/v2/integrations/users/adele%40acme.example/detach"]
    looked_up = {c["raw_path"] for c in standin.state.calls if "/token" not in c["raw_path"]}
    # Only the two real ids were looked up, each as one segment.
    assert looked_up == {
        f"/v1.0/users/{m}{t}" for m in (ODD, LEFT) for t in ("", "/transitiveMemberOf")
    }


ODD = "0dd0dd00-0000-4000-8000-000000000000"
MEMBER_REASON = (
    "member id {} is not a usable identifier in a URL path (empty or a dot segment); "
    "not looked up, nothing detached"
)


def inbox_empty(tmp_path: Path) -> bool:
    db = Database(f"sqlite:///{tmp_path}/bridge.db")
    with db.begin() as conn:
        stats = graph_store.inbox_stats(conn)
    db.dispose()
    return bool(stats["pending"] == 0)


async def decisions(tmp_path: Path) -> dict[str, tuple[str, list[str]]]:
    """Each recorded Graph event by member id (or its own key), with decision and detail."""
    db = Database(f"sqlite:///{tmp_path}/bridge.db")
    with db.begin() as conn:
        rows = conn.execute(select(events.c.source_event_id, events.c.decision, events.c.detail))
        found = {key: (decision, detail) for key, decision, detail in rows}
    db.dispose()
    # An entry's key is "<notification key>:<member id>:removed".
    return {(k.split(":")[-2] if k.endswith(":removed") else k): v for k, v in found.items()}


async def test_a_wrong_client_state_is_401_and_stores_nothing(
    client: httpx.AsyncClient, tmp_path: Path
):
    body = notification()
    body["value"].append(notification("not-the-state")["value"][0])
    reply = await client.post("/hooks/graph", json=body)
    assert reply.status_code == 401 and STATE not in reply.text
    missing = notification()
    del missing["value"][0]["clientState"]
    assert (await client.post("/hooks/graph", json=missing)).status_code == 401
    assert (await inbox(tmp_path))["pending"] == 0


async def test_unknown_and_expired_subscriptions_are_recorded_and_acknowledged(
    client: httpx.AsyncClient, tmp_path: Path, cor: FakeCor
):
    unknown = notification(subscriptionId="not-ours")
    reply = await client.post("/hooks/graph", json=unknown)
    assert reply.status_code == 202 and reply.json()["ignored"] == 1
    past = notification(subscriptionExpirationDateTime="2020-01-01T00:00:00Z")
    reply = await client.post("/hooks/graph", json=past)
    assert reply.status_code == 202 and reply.json()["ignored"] == 1
    assert (await inbox(tmp_path))["pending"] == 0 and cor.detaches == []


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{not json", 400), (b'{"value": 3}', 400), (b"x" * (2 * 1024 * 1024), 413)],
)
async def test_bad_bodies_are_refused(client: httpx.AsyncClient, body: bytes, status: int):
    reply = await client.post("/hooks/graph", content=body)
    assert reply.status_code == status and reply.json()["detail"]


async def test_reauthorization_required_reaches_graph(
    client: httpx.AsyncClient, standin: StandinServer
):
    standin.state.subscriptions[SUB] = {"id": SUB, "expirationDateTime": "2026-12-20T11:00:00Z"}
    body = load_fixture("graph/lifecycle-reauthorization-required.json")
    body["value"][0].update(clientState=STATE, subscriptionExpirationDateTime=FUTURE)
    reply = await client.post("/hooks/graph/lifecycle", json=body)
    assert reply.status_code == 202 and reply.json()["lifecycle"] == 1
    await wait_for_async(lambda: bool(standin.state.calls_to(f"/subscriptions/{SUB}/reauthorize")))


async def test_graph_off_answers_404_even_to_the_handshake(tmp_path: Path, cor: FakeCor):
    async with make_client(tmp_path, cor, mapping_text=MAPPING) as c:
        for path in ("/hooks/graph", "/hooks/graph/lifecycle"):
            assert (await c.post(f"{path}?validationToken=x")).status_code == 404
            assert (await c.post(path, json=notification())).status_code == 404
        graph = (await c.get("/readyz")).json()["checks"]["graph"]
        assert graph == {"on": False, "credentials": False, "subscriptions": [], "inbox_pending": 0}


async def test_ids_only_without_credentials(tmp_path: Path, cor: FakeCor):
    mapping = MAPPING.replace('"{login}"', '"{id}"')
    async with make_client(tmp_path, cor, mapping_text=mapping, graph_client_state=STATE) as c:
        register(tmp_path, SUB, expires=datetime.now(UTC) + timedelta(days=1))
        assert (await c.post("/hooks/graph", json=notification())).status_code == 202
        await wait_for_async(lambda: bool(cor.detaches))
        assert cor.detaches[0].path == f"/v2/integrations/users/{LEFT}/detach"
        assert (await c.get("/readyz")).json()["checks"]["graph"]["credentials"] is False


async def test_a_login_template_without_credentials_refuses_to_start(tmp_path: Path, cor: FakeCor):
    with pytest.raises(ConfigError, match="user_id template uses \\{login\\}"):
        async with make_client(tmp_path, cor, mapping_text=MAPPING, graph_client_state=STATE):
            pass


async def test_a_post_past_the_notification_cap_is_refused_whole(
    tmp_path: Path, cor: FakeCor, standin: StandinServer
):
    settings: dict[str, Any] = {"graph_client_state": STATE, **standin.settings()}
    settings["bridge_max_events_per_delivery"] = 2
    async with make_client(tmp_path, cor, mapping_text=MAPPING, **settings) as client:
        body = notification()
        body["value"] = body["value"] * 3
        reply = await client.post("/hooks/graph", json=body)
        assert reply.status_code == 413
        assert reply.json()["detail"].startswith("3 notifications in one delivery; the limit is 2")
        body["value"] = body["value"][:2]
        assert (await client.post("/hooks/graph", json=body)).status_code == 202
