"""The Okta client against the Okta stand-in over loopback HTTP: paging, the System Log
polling cursor, rate limits, errors, and the service app's signed client assertion."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.errors import PermanentError, RetryableError
from app.http import NotFoundError
from app.okta import credentials
from app.okta.client import OktaClient, RateGate
from app.okta.log_poller import EVENT_TYPES
from app.okta.service import okta_client
from app.okta.standin import STANDIN_TOKEN, Fault, Org, create_okta_standin
from app.settings import Settings
from tests.graph_standin import StandinServer

STANDIN = create_okta_standin()


@pytest.fixture(scope="module")
def server() -> Iterator[StandinServer]:
    served = StandinServer(STANDIN).start()
    yield served
    served.stop()


@pytest.fixture
def org(server: StandinServer) -> Org:
    """A fresh, empty org behind the module's server."""
    fresh = Org()
    STANDIN.state.org = fresh
    return fresh


@pytest.fixture
async def client(server: StandinServer, org: Org) -> AsyncIterator[OktaClient]:
    async with httpx.AsyncClient(timeout=5) as http:
        tokens = credentials.api_token(STANDIN_TOKEN)
        yield OktaClient(http, server.url, tokens, credentials.ssws)


def add(org: Org, user_id: str, *groups: str) -> None:
    org.users[user_id] = {"id": user_id, "status": "ACTIVE", "profile": {"login": f"{user_id}@x"}}
    for group_id in groups:
        org.groups.setdefault(group_id, {"id": group_id, "profile": {"name": f"n-{group_id}"}})
        org.members.setdefault(group_id, []).append(user_id)


async def test_a_users_groups_and_a_groups_members_are_read_across_pages(client, org):
    groups = [f"00g{i:04}" for i in range(450)]
    add(org, "00ujane", *groups)
    for i in range(230):
        add(org, f"00u{i:04}", "00g0001")
    found = await client.user_groups("00ujane")
    assert [g.id for g in found] == ["00geveryone000000000", *groups]
    assert found[1].name == "n-00g0000"
    members = [u.id async for u in client.group_members("00g0001")]
    assert len(members) == 231 and members[0] == "00ujane"
    pages = [c for c in org.calls if "/groups/00g0001/users" in c]
    assert len(pages) == 2  # 200 a page, Link rel="next" followed


async def test_status_and_a_deleted_user(client, org):
    add(org, "00ujane")
    org.users["00ujane"]["status"] = "DEPROVISIONED"
    user = await client.get_user("00ujane")
    assert user.deprovisioned and user.login == "00ujane@x"
    with pytest.raises(NotFoundError, match="E0000007"):
        await client.get_user("00ugone")


async def test_a_wrong_token_is_a_retryable_error_that_names_okta_s_code(server, org):
    async with httpx.AsyncClient() as http:
        client = OktaClient(http, server.url, credentials.api_token("wrong"), credentials.ssws)
        with pytest.raises(RetryableError) as caught:
            await client.get_user("00ujane")
    assert caught.value.status == 401 and "E0000011" in str(caught.value)
    assert "wrong" not in str(caught.value)
    assert len(org.calls) == 2  # one fresh try after the 401
    assert client.last_error == caught.value.message


async def test_5xx_and_429_are_retryable_and_429_waits_for_the_reset(client, org):
    add(org, "00ujane")
    org.faults.append(Fault(503))
    with pytest.raises(RetryableError, match="503"):
        await client.get_user("00ujane")
    org.rate_limit = 0
    with pytest.raises(RetryableError) as caught:
        await client.get_user("00ujane")
    assert caught.value.status == 429
    assert caught.value.retry_after is not None and 0 <= caught.value.retry_after <= 61


def test_the_rate_gate_waits_for_the_reset_when_a_bucket_runs_low():
    now = [1000.0]
    gate = RateGate(clock=lambda: now[0])
    low = httpx.Headers(
        {"X-Rate-Limit-Limit": "100", "X-Rate-Limit-Remaining": "5", "X-Rate-Limit-Reset": "1030"}
    )
    gate.note("/api/v1/users", low)
    assert gate._resume_at["/api/v1/users"] == 1030  # 5 left of 100: keep them for others
    plenty = httpx.Headers(
        {"X-Rate-Limit-Limit": "100", "X-Rate-Limit-Remaining": "50", "X-Rate-Limit-Reset": "1030"}
    )
    gate.note("/api/v1/users", plenty)
    assert gate._resume_at["/api/v1/users"] == 0
    gate.pause("/api/v1/users", 12.0)  # a 429: the whole bucket waits for the reset
    assert gate._resume_at["/api/v1/users"] == 1012


async def test_the_system_log_is_read_from_a_cursor_that_always_links_on(client, org):
    add(org, "00ujane", "00gA")
    since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    first = client.first_log_url(since, EVENT_TYPES)
    page = await client.log_page(first)
    assert page.events == [] and page.next_url  # nothing yet; a link to ask again
    org.event("group.user_membership.remove", org.user_target("00ujane"), {"id": "00gA"})
    org.event("user.session.start", org.user_target("00ujane"))  # filtered out by Okta
    page = await client.log_page(page.next_url)
    assert [e["eventType"] for e in page.events] == ["group.user_membership.remove"]
    again = await client.log_page(page.next_url)
    assert again.events == []  # the cursor moved past it


async def test_a_link_to_another_host_is_refused(client, org):
    with pytest.raises(PermanentError, match="outside"):
        await client.log_page("http://203.0.113.9/api/v1/logs?after=1")


async def test_the_service_app_signs_a_client_assertion_okta_can_verify(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    (tmp_path / "key.pem").write_text(pem)
    seen: list[dict[str, str]] = []

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        seen.append(form)
        claims = jwt.decode(
            form["client_assertion"],
            key.public_key(),
            algorithms=["RS256"],
            audience="https://acme.okta.test/oauth2/v1/token",
        )
        assert claims["iss"] == claims["sub"] == "0oa-app"
        return httpx.Response(200, json={"access_token": "at-1", "expires_in": 3600})

    async with httpx.AsyncClient(transport=httpx.MockTransport(token_endpoint)) as http:
        read = credentials.read_private_key(str(tmp_path / "key.pem"))
        tokens = credentials.service_app(http, "https://acme.okta.test", "0oa-app", read)
        assert await tokens.get() == "at-1"
        assert await tokens.get() == "at-1"  # cached
    assert len(seen) == 1
    assert seen[0]["scope"] == "okta.users.read okta.groups.read okta.logs.read"
    assert seen[0]["client_assertion_type"].endswith("jwt-bearer")


def test_a_file_that_is_no_private_key_is_a_config_error(tmp_path):
    (tmp_path / "key.pem").write_text(json.dumps({"not": "a key"}))
    with pytest.raises(Exception, match="not an RSA private key") as caught:
        credentials.read_private_key(str(tmp_path / "key.pem"))
    assert str(tmp_path / "key.pem") in str(caught.value)


async def test_a_service_app_that_requires_dpop_gets_a_proof_per_request_and_its_nonce(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    seen: list[tuple[str, dict[str, object]]] = []

    def verified(request: httpx.Request) -> dict[str, object]:
        proof = request.headers["DPoP"]
        header = jwt.get_unverified_header(proof)
        assert header["typ"] == "dpop+jwt" and "d" not in header["jwk"]  # public part only
        public = jwt.algorithms.ECAlgorithm.from_jwk(header["jwk"])
        claims: dict[str, object] = jwt.decode(proof, public, algorithms=["ES256"])
        assert claims["htm"] == request.method
        assert claims["htu"] == str(request.url.copy_with(query=None))
        seen.append((request.url.path, claims))
        return claims

    bodies: list[str] = []

    def okta(request: httpx.Request) -> httpx.Response:
        claims = verified(request)
        if request.url.path == "/oauth2/v1/token":
            bodies.append(request.content.decode())
        server_nonce = "n-token" if request.url.path.startswith("/oauth2") else "n-api"
        if claims.get("nonce") != server_nonce:
            body = {
                "error": "use_dpop_nonce",
                "error_description": "Authorization server requires nonce in DPoP proof.",
            }
            status = 400 if server_nonce == "n-token" else 401
            return httpx.Response(status, json=body, headers={"DPoP-Nonce": server_nonce})
        if request.url.path == "/oauth2/v1/token":
            return httpx.Response(
                200, json={"access_token": "at-1", "token_type": "DPoP", "expires_in": 3600}
            )
        assert request.headers["Authorization"] == "DPoP at-1"
        assert claims["ath"] == "R8PYaIQdcYEdkSc9TeGyiUqSAedmCQuOQImPRh1E3HI"  # sha256("at-1")
        return httpx.Response(200, json={"id": "00ujane", "status": "ACTIVE", "profile": {}})

    (tmp_path / "key.pem").write_text(pem)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        okta_org_url="https://acme.okta.test",
        okta_client_id="0oa-app",
        okta_private_key_file=str(tmp_path / "key.pem"),
        okta_dpop=True,
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(okta)) as http:
        client = okta_client(settings, http)
        assert (await client.get_user("00ujane")).status == "ACTIVE"
        assert (await client.get_user("00ujane")).status == "ACTIVE"  # nonces remembered
    paths = [path for path, _ in seen]
    assert paths == ["/oauth2/v1/token"] * 2 + ["/api/v1/users/00ujane"] * 3
    # The token request after Okta's nonce challenge signed a new client assertion.
    assertions = [dict(httpx.QueryParams(a)).get("client_assertion") for a in bodies]
    assert len(set(assertions)) == 2
