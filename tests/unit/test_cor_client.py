"""The COR client against a fake COR behind httpx.MockTransport."""

from __future__ import annotations

import asyncio
import base64
import traceback
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from app.delivery.cor import ClientCredentials, CorClient
from app.errors import DeliveryError, PermanentError, RetryableError
from app.http import TOKEN_MARGIN_SECONDS, StaticToken, UnsafeIdentifierError, parse_retry_after
from tests.builders import load_fixture
from tests.fake_cor import API_URL, CLIENT_ID, CLIENT_SECRET, TOKEN_URL, FakeCor, cor_error

STATIC = "static-SECRET-token"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http(cor: FakeCor) -> AsyncIterator[httpx.AsyncClient]:
    async with cor.client() as client:
        yield client


@pytest.fixture
def tokens(http: httpx.AsyncClient, clock: FakeClock) -> ClientCredentials:
    return ClientCredentials(http, TOKEN_URL, CLIENT_ID, CLIENT_SECRET, clock=clock)


@pytest.fixture(params=["client", "direct"])
def cor_client(
    request: pytest.FixtureRequest, cor: FakeCor, http: httpx.AsyncClient, tokens: ClientCredentials
) -> CorClient:
    """Through httpx's client (a proxy mounted for COR), or straight to its transport."""
    transport = cor.transport() if request.param == "direct" else None
    return CorClient(http, API_URL, tokens, transport=transport)


def assert_no_secret(exc: BaseException, *secrets: str) -> None:
    """Neither the error's text nor its whole chained traceback carries a secret."""
    told = str(exc) + "".join(traceback.format_exception(exc))
    if isinstance(exc, DeliveryError):
        told += exc.message
    for secret in (CLIENT_SECRET, *secrets):
        assert secret not in told


# --- the token --------------------------------------------------------------------------


async def test_token_is_fetched_with_client_credentials_and_basic_auth(cor, cor_client):
    await cor_client.detach("jane@acme.example", ["WS-ENG"], "OKTA")
    [req] = cor.token_requests
    assert req.method == "POST"
    assert str(req.url.copy_with(query=None)) == TOKEN_URL
    assert dict(req.url.params) == {"grant_type": "client_credentials"}
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert req.headers["Authorization"] == f"Basic {expected}"
    [call] = cor.detaches
    assert call.token == cor.issued[0]


async def test_token_is_cached_across_detaches(cor, cor_client):
    for ws in ("WS-ENG", "WS-ONCALL", "WS-FIN"):
        await cor_client.detach("jane@acme.example", [ws], "OKTA")
    assert len(cor.token_requests) == 1
    assert {c.token for c in cor.detaches} == {"at-SECRET-1"}


async def test_token_is_fetched_again_when_near_expiry(cor, tokens, clock):
    first = await tokens.get()
    clock.now += 3600 - TOKEN_MARGIN_SECONDS - 1
    assert await tokens.get() == first
    assert len(cor.token_requests) == 1
    clock.now += 1  # now within the margin of expiry
    second = await tokens.get()
    assert second != first
    assert second == "at-SECRET-2"
    assert len(cor.token_requests) == 2


async def test_a_short_lived_token_is_fetched_every_time(cor, tokens):
    cor.lifetime = 30  # shorter than the margin: never worth caching
    assert [await tokens.get() for _ in range(2)] == ["at-SECRET-1", "at-SECRET-2"]


async def test_token_endpoint_5xx_is_retryable(cor, tokens):
    cor.script_token(503)
    with pytest.raises(RetryableError) as caught:
        await tokens.get()
    assert caught.value.status == 503
    assert "token endpoint" in caught.value.message
    assert_no_secret(caught.value)


async def test_token_endpoint_429_keeps_retry_after(cor, tokens):
    cor.script_token(cor_error(429, headers={"Retry-After": "12"}))
    with pytest.raises(RetryableError) as caught:
        await tokens.get()
    assert caught.value.retry_after == 12


async def test_token_endpoint_unreachable_is_retryable(cor, tokens):
    cor.script_token(httpx.ConnectError("connection refused"))
    with pytest.raises(RetryableError) as caught:
        await tokens.get()
    assert caught.value.status is None
    assert "ConnectError" in caught.value.message
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert_no_secret(caught.value)


async def test_refused_credentials_are_retried_not_dead(http):
    # An operator fixes the secret; the removals must still be waiting then.
    wrong = ClientCredentials(http, TOKEN_URL, CLIENT_ID, "not-the-secret")
    with pytest.raises(RetryableError) as caught:
        await wrong.get()
    assert caught.value.status == 401
    assert "Unauthorized" in caught.value.message
    assert_no_secret(caught.value, "not-the-secret")


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, json={"token_type": "Bearer"}),
        httpx.Response(200, json={"access_token": None, "expires_in": 3600}),
        httpx.Response(200, json={"access_token": ""}),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, text="<html>maintenance</html>"),
    ],
)
async def test_a_token_reply_without_a_token_is_refused(cor, tokens, reply):
    cor.script_token(reply)
    with pytest.raises(RetryableError, match="no access_token"):
        await tokens.get()


async def test_a_failed_fetch_is_not_cached(cor, tokens):
    cor.script_token(500)
    with pytest.raises(RetryableError):
        await tokens.get()
    assert await tokens.get() == "at-SECRET-1"


async def test_fetch_outcomes_are_reported(cor, http):
    seen: list[str] = []
    tokens = ClientCredentials(http, TOKEN_URL, CLIENT_ID, CLIENT_SECRET, on_fetch=seen.append)
    cor.script_token(502, httpx.ReadTimeout("slow"))
    for _ in range(2):
        with pytest.raises(RetryableError):
            await tokens.get()
    await tokens.get()
    assert seen == ["502", "error", "ok"]


async def test_static_token_is_used_as_is(cor, http):
    cor.valid.add(STATIC)
    cor_client = CorClient(http, API_URL, StaticToken(STATIC))
    await cor_client.detach("jane@acme.example", ["WS-ENG"], "OKTA")
    assert cor.token_requests == []
    [call] = cor.detaches
    assert call.token == STATIC


async def test_a_static_token_cor_refuses_is_retried(cor, http):
    cor_client = CorClient(http, API_URL, StaticToken(STATIC))  # COR does not know it
    with pytest.raises(RetryableError) as caught:
        await cor_client.detach("jane@acme.example", ["WS-ENG"], "OKTA")
    assert caught.value.status == 401
    assert cor.token_requests == []
    assert_no_secret(caught.value, STATIC)


# --- 401 and the token refresh ---------------------------------------------------------


async def test_401_once_refetches_the_token_and_retries(cor, cor_client):
    await cor_client.detach("jane@acme.example", ["WS-ENG"], "OKTA")
    cor.revoke_tokens()
    result = await cor_client.detach("jane@acme.example", ["WS-ONCALL"], "OKTA")
    assert result.status == 200
    assert len(cor.token_requests) == 2
    assert [c.token for c in cor.detaches] == ["at-SECRET-1", "at-SECRET-1", "at-SECRET-2"]
    assert [c.workspaces for c in cor.detaches[1:]] == [["WS-ONCALL"], ["WS-ONCALL"]]


async def test_401_twice_is_retried_later(cor, cor_client):
    cor.script_detach(
        httpx.Response(401, json=load_fixture("cor/error-unauthorized.json")),
        httpx.Response(401, json=load_fixture("cor/error-unauthorized.json")),
    )
    with pytest.raises(RetryableError) as caught:
        await cor_client.detach("jane@acme.example", ["WS-ENG"], "OKTA")
    assert caught.value.status == 401
    assert "Unauthorized" in caught.value.message
    assert len(cor.detaches) == 2
    assert len(cor.token_requests) == 2
    assert_no_secret(caught.value, *cor.issued)


async def test_401_then_token_endpoint_down_is_retryable(cor, cor_client, tokens):
    await tokens.get()
    cor.script_detach(401)
    cor.script_token(503)
    with pytest.raises(RetryableError) as caught:
        await cor_client.detach("jane@acme.example", ["WS-ENG"], "OKTA")
    assert caught.value.status == 503
    assert len(cor.detaches) == 1


# --- what COR answers ------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retryable_and_keeps_the_status(cor, cor_client, status):
    cor.script_detach(cor_error(status, "ZC500", "Service unavailable"))
    with pytest.raises(RetryableError) as caught:
        await cor_client.detach("jane@acme.example", ["WS-ENG"], "OKTA")
    assert caught.value.status == status
    assert caught.value.code == "ZC500"
    assert caught.value.retry_after is None
    assert caught.value.message == f"COR answered {status} ZC500: Service unavailable"
    assert_no_secret(caught.value, *cor.issued)


async def test_429_with_retry_after_seconds(cor, cor_client):
    cor.script_detach(cor_error(429, headers={"Retry-After": "7"}))
    with pytest.raises(RetryableError) as caught:
        await cor_client.detach("jane@acme.example", ["WS-ENG"], "OKTA")
    assert caught.value.status == 429
    assert caught.value.retry_after == 7


async def test_429_with_retry_after_http_date(cor, cor_client):
    when = datetime.now(UTC) + timedelta(seconds=120)
    cor.script_detach(cor_error(429, headers={"Retry-After": format_datetime(when, usegmt=True)}))
    with pytest.raises(RetryableError) as caught:
        await cor_client.detach("jane@acme.example", ["WS-ENG"], "OKTA")
    assert caught.value.retry_after is not None
    assert 110 <= caught.value.retry_after <= 120


async def test_400_keeps_cors_code_and_message(cor, cor_client):
    cor.script_detach(httpx.Response(400, json=load_fixture("cor/error-unknown-user.json")))
    with pytest.raises(PermanentError) as caught:
        await cor_client.detach("jane@acme.example", ["WS-ENG"], "OKTA")
    err = caught.value
    assert (err.status, err.code) == (400, "ZC001")
    assert "Entity is not associated" in err.message
    assert str(err) == "COR answered 400 ZC001: Entity is not associated"
    assert_no_secret(err, *cor.issued)


@pytest.mark.parametrize("status", [403, 404, 409, 422])
async def test_other_4xx_is_permanent(cor, cor_client, status):
    cor.script_detach(status)
    with pytest.raises(PermanentError) as caught:
        await cor_client.detach("jane@acme.example", ["WS-ENG"], "OKTA")
    assert caught.value.status == status
    assert len(cor.detaches) == 1


async def test_a_non_json_error_keeps_a_short_text(cor, cor_client):
    cor.script_detach(httpx.Response(502, text="Bad Gateway" + "!" * 1000))
    with pytest.raises(RetryableError) as caught:
        await cor_client.detach("jane@acme.example", ["WS-ENG"], "OKTA")
    assert caught.value.code is None
    assert caught.value.message.startswith("COR answered 502: Bad Gateway")
    assert len(caught.value.message) < 300


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof")],
)
async def test_network_errors_and_timeouts_are_retryable(cor, cor_client, tokens, failure):
    await tokens.get()
    cor.script_detach(failure)
    with pytest.raises(RetryableError) as caught:
        await cor_client.detach("jane@acme.example", ["WS-ENG"], "OKTA")
    assert caught.value.status is None
    assert type(failure).__name__ in caught.value.message
    assert caught.value.__cause__ is failure
    assert_no_secret(caught.value, *cor.issued)


# --- the request and the reply ---------------------------------------------------------


async def test_the_user_id_is_url_encoded_in_the_path(cor, cor_client):
    await cor_client.detach("a/b@c d", ["WS-ENG"], "OKTA")
    [call] = cor.detaches
    assert call.raw_path == "/v2/integrations/users/a%2Fb%40c%20d/detach"
    assert call.user_id == "a/b@c d"


@pytest.mark.parametrize("user_id", ["", ".", ".."])
async def test_a_user_id_that_is_no_path_segment_is_never_sent(cor, cor_client, user_id):
    # httpx would resolve ".." and send PUT /v2/integrations/detach with our token.
    with pytest.raises(UnsafeIdentifierError) as caught:
        await cor_client.detach(user_id, ["WS-ENG"], "OKTA")
    assert isinstance(caught.value, PermanentError)
    assert cor.requests == []


@pytest.mark.parametrize(
    ("user_id", "raw"),
    [
        ("a/../b", "a%2F..%2Fb"),
        ("../../v1/oauth/token", "..%2F..%2Fv1%2Foauth%2Ftoken"),
        ("%2e%2e", "%252e%252e"),
        ("...", "..."),
    ],
)
async def test_path_like_user_ids_stay_one_segment(cor, cor_client, user_id, raw):
    await cor_client.detach(user_id, ["WS-ENG"], "OKTA")
    [call] = cor.detaches
    assert (call.raw_path, call.user_id) == (f"/v2/integrations/users/{raw}/detach", user_id)


async def test_the_api_url_may_carry_a_path_and_a_trailing_slash(cor, http):
    cor.valid.add(STATIC)
    cor_client = CorClient(http, f"{API_URL}/sandbox/cor/", StaticToken(STATIC))
    await cor_client.detach("jane", ["WS-ENG"], "OKTA")
    assert str(cor.requests[-1].url) == f"{API_URL}/sandbox/cor/v2/integrations/users/jane/detach"


async def test_the_body_is_exactly_workspaces_and_metadata(cor, cor_client):
    await cor_client.detach("OKTA-USER-12345", ["Workspaces-example-5"], "MICROSOFT_DYNAMICS")
    [call] = cor.detaches
    recorded = load_fixture("cor/detach-request.json")
    assert call.body == recorded["body"]
    assert call.raw_path == recorded["path"]
    assert cor.requests[-1].method == recorded["method"]
    assert cor.requests[-1].headers["Content-Type"] == "application/json"


async def test_remaining_workspaces_come_from_origin_external_id(cor, cor_client):
    cor.script_detach(httpx.Response(200, json=load_fixture("cor/detach-response.json")))
    result = await cor_client.detach("OKTA-USER-12345", ["Workspaces-example-5"], "OKTA")
    assert result.status == 200
    assert result.remaining == ["Workspaces-example-7"]


async def test_remaining_workspaces_of_the_live_fake(cor, cor_client):
    cor.users["jane"] = {"WS-ENG", "WS-ONCALL", "WS-FIN"}
    result = await cor_client.detach("jane", ["WS-ENG", "WS-ONCALL"], "OKTA")
    assert result.remaining == ["WS-FIN"]


@pytest.mark.parametrize(
    ("reply", "remaining"),
    [
        (httpx.Response(204), []),
        (httpx.Response(200, text="ok"), []),
        (httpx.Response(200, json=[1, 2]), []),
        (httpx.Response(200, json={"id": 1}), []),
        (httpx.Response(200, json={"workspaces": None}), []),
        (httpx.Response(200, json={"workspaces": [{"id": 3}, "junk"]}), ["3"]),
        (httpx.Response(200, json={"workspaces": [{"name": "no ids at all"}]}), []),
        (
            httpx.Response(
                200, json={"workspaces": [{"id": 3, "json_integrations": None}, {"id": 4}]}
            ),
            ["3", "4"],
        ),
    ],
)
async def test_odd_success_replies_still_succeed(cor, cor_client, reply, remaining):
    cor.script_detach(reply)
    result = await cor_client.detach("jane", ["WS-ENG"], "OKTA")
    assert result.remaining == remaining


# --- Retry-After, directly -------------------------------------------------------------

NOW = datetime(2026, 3, 3, 20, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("-3", 0.0),
        ("Tue, 03 Mar 2026 20:00:30 GMT", 30.0),
        ("Tue, 03 Mar 2026 19:59:00 GMT", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(header, seconds):
    assert parse_retry_after(header, now=NOW) == seconds


async def test_token_lifetime_defaults_to_an_hour(cor, tokens, clock):
    cor.script_token(httpx.Response(200, json={"access_token": "at-SECRET-x", "expires_in": None}))
    assert await tokens.get() == "at-SECRET-x"
    clock.now += 3600 - TOKEN_MARGIN_SECONDS - 1
    assert await tokens.get() == "at-SECRET-x"
    assert len(cor.token_requests) == 1


async def test_an_oauth_error_body_is_understood(cor, tokens):
    body = {"error": "invalid_client", "error_description": "Client authentication failed"}
    cor.script_token(httpx.Response(400, json=body))
    with pytest.raises(RetryableError) as caught:
        await tokens.get()
    assert caught.value.code == "invalid_client"
    assert caught.value.message == (
        "COR token endpoint answered 400 invalid_client: Client authentication failed"
    )


async def test_concurrent_callers_share_one_token_fetch(cor, tokens):
    got = await asyncio.gather(*(tokens.get() for _ in range(5)))
    assert got == ["at-SECRET-1"] * 5
    assert len(cor.token_requests) == 1


async def test_concurrent_401s_refetch_the_token_once(cor, cor_client, tokens):
    await tokens.get()
    cor.revoke_tokens()
    cor.delay = 0.02  # both calls are in flight with the revoked token together
    results = await asyncio.gather(
        cor_client.detach("jane", ["WS-ENG"], "OKTA"), cor_client.detach("bob", ["WS-FIN"], "OKTA")
    )
    assert [r.status for r in results] == [200, 200]
    assert cor.issued == ["at-SECRET-1", "at-SECRET-2"]
    assert sorted(c.token for c in cor.detaches) == [
        "at-SECRET-1",
        "at-SECRET-1",
        "at-SECRET-2",
        "at-SECRET-2",
    ]
