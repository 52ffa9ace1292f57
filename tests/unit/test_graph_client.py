"""The Graph client against the Graph stand-in over loopback HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.changes import GroupRef, UserRef
from app.errors import PermanentError, RetryableError
from app.graph.client import GraphClient, GraphCredentials
from app.http import NotFoundError, UnsafeIdentifierError
from tests.graph_standin import CLIENT_ID, CLIENT_SECRET, TENANT, StandinServer

ENG = "0bc7d487-fd6f-41a0-8362-71ec81074f11"


@pytest.fixture(autouse=True)
def standin(standin_server: StandinServer) -> StandinServer:
    standin_server.state.reset()
    return standin_server


async def test_lookups_share_one_token(graph_client: GraphClient, standin: StandinServer):
    standin.state.add_group(ENG, "Engineering")
    standin.state.add_user("u1", "adele@acme.example", mail="adele@acme.example")
    assert await graph_client.get_group(ENG) == GroupRef(id=ENG, name="Engineering")
    assert await graph_client.get_user("u1") == UserRef(
        id="u1", login="adele@acme.example", email="adele@acme.example"
    )
    assert len(standin.state.calls_to("/oauth2/v2.0/token")) == 1
    [call] = standin.state.calls_to("/users/u1")
    assert call["query"]["$select"] == "id,userPrincipalName,mail"


async def test_a_rejected_token_is_fetched_again_once(
    graph_client: GraphClient, standin: StandinServer
):
    standin.state.add_group(ENG, "Engineering")
    await graph_client.get_group(ENG)
    standin.state.tokens.clear()  # Graph stops accepting the cached token
    assert (await graph_client.get_group(ENG)).name == "Engineering"
    assert len(standin.state.calls_to("/oauth2/v2.0/token")) == 2


async def test_bad_credentials_are_waited_for_and_never_echo_the_secret(standin: StandinServer):
    """A wrong or expired client secret is the operator's to fix: retried (the entries wait,
    until BRIDGE_MAX_AGE_SECONDS), not a dead letter for every entry meanwhile."""
    async with httpx.AsyncClient() as http:
        creds = GraphCredentials(TENANT, CLIENT_ID, "wrong-secret-value")
        graph_client = GraphClient(http, standin.api_url, standin.url, creds)
        with pytest.raises(RetryableError) as caught:
            await graph_client.get_group(ENG)
    assert "AADSTS7000215" in str(caught.value)
    assert "wrong-secret-value" not in str(caught.value)


async def test_throttling_is_retryable_with_retry_after(
    graph_client: GraphClient, standin: StandinServer
):
    standin.state.fault(429, path_contains="/groups/", retry_after=7)
    with pytest.raises(RetryableError) as caught:
        await graph_client.get_group(ENG)
    assert caught.value.status == 429 and caught.value.retry_after == 7
    standin.state.fault(503, path_contains="/groups/")
    with pytest.raises(RetryableError):
        await graph_client.get_group(ENG)


async def test_not_found_and_forbidden(graph_client: GraphClient, standin: StandinServer):
    with pytest.raises(NotFoundError):
        await graph_client.get_user("nobody")
    standin.state.fault(403, path_contains="/users/")  # a permission not granted (yet)
    with pytest.raises(RetryableError) as waited:
        await graph_client.get_user("nobody")
    assert waited.value.status == 403
    standin.state.fault(400, path_contains="/users/")
    with pytest.raises(PermanentError) as caught:
        await graph_client.get_user("nobody")
    assert not isinstance(caught.value, NotFoundError) and caught.value.status == 400


async def test_transitive_groups_follow_pages_and_leave_roles_out(
    graph_client: GraphClient, standin: StandinServer
):
    standin.state.page_size = 2
    for n in range(5):
        standin.state.add_group(f"g{n}", f"Group {n}")
    standin.state.add_user("u1", "adele@acme.example", groups=tuple(f"g{n}" for n in range(5)))
    groups = await graph_client.transitive_groups("u1")
    assert [g.id for g in groups] == ["g0", "g1", "g2", "g3", "g4"]
    assert groups[0].name == "Group 0"
    assert len(standin.state.calls_to("/transitiveMemberOf")) == 3  # 6 items, 2 a page


async def test_a_next_link_to_another_host_is_refused():
    def graph(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        return httpx.Response(200, json={"value": [], "@odata.nextLink": "https://evil.test/x"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(graph)) as http:
        graph_client = GraphClient(
            http, "https://graph.test/v1.0", "https://login.test", GraphCredentials("t", "c", "s")
        )
        with pytest.raises(PermanentError, match="nextLink"):
            await graph_client.transitive_groups("u1")


async def test_network_errors_are_retryable(standin: StandinServer):
    async with httpx.AsyncClient(timeout=2.0) as http:
        creds = GraphCredentials(TENANT, CLIENT_ID, CLIENT_SECRET)
        graph_client = GraphClient(http, "http://127.0.0.1:9/v1.0", "http://127.0.0.1:9", creds)
        with pytest.raises(RetryableError):
            await graph_client.get_group(ENG)


async def test_subscriptions_create_renew_reauthorize_list(
    graph_client: GraphClient, standin: StandinServer
):
    standin.state.validate_urls = False
    expires = datetime(2026, 12, 20, 11, 0, tzinfo=UTC)
    created = await graph_client.create_subscription(
        f"/groups/{ENG}",
        notification_url="https://bridge.example/hooks/graph",
        lifecycle_url="https://bridge.example/hooks/graph/lifecycle",
        client_state="state",
        expires_at=expires,
    )
    [call] = standin.state.calls_to("/v1.0/subscriptions", "POST")
    assert call["body"]["changeType"] == "updated"
    assert call["body"]["expirationDateTime"] == "2026-12-20T11:00:00Z"
    assert call["body"]["lifecycleNotificationUrl"].endswith("/lifecycle")
    assert created.expires_at == expires
    renewed = await graph_client.renew_subscription(created.id, expires + timedelta(days=1))
    assert renewed.expires_at == expires + timedelta(days=1)
    await graph_client.reauthorize_subscription(created.id)
    assert [s.id for s in await graph_client.list_subscriptions()] == [created.id]
    with pytest.raises(NotFoundError):
        await graph_client.renew_subscription("gone", expires)


@pytest.mark.parametrize("bad", [".", ".."])
async def test_an_id_that_is_no_path_segment_is_never_sent(
    graph_client: GraphClient, standin: StandinServer, bad: str
):
    standin.state.add_user("u1", "adele@acme.example")
    for call in (
        graph_client.get_user(bad),
        graph_client.get_group(bad),
        graph_client.transitive_groups(bad),
        graph_client.renew_subscription(bad, datetime(2026, 12, 20, tzinfo=UTC)),
        graph_client.reauthorize_subscription(bad),
    ):
        with pytest.raises(UnsafeIdentifierError):
            await call
    assert standin.state.calls == []  # not even a token


async def test_path_like_ids_stay_one_segment(graph_client: GraphClient, standin: StandinServer):
    standin.state.add_user("...", "odd@acme.example")
    assert (await graph_client.get_user("...")).login == "odd@acme.example"
    for missing in ("%2e%2e", "a/../b", "../../oauth2/v2.0/token"):
        with pytest.raises(NotFoundError):
            await graph_client.get_user(missing)
    paths = [c["raw_path"] for c in standin.state.calls if "/users" in c["raw_path"]]
    assert paths == [
        "/v1.0/users/...",
        "/v1.0/users/%252e%252e",
        "/v1.0/users/a%2F..%2Fb",
        "/v1.0/users/..%2F..%2Foauth2%2Fv2.0%2Ftoken",
    ]
