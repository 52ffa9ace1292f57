"""`cor-bridge serve` over real HTTP: forwarded headers count only from BRIDGE_TRUSTED_PROXIES."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.harness import ADMIN_TOKEN, StartBridge

pytestmark = pytest.mark.integration

FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}


def login_cookie(url: str) -> str:
    with httpx.Client(base_url=url, timeout=10) as browser:
        reply = browser.post("/admin/login", data={"token": ADMIN_TOKEN}, headers=FORWARDED)
        assert reply.status_code == 303, reply.text
        return reply.headers["set-cookie"]


def test_forwarded_headers_from_loopback_count_only_when_it_is_listed(start_bridge: StartBridge):
    # uvicorn on its own believes 127.0.0.1; the bridge believes nobody unless told.
    plain = start_bridge()
    assert "Secure" not in login_cookie(plain.url)
    assert '"client": "127.0.0.1", "event": "admin_login"' in plain.log_path.read_text()

    behind = start_bridge(BRIDGE_TRUSTED_PROXIES="127.0.0.1")
    assert "Secure" in login_cookie(behind.url)
    assert '"client": "203.0.113.9", "event": "admin_login"' in behind.log_path.read_text()
