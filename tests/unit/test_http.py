"""The HTTP seam itself (app/http.py), against httpx.MockTransport."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from app.errors import PermanentError, RetryableError
from app.http import (
    TOKEN_MARGIN_SECONDS,
    Api,
    CachedToken,
    NotFoundError,
    StaticToken,
    UnsafeIdentifierError,
    api_url,
    error_body,
    error_from,
    fetch_token,
    json_object,
    same_origin,
    segment,
    unsafe_segment_reason,
    wait_asked,
)
from tests.builders import load_fixture

BASE = "https://api.test/v1"
NOW = datetime(2026, 3, 3, 20, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Fetches:
    """A TokenFetch that hands out numbered tokens and counts its calls."""

    def __init__(self, lifetime: float = 3600) -> None:
        self.lifetime = lifetime
        self.calls = 0

    async def __call__(self) -> tuple[str, float]:
        self.calls += 1
        await asyncio.sleep(0)
        return f"token-{self.calls}", self.lifetime


def client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


# --- path segments ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", ".", ".."])
def test_dot_segments_and_the_empty_string_are_refused(value):
    assert unsafe_segment_reason(value) is not None
    with pytest.raises(UnsafeIdentifierError) as caught:
        segment(value)
    assert isinstance(caught.value, PermanentError)
    with pytest.raises(UnsafeIdentifierError):
        api_url(BASE, "users", value, "detach")


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("jane@acme.example", "jane%40acme.example"),
        ("a/../b", "a%2F..%2Fb"),
        ("../../v1/oauth/token", "..%2F..%2Fv1%2Foauth%2Ftoken"),
        ("%2e%2e", "%252e%252e"),
        ("...", "..."),
        ("a b?c#d", "a%20b%3Fc%23d"),
    ],
)
def test_anything_else_is_exactly_one_segment(value, quoted):
    assert unsafe_segment_reason(value) is None
    assert segment(value) == quoted
    url = httpx.URL(api_url(BASE + "/", "users", value, "detach"))
    # What httpx would put on the wire: no dot segment removed, nothing re-routed.
    assert url.raw_path.decode() == f"/v1/users/{quoted}/detach"


# --- tokens ----------------------------------------------------------------------------


async def test_a_cached_token_is_fetched_once_until_near_expiry():
    clock, fetch = FakeClock(), Fetches()
    tokens = CachedToken(fetch, clock=clock)
    assert [await tokens.get() for _ in range(3)] == ["token-1"] * 3
    clock.now += 3600 - TOKEN_MARGIN_SECONDS - 1
    assert await tokens.get() == "token-1"
    clock.now += 1
    assert await tokens.get() == "token-2"
    assert fetch.calls == 2


async def test_concurrent_callers_share_one_fetch():
    fetch = Fetches()
    tokens = CachedToken(fetch, clock=FakeClock())
    assert await asyncio.gather(*(tokens.get() for _ in range(5))) == ["token-1"] * 5
    assert fetch.calls == 1


async def test_invalidate_forgets_only_the_token_it_names():
    fetch = Fetches()
    tokens = CachedToken(fetch, clock=FakeClock())
    first = await tokens.get()
    tokens.invalidate("some-older-token")  # a late 401 for a token already replaced
    assert await tokens.get() == first
    tokens.invalidate(first)
    assert await tokens.get() == "token-2"


@pytest.mark.parametrize("reply", [("", 3600.0), ("t", float("nan")), ("t", float("inf"))])
async def test_an_unusable_fetch_is_refused_and_not_cached(reply):
    async def fetch() -> tuple[str, float]:
        return reply

    with pytest.raises(RetryableError, match="no usable access_token"):
        await CachedToken(fetch).get()


async def test_a_static_token_never_changes():
    tokens = StaticToken("static")
    tokens.invalidate("static")
    assert await tokens.get() == "static"


async def test_fetch_token_reports_each_outcome():
    replies = [
        httpx.Response(200, json={"access_token": "at", "expires_in": 120}),
        httpx.Response(200, json={"access_token": "at"}),
        httpx.Response(200, json={"expires_in": 60}),
        httpx.Response(503),
    ]
    seen: list[str] = []
    async with client(lambda request: replies.pop(0)) as http:
        assert await fetch_token(http, BASE + "/token", "IdP", on_fetch=seen.append) == ("at", 120)
        assert await fetch_token(http, BASE + "/token", "IdP") == ("at", 3600)
        with pytest.raises(RetryableError, match="IdP sent no access_token"):
            await fetch_token(http, BASE + "/token", "IdP", on_fetch=seen.append)
        with pytest.raises(RetryableError) as caught:
            await fetch_token(http, BASE + "/token", "IdP", on_fetch=seen.append)
    assert caught.value.status == 503
    assert seen == ["ok", "bad_reply", "503"]


async def test_fetch_token_keeps_the_secret_out_of_its_errors():
    def refuse(request: httpx.Request) -> httpx.Response:
        assert b"client_secret=s3cret" in request.content
        body = {"error": "invalid_client", "error_description": "AADSTS7000215: bad secret"}
        return httpx.Response(401, json=body)

    async with client(refuse) as http:
        with pytest.raises(PermanentError) as caught:
            await fetch_token(http, BASE + "/token", "IdP", data={"client_secret": "s3cret"})
    assert str(caught.value) == "IdP answered 401 invalid_client: AADSTS7000215: bad secret"
    assert "s3cret" not in repr(caught.value)


# --- Api.send --------------------------------------------------------------------------


class Server:
    """Accepts the bearer tokens in `valid`; records the tokens it was shown."""

    def __init__(self, *valid: str) -> None:
        self.valid = set(valid)
        self.seen: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or None
        self.seen.append(token)
        if token in self.valid:
            return httpx.Response(200, json={"ok": True})
        return httpx.Response(401, json={"errorCode": "E0000011", "errorSummary": "Invalid token"})


async def test_a_401_fetches_a_fresh_token_once_and_succeeds():
    server, fetch = Server("token-2"), Fetches()
    async with client(server) as http:
        api = Api(http, "Thing", CachedToken(fetch, clock=FakeClock()))
        reply = await api.send("GET", BASE + "/x", headers={"Accept": "application/json"})
    assert reply.json() == {"ok": True}
    assert server.seen == ["token-1", "token-2"]


async def test_a_401_that_survives_a_fresh_token_is_an_error():
    server, fetch = Server(), Fetches()
    async with client(server) as http:
        api = Api(http, "Thing", CachedToken(fetch, clock=FakeClock()))
        with pytest.raises(PermanentError) as caught:
            await api.send("GET", BASE + "/users/a%2Fb")
    assert server.seen == ["token-1", "token-2"]  # once again, never more
    assert caught.value.status == 401 and caught.value.code == "E0000011"
    assert caught.value.message == "Thing GET /v1/users/a%2Fb answered 401 E0000011: Invalid token"


async def test_errors_may_leave_the_path_out_and_use_their_own_rules():
    def retry_401(reply: httpx.Response, who: str) -> RetryableError | PermanentError:
        return error_from(reply, who, retry_status={401})

    async with client(Server()) as http:
        api = Api(http, "COR", StaticToken("t"), errors=retry_401, path_in_errors=False)
        with pytest.raises(RetryableError) as caught:
            await api.send("PUT", BASE + "/x")
    assert caught.value.message == "COR answered 401 E0000011: Invalid token"


async def test_headers_come_from_the_auth_scheme():
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(204)

    async with client(record) as http:
        api = Api(
            http, "Okta", StaticToken("t"), auth=lambda t, m, u: {"Authorization": f"SSWS {t}"}
        )
        reply = await api.send("GET", BASE + "/x")
    assert reply.status_code == 204 and seen == ["SSWS t"]
    assert json_object(reply, "Okta") == {}


@pytest.mark.parametrize(
    ("failure", "says"),
    [(httpx.ConnectError("refused"), "unreachable"), (httpx.ReadTimeout("slow"), "timed out")],
)
async def test_network_errors_are_retryable(failure, says):
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    async with client(fail) as http:
        with pytest.raises(RetryableError) as caught:
            await Api(http, "Thing", StaticToken("t")).send("GET", BASE + "/x")
    assert caught.value.message == f"Thing {says} ({type(failure).__name__})"
    assert caught.value.__cause__ is failure and caught.value.status is None


# --- error bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (load_fixture("cor/error-unknown-user.json"), ("ZC001", "Entity is not associated")),
        (
            {"error": "invalid_client", "error_description": "Client authentication failed"},
            ("invalid_client", "Client authentication failed"),
        ),
        (
            {"error": {"code": "Request_ResourceNotFound", "message": "Resource 'x' not found"}},
            ("Request_ResourceNotFound", "Resource 'x' not found"),
        ),
        (
            {
                "errorCode": "E0000001",
                "errorSummary": "Api validation failed: login",
                "errorCauses": [{"errorSummary": "login: An object with this field exists"}],
            },
            ("E0000001", "Api validation failed: login (login: An object with this field exists)"),
        ),
        (
            {"errorCode": "E0000047", "errorSummary": "API call exceeded rate limit"},
            ("E0000047", "API call exceeded rate limit"),
        ),
        (["not", "an", "object"], (None, None)),
        ({}, (None, None)),
    ],
)
def test_the_four_error_body_shapes(body, expected):
    assert error_body(httpx.Response(400, json=body)) == expected


def test_a_non_json_error_keeps_a_short_text():
    code, message = error_body(httpx.Response(502, text="<html>" + "x" * 1000))
    assert code is None and message is not None and len(message) == 200


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, RetryableError),
        (500, RetryableError),
        (503, RetryableError),
        (400, PermanentError),
        (401, PermanentError),
        (403, PermanentError),
        (404, NotFoundError),
        (409, PermanentError),
    ],
)
def test_classification(status, kind):
    error = error_from(httpx.Response(status), "API")
    assert type(error) is kind and error.status == status


def test_refused_credentials_can_be_retried():
    for status in (401, 403):
        error = error_from(httpx.Response(status), "Okta", retry_credentials=True)
        assert isinstance(error, RetryableError)
    assert type(error_from(httpx.Response(404), "Okta", retry_credentials=True)) is NotFoundError


# --- how long to wait ------------------------------------------------------------------


def test_an_okta_429_waits_until_x_rate_limit_reset():
    reset = str(int(NOW.timestamp()) + 42)
    assert wait_asked(httpx.Response(429, headers={"X-Rate-Limit-Reset": reset}), now=NOW) == 42
    in_a_minute = str(int(time.time()) + 60)
    reply = httpx.Response(
        429, json={"errorCode": "E0000047"}, headers={"X-Rate-Limit-Reset": in_a_minute}
    )
    error = error_from(reply, "Okta")
    assert isinstance(error, RetryableError) and error.code == "E0000047"
    assert error.retry_after is not None and 58 <= error.retry_after <= 60


def test_retry_after_wins_over_the_reset_and_the_reset_counts_only_on_429():
    reset = str(int(NOW.timestamp()) + 42)
    both = httpx.Response(429, headers={"Retry-After": "5", "X-Rate-Limit-Reset": reset})
    assert wait_asked(both, now=NOW) == 5
    assert wait_asked(httpx.Response(503, headers={"X-Rate-Limit-Reset": reset}), now=NOW) is None
    past = httpx.Response(429, headers={"X-Rate-Limit-Reset": str(int(NOW.timestamp()) - 9)})
    assert wait_asked(past, now=NOW) == 0
    for odd in ("soon", "nan", "inf", ""):
        assert wait_asked(httpx.Response(429, headers={"X-Rate-Limit-Reset": odd}), now=NOW) is None


# --- replies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply", [httpx.Response(200, text="<html>"), httpx.Response(200, json=[1, 2])]
)
def test_json_object_refuses_what_is_not_an_object(reply):
    with pytest.raises(RetryableError):
        json_object(reply, "Graph")


def test_same_origin():
    assert same_origin(BASE, BASE + "/groups?$skiptoken=x")
    assert same_origin(BASE + "/", BASE + "/groups")
    assert not same_origin(BASE, "https://api.test/v10/groups")
    assert not same_origin(BASE, "https://api.test.evil/v1/groups")
    assert not same_origin(BASE, "https://evil.test/v1/groups")
    for climbing in ("/../beta/groups", "/%2e%2e/beta", "/groups/%2E/../../x", "/./groups"):
        assert not same_origin(BASE, BASE + climbing), climbing
    assert same_origin(BASE, BASE + "/groups/...?x=/../")
