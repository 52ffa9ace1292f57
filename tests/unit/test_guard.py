"""The failed-authentication limit: failures slow down, the right secret always passes."""

from __future__ import annotations

from pathlib import Path

from app.guard import FailureLimiter
from tests.builders import load_fixture
from tests.fake_cor import FakeCor
from tests.inprocess import ADMIN, OKTA, make_client


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_over_the_limit_wait_until_the_window_moves():
    clock = Clock()
    limiter = FailureLimiter(3, clock=clock)
    assert [limiter.record("10.0.0.1") for _ in range(3)] == [None, None, None]
    assert limiter.record("10.0.0.1") == 60
    assert limiter.record("10.0.0.2") is None  # per address
    clock.now += 30
    assert limiter.record("10.0.0.1") == 30
    clock.now += 31  # the first three failures left the window
    assert limiter.record("10.0.0.1") is None


def test_zero_means_no_limit():
    limiter = FailureLimiter(0)
    assert all(limiter.record("x") is None for _ in range(1000))


async def test_the_right_secret_passes_even_from_a_limited_address(tmp_path: Path):
    cor = FakeCor()
    async with make_client(
        tmp_path, cor, bridge_auth_failures_per_minute=2, scim_token="scim-token"
    ) as client:
        wrong = {"Authorization": "nope"}
        statuses = [
            (await client.post("/hooks/okta", json={}, headers=wrong)).status_code for _ in range(3)
        ]
        assert statuses == [401, 401, 429]
        limited = await client.get("/admin/jobs", headers={"Authorization": "Bearer nope"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        scim = await client.get("/scim/v2/Users", headers={"Authorization": "Bearer nope"})
        assert scim.status_code == 429
        assert scim.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
        delivery = load_fixture("okta/event-hook-membership-remove.json")
        assert (await client.post("/hooks/okta", json=delivery, headers=OKTA)).status_code == 200
        assert (await client.get("/admin/jobs", headers=ADMIN)).status_code == 200
