"""`cor-bridge serve`'s uvicorn configuration: whose proxy headers count, keep-alive, limits.

The app runs behind the middleware uvicorn wraps it in as app/server.py configures it, with
requests from a chosen peer address, as they would arrive over a socket.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from app.server import server_config
from app.settings import Settings
from app.ui import auth
from tests.fake_cor import FakeCor
from tests.inprocess import make_client

TOKEN = "admin-token"


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_trusted_proxies_are_addresses_or_networks():
    assert settings().trusted_proxies() == []
    found = settings(bridge_trusted_proxies=" 10.0.0.5, 10.1.2.3/16 ,, ::1 ").trusted_proxies()
    assert found == ["10.0.0.5/32", "10.1.0.0/16", "::1/128"]
    for bad in ("proxy.internal", "*", "10.0.0.0/33", "10.0.0.5:8080"):
        with pytest.raises(ValidationError, match="is not an IP address or network"):
            settings(bridge_trusted_proxies=bad)


def test_serve_believes_forwarded_headers_only_from_trusted_proxies():
    app = object()
    plain = server_config(app, settings(), "0.0.0.0", 8080)  # type: ignore[arg-type]
    assert plain.proxy_headers is False  # not even from 127.0.0.1, uvicorn's default
    assert (plain.timeout_keep_alive, plain.limit_concurrency) == (5, 1000)
    behind = settings(
        bridge_trusted_proxies="10.0.0.0/8",
        bridge_keep_alive_seconds=75,
        bridge_max_connections=0,
    )
    config = server_config(app, behind, "0.0.0.0", 8080)  # type: ignore[arg-type]
    assert config.proxy_headers is True and config.forwarded_allow_ips == ["10.0.0.0/8"]
    assert (config.timeout_keep_alive, config.limit_concurrency) == (75, None)


async def log_in(client: httpx.AsyncClient, token: str, **headers: str) -> httpx.Response:
    return await client.post("/admin/login", data={"token": token}, headers=headers)


HTTPS = {"X-Forwarded-Proto": "https"}


@pytest.mark.parametrize(
    ("trusted", "peer", "secure"),
    [
        ("", "127.0.0.1", False),  # uvicorn alone would believe loopback
        ("10.0.0.0/8", "192.0.2.7", False),
        ("10.0.0.0/8", "10.0.0.7", True),
        ("10.0.0.7", "10.0.0.7", True),
    ],
)
async def test_the_session_cookie_is_secure_when_a_trusted_proxy_says_https(
    tmp_path: Path, trusted: str, peer: str, secure: bool
):
    async with make_client(
        tmp_path, FakeCor(), served=True, peer=peer, bridge_trusted_proxies=trusted
    ) as c:
        reply = await log_in(c, TOKEN, **HTTPS)
        assert reply.status_code == 303
        cookie = reply.headers["set-cookie"]
        assert cookie.startswith(f"{auth.SESSION_COOKIE}=")
        assert ("Secure" in cookie) is secure, cookie
        plain = await log_in(c, TOKEN)
        assert "Secure" not in plain.headers["set-cookie"]


async def test_failed_logins_count_against_the_peer_unless_it_is_a_trusted_proxy(
    tmp_path: Path,
):
    """A caller cannot get a fresh failed-auth bucket per request by inventing
    X-Forwarded-For; behind a trusted proxy each real client has its own."""

    async def refusals(c: httpx.AsyncClient, client_addresses: list[str]) -> list[int]:
        answers = []
        for address in client_addresses:
            reply = await log_in(c, "wrong", **{"X-Forwarded-For": address})
            answers.append(reply.status_code)
        return answers

    invented = [f"203.0.113.{n}" for n in range(4)]
    limit = {"bridge_auth_failures_per_minute": 3}
    async with make_client(tmp_path, FakeCor(), served=True, peer="127.0.0.1", **limit) as c:
        assert await refusals(c, invented) == [401, 401, 401, 429]
    async with make_client(
        tmp_path,
        FakeCor(),
        served=True,
        peer="10.0.0.7",
        bridge_trusted_proxies="10.0.0.7",
        **limit,
    ) as c:
        assert await refusals(c, ["203.0.113.1"] * 4) == [401, 401, 401, 429]
        assert await refusals(c, ["198.51.100.2"]) == [401]  # someone else behind the proxy
        # The last address the proxy appended is the caller; what the caller sent before is not.
        spoofed = await refusals(c, ["198.51.100.2, 203.0.113.1"])
        assert spoofed == [429]


def test_malloc_arenas_are_limited_unless_the_operator_chose(monkeypatch: pytest.MonkeyPatch):
    """glibc (this machine's libc) takes the limit; MALLOC_ARENA_MAX set by hand stands."""
    import platform

    from app.server import limit_malloc_arenas

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() is (platform.libc_ver()[0] == "glibc")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
