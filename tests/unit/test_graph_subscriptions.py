"""Subscriptions: create, renew before expiry (with a clock we move), reauthorize."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.graph.client import GraphClient
from app.graph.subscriptions import SubscriptionManager, mapped_resources
from app.mapping import parse_mapping
from app.settings import Settings
from app.store import Database
from app.store import graph as graph_store
from tests.graph_standin import StandinServer

GROUP = "0bc7d487-fd6f-41a0-8362-71ec81074f11"
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def standin(standin_server: StandinServer) -> StandinServer:
    standin_server.state.reset()
    standin_server.state.validate_urls = False  # no bridge listens in these tests
    return standin_server


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def manager(
    db: Database, graph_client: GraphClient, clock: Clock, **settings: object
) -> SubscriptionManager:
    values: dict[str, object] = {
        "graph_client_state": "state",
        "graph_notification_url": "https://bridge.example/hooks/graph",
        "graph_subscription_minutes": 60 * 24,
        "graph_renew_before_seconds": 3600,
        **settings,
    }
    return SubscriptionManager(db, graph_client, Settings(_env_file=None, **values), clock=clock)  # type: ignore[call-arg]


def stored(db: Database) -> list[graph_store.StoredSubscription]:
    with db.begin() as conn:
        return graph_store.list_subscriptions(conn)


async def test_subscribe_creates_once_with_both_urls(
    db: Database, graph_client: GraphClient, standin: StandinServer
):
    clock = Clock()
    subs = manager(db, graph_client, clock)
    first = await subs.subscribe(f"/groups/{GROUP}")
    again = await subs.subscribe(f"/groups/{GROUP}")
    assert first.created and not again.created
    [call] = standin.state.calls_to("/v1.0/subscriptions", "POST")
    assert (
        call["body"]["lifecycleNotificationUrl"] == "https://bridge.example/hooks/graph/lifecycle"
    )
    assert call["body"]["clientState"] == "state"
    [row] = stored(db)
    assert row.expires_at == T0 + timedelta(days=1) and row.resource == f"/groups/{GROUP}"


async def test_renewal_happens_before_expiry_and_not_earlier(
    db: Database, graph_client: GraphClient, standin: StandinServer
):
    clock = Clock()
    subs = manager(db, graph_client, clock)
    await subs.subscribe(f"/groups/{GROUP}")
    # Due in 23 hours: the loop still looks again within the hour.
    assert await subs.run_once() == 3600
    clock.now = T0 + timedelta(hours=22, minutes=50)  # due in ten minutes: sleep until then
    assert await subs.run_once() == pytest.approx(600)
    assert standin.state.calls_to("/subscriptions/", "PATCH") == []
    clock.now = T0 + timedelta(hours=23, minutes=30)  # within the hour before expiry
    await subs.run_once()
    [patch] = standin.state.calls_to("/subscriptions/", "PATCH")
    assert patch["body"]["expirationDateTime"] == "2026-11-29T11:30:00Z"
    [row] = stored(db)
    assert row.expires_at == clock.now + timedelta(days=1)
    assert row.last_renewed_at == clock.now and row.last_error is None


async def test_a_failed_renewal_is_recorded_and_tried_again_soon(
    db: Database, graph_client: GraphClient, standin: StandinServer
):
    clock = Clock()
    subs = manager(db, graph_client, clock)
    await subs.subscribe(f"/groups/{GROUP}")
    clock.now = T0 + timedelta(hours=23, minutes=30)
    standin.state.fault(503, path_contains="/subscriptions/")
    assert await subs.run_once() == 60
    assert "503" in (stored(db)[0].last_error or "")
    await subs.run_once()
    assert stored(db)[0].last_error is None


async def test_a_subscription_graph_lost_says_how_to_recover(
    db: Database, graph_client: GraphClient
):
    clock = Clock()
    with db.begin() as conn:
        graph_store.put_subscription(conn, "gone", "/groups/x", T0 + timedelta(minutes=5), T0)
    await manager(db, graph_client, clock).run_once()
    assert "cor-bridge graph subscribe" in (stored(db)[0].last_error or "")
    clock.now = T0 + timedelta(hours=1)  # and once it has expired
    with db.begin() as conn:
        graph_store.put_subscription(conn, "gone", "/groups/x", T0 + timedelta(minutes=5), T0)
    await manager(db, graph_client, clock).run_once()
    assert stored(db)[0].last_error.startswith("expired")  # type: ignore[union-attr]


async def test_reauthorization_requests_are_answered(
    db: Database, graph_client: GraphClient, standin: StandinServer
):
    clock = Clock()
    subs = manager(db, graph_client, clock)
    outcome = await subs.subscribe(f"/groups/{GROUP}")
    assert outcome.subscription is not None
    with db.begin() as conn:
        assert graph_store.request_reauthorization(conn, outcome.subscription.id, T0)
    await subs.run_once()
    assert len(standin.state.calls_to("/reauthorize", "POST")) == 1
    assert stored(db)[0].reauthorize_requested_at is None
    await subs.run_once()
    assert len(standin.state.calls_to("/reauthorize", "POST")) == 1


async def test_mapped_resources_resolve_names_to_every_matching_group(
    graph_client: GraphClient, standin: StandinServer
):
    standin.state.add_group("fin-1", "Finance")
    standin.state.add_group("fin-2", "Finance")
    mapping = parse_mapping(
        f"""
groups:
  - {{provider: entra, group_id: {GROUP}, workspaces: [WS-ENG]}}
  - {{provider: entra, group_name: Finance, workspaces: [WS-FIN]}}
  - {{provider: entra, group_name: "O'Brien's", workspaces: [WS-OPS]}}
  - {{provider: okta, group_id: 00gokta, workspaces: [WS-OPS]}}
"""
    )
    resources, notes = await mapped_resources(graph_client, mapping)
    assert resources == [f"/groups/{GROUP}", "/groups/fin-1", "/groups/fin-2"]
    assert notes == ["line 5: no Entra group is named \"O'Brien's\""]
