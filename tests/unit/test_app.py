"""The app in process: auth, validation answers, readiness and metrics (COR faked)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.builders import load_fixture, okta_delivery, okta_event
from tests.fake_cor import CLIENT_SECRET, FakeCor
from tests.inprocess import ADMIN, OKTA, make_client
from tests.waiting import wait_for_async


async def test_a_removal_reaches_cor(client: httpx.AsyncClient, cor: FakeCor):
    reply = await client.post(
        "/hooks/okta", json=load_fixture("okta/event-hook-membership-remove.json"), headers=OKTA
    )
    assert reply.status_code == 200
    await wait_for_async(lambda: bool(cor.detaches))
    assert cor.sent() == [
        (
            "/v2/integrations/users/jane@acme.example/detach",
            {"workspaces": ["WS-ENG", "WS-ONCALL"], "metadata": {"source": "OKTA"}},
        )
    ]


async def test_sources_without_a_secret_answer_404(tmp_path: Path, cor: FakeCor, database_url: str):
    async with make_client(
        tmp_path, cor, database_url=database_url, okta_hook_secret=None, bridge_admin_token=None
    ) as c:
        assert (await c.post("/hooks/okta", json={}, headers=OKTA)).status_code == 404
        assert (await c.get("/admin/jobs", headers=ADMIN)).status_code == 404
        ready = (await c.get("/readyz")).json()
        assert ready["checks"]["sources"]["okta_hook"] is False


async def test_wrong_secrets_are_401_and_store_nothing(client: httpx.AsyncClient):
    body = okta_delivery(okta_event("group.user_membership.remove", user="mia"))
    assert (
        await client.post("/hooks/okta", json=body, headers={"Authorization": "nope"})
    ).status_code == 401
    assert (await client.post("/hooks/okta", json=body)).status_code == 401
    assert (
        await client.get("/admin/jobs", headers={"Authorization": "Bearer nope"})
    ).status_code == 401
    history = await client.get("/admin/users/mia@acme.example/history", headers=ADMIN)
    assert history.json()["events"] == []


async def test_secrets_never_appear_in_answers_or_logs(
    client: httpx.AsyncClient, capfd: pytest.CaptureFixture[str]
):
    await client.post("/hooks/okta", json={}, headers={"Authorization": "hook-secreX"})
    await client.get("/readyz")
    out, err = capfd.readouterr()
    for text in (out, err, (await client.get("/openapi.json")).text):
        assert "hook-secret" not in text
        assert CLIENT_SECRET not in text


async def test_verification_needs_the_secret_and_the_challenge(client: httpx.AsyncClient):
    challenge = {"x-okta-verification-challenge": "abc"}
    assert (await client.get("/hooks/okta", headers=challenge)).status_code == 401
    reply = await client.get("/hooks/okta", headers={**challenge, **OKTA})
    assert reply.json() == {"verification": "abc"}
    missing = await client.get("/hooks/okta", headers=OKTA)
    assert missing.status_code == 400
    assert "x-okta-verification-challenge" in missing.json()["detail"]


async def test_admin_change_validation_names_the_field(client: httpx.AsyncClient):
    reply = await client.post("/admin/changes", json={"provider": "azure"}, headers=ADMIN)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"][-1] == "provider"
    reply = await client.post("/admin/changes", json={"provider": "okta"}, headers=ADMIN)
    assert reply.status_code == 422
    assert "cor_user_id" in json.dumps(reply.json())


async def test_an_admin_cor_user_id_that_would_steer_the_call_is_422(
    client: httpx.AsyncClient, cor: FakeCor
):
    for bad in ("..", ".", ""):
        change = {"provider": "okta", "cor_user_id": bad, "workspaces": ["WS-OPS"]}
        reply = await client.post("/admin/changes", json=change, headers=ADMIN)
        assert reply.status_code == 422, bad
        [problem] = reply.json()["detail"]
        assert problem["loc"][-1] == "cor_user_id"
        assert f"{bad!r} is not a usable identifier in a URL path" in problem["msg"]
    assert (await client.get("/admin/jobs", headers=ADMIN)).json()["jobs"] == []
    # Path-like but one segment: sent as exactly that.
    change = {"provider": "okta", "cor_user_id": "../../v1/oauth/token", "workspaces": ["WS-OPS"]}
    assert (await client.post("/admin/changes", json=change, headers=ADMIN)).status_code == 200
    await wait_for_async(lambda: bool(cor.detaches))
    assert cor.raw_paths == ["/v2/integrations/users/..%2F..%2Fv1%2Foauth%2Ftoken/detach"]


async def test_admin_job_filters_that_do_not_parse_are_422(client: httpx.AsyncClient):
    reply = await client.get("/admin/jobs?since=yesterday", headers=ADMIN)
    assert reply.status_code == 422
    assert "since" in json.dumps(reply.json())
    reply = await client.get("/admin/jobs?state=lost", headers=ADMIN)
    assert reply.status_code == 422
    assert "unknown state" in json.dumps(reply.json())


async def test_replay_of_an_unknown_job_names_it(client: httpx.AsyncClient):
    reply = await client.post("/admin/replay", json={"ids": [4242]}, headers=ADMIN)
    assert reply.status_code == 404
    assert "4242" in reply.json()["detail"]
    assert (await client.get("/admin/jobs/4242", headers=ADMIN)).status_code == 404


async def test_explicit_detach_and_job_detail(client: httpx.AsyncClient, cor: FakeCor):
    reply = await client.post(
        "/admin/changes",
        json={"provider": "okta", "cor_user_id": "li@acme.example", "workspaces": ["WS-OPS"]},
        headers=ADMIN,
    )
    assert reply.status_code == 200
    [job_id] = reply.json()["jobs"]
    await wait_for_async(lambda: bool(cor.detaches))

    async def done() -> bool:
        reply = await client.get(f"/admin/jobs/{job_id}", headers=ADMIN)
        return bool(reply.json()["state"] == "done")

    await wait_for_async(done)
    job = (await client.get(f"/admin/jobs/{job_id}", headers=ADMIN)).json()
    assert job["workspace"] == "WS-OPS"
    [attempt] = job["deliveries"]
    assert (attempt["outcome"], attempt["status"]) == ("done", 200)


async def test_readyz_and_metrics(client: httpx.AsyncClient, cor: FakeCor):
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert body["checks"]["database"]["ok"] and body["checks"]["mapping"]["groups"] == 4
    await client.post(
        "/hooks/okta", json=load_fixture("okta/event-hook-membership-remove.json"), headers=OKTA
    )
    await wait_for_async(lambda: bool(cor.detaches))
    text = (await client.get("/metrics")).text
    assert 'cor_bridge_changes_total{decision="queued",kind="removed",provider="okta"}' in text
    assert "cor_bridge_jobs{state=" in text
    assert "cor_bridge_delivery_latency_seconds_bucket" in text


async def test_every_answer_carries_a_request_id(client):
    reply = await client.get("/healthz")
    assert len(reply.headers["x-request-id"]) == 16
    reply = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert reply.headers["x-request-id"] == "abc-123"
    reply = await client.get("/healthz", headers={"X-Request-ID": "bad id\nwith newline"})
    assert reply.headers["x-request-id"] != "bad id\nwith newline"


async def test_an_operator_cancels_a_pending_job(tmp_path, cor):
    async with make_client(tmp_path, cor, bridge_delivery_delay_seconds=60) as client:
        reply = await client.post(
            "/admin/changes",
            json={"provider": "okta", "cor_user_id": "li@acme.example", "workspaces": ["WS-OPS"]},
            headers=ADMIN,
        )
        [job_id] = reply.json()["jobs"]
        cancelled = await client.post(f"/admin/jobs/{job_id}/cancel", headers=ADMIN)
        assert cancelled.json() == {"id": job_id, "state": "cancelled"}
        again = await client.post(f"/admin/jobs/{job_id}/cancel", headers=ADMIN)
        assert again.status_code == 409 and "cancelled" in again.json()["detail"]
        missing = await client.post("/admin/jobs/999/cancel", headers=ADMIN)
        assert missing.status_code == 404
    assert cor.detaches == []


async def test_job_listing_pages(client):
    for workspace in ("WS-1", "WS-2", "WS-3"):
        await client.post(
            "/admin/changes",
            json={"provider": "okta", "cor_user_id": "li@acme.example", "workspaces": [workspace]},
            headers=ADMIN,
        )
    page = await client.get(
        "/admin/jobs?limit=1&offset=1&cor_user_id=li@acme.example", headers=ADMIN
    )
    assert page.status_code == 200, page.text
    assert [j["workspace"] for j in page.json()["jobs"]] == ["WS-2"]
    bad = await client.get("/admin/jobs?limit=0", headers=ADMIN)
    assert bad.status_code == 422 and "limit" in bad.text


async def test_admin_bodies_are_bounded_before_they_are_parsed(tmp_path, cor):
    async with make_client(tmp_path, cor, bridge_max_body_bytes=2048) as client:
        big = b'{"provider": "okta", "cor_user_id": "' + b"x" * 4096 + b'"}'
        declared = await client.post("/admin/changes", content=big, headers=ADMIN)
        assert declared.status_code == 413 and "2048-byte" in declared.json()["detail"]

        async def chunks():
            yield big[:1000]
            yield big[1000:]

        streamed = await client.post("/admin/changes", content=chunks(), headers=ADMIN)
        assert streamed.status_code == 413, streamed.text
        unauthenticated = await client.post("/admin/changes", content=big)
        assert unauthenticated.status_code == 413


async def test_a_change_that_names_no_group_is_422_not_500(client):
    reply = await client.post(
        "/admin/changes",
        json={"provider": "okta", "change": "removed", "user": {"id": "00ujane"}},
        headers=ADMIN,
    )
    assert reply.status_code == 422
    assert "needs a group" in reply.json()["detail"]
