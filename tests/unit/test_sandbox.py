"""The COR sandbox, driven over ASGI and mounted where the bridge mounts it."""

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.sandbox import (
    DEFAULT_USERS,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SeedUser,
    create_sandbox,
)

BASE = "http://bridge.test/sandbox/cor"
DETACH = "/v2/integrations/users/{}/detach"
ATTACH = "/v2/integrations/users/{}/attach"
JANE = "jane@acme.example"
# The keys COR's detach reply carries (shared fixtures: cor/detach-response.json).
USER_KEYS = {"id", "name", "email", "workspaces"}
WORKSPACE_KEYS = {
    "id", "name", "active", "metadata", "json_integrations", "created_at", "updated_at", "pivot",
}  # fmt: skip
INTEGRATION_KEYS = {
    "integration_id", "is_active", "source", "destination", "status",
    "origin_external_id", "destination_external_id",
}  # fmt: skip


def basic(client_id: str = SANDBOX_CLIENT_ID, secret: str = SANDBOX_CLIENT_SECRET) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def change_body(*workspaces: str, source: str = "OKTA") -> dict[str, Any]:
    return {"workspaces": list(workspaces), "metadata": {"source": source}}


def mounted(sandbox: FastAPI) -> httpx.AsyncClient:
    outer = FastAPI()
    outer.mount("/sandbox/cor", sandbox)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=outer), base_url=BASE)


@pytest.fixture
async def sandbox() -> AsyncIterator[httpx.AsyncClient]:
    async with mounted(create_sandbox()) as client:
        yield client


async def fetch_token(sandbox: httpx.AsyncClient) -> str:
    reply = await sandbox.post(
        "/v1/oauth/token",
        params={"grant_type": "client_credentials"},
        headers={"Authorization": basic()},
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["access_token"])


async def detach(
    sandbox: httpx.AsyncClient, user: str, *workspaces: str, token: str, source: str = "OKTA"
) -> httpx.Response:
    return await sandbox.put(
        DETACH.format(user),
        json=change_body(*workspaces, source=source),
        headers={"Authorization": f"Bearer {token}"},
    )


def names(reply: httpx.Response) -> list[str]:
    return [w["json_integrations"]["origin_external_id"] for w in reply.json()["workspaces"]]


async def test_token_is_issued_for_the_sandbox_credentials(sandbox: httpx.AsyncClient) -> None:
    reply = await sandbox.post(
        "/v1/oauth/token?grant_type=client_credentials", headers={"Authorization": basic()}
    )
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"] != await fetch_token(sandbox)


async def test_token_grant_type_may_come_in_a_form_body(sandbox: httpx.AsyncClient) -> None:
    reply = await sandbox.post(
        "/v1/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic()},
    )
    assert reply.status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [None, basic(secret="wrong"), basic(client_id="other"), "Basic !!notbase64", "Bearer x"],
)
async def test_token_refuses_bad_credentials(
    sandbox: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    reply = await sandbox.post("/v1/oauth/token?grant_type=client_credentials", headers=headers)
    assert reply.status_code == 401
    assert reply.json() == {"error": 401, "message": "Unauthorized"}


@pytest.mark.parametrize("query", ["", "?grant_type=password"])
async def test_token_needs_the_client_credentials_grant(
    sandbox: httpx.AsyncClient, query: str
) -> None:
    reply = await sandbox.post(f"/v1/oauth/token{query}", headers={"Authorization": basic()})
    assert reply.status_code == 400
    assert "client_credentials" in reply.json()["message"]


async def test_detach_answers_with_the_remaining_workspaces_in_cor_shape(
    sandbox: httpx.AsyncClient,
) -> None:
    reply = await detach(sandbox, JANE, "WS-FIN", token=await fetch_token(sandbox))
    assert reply.status_code == 200
    user = reply.json()
    assert set(user) == USER_KEYS
    assert isinstance(user["id"], int)
    assert (user["name"], user["email"]) == ("Jane Doe", JANE)
    assert names(reply) == ["WS-ENG", "WS-ONCALL"]
    workspace = user["workspaces"][0]
    assert set(workspace) == WORKSPACE_KEYS
    assert set(workspace["json_integrations"]) == INTEGRATION_KEYS
    assert workspace["json_integrations"]["source"] == "OKTA"
    assert workspace["pivot"]["user_id"] == user["id"]
    assert workspace["pivot"]["workspace_id"] == workspace["id"]
    current = await sandbox.get(f"/users/{JANE}", params={"source": "OKTA"})
    assert current.json() == user


async def test_detach_is_idempotent(sandbox: httpx.AsyncClient) -> None:
    token = await fetch_token(sandbox)
    first = await detach(sandbox, JANE, "WS-ENG", "WS-OPS", token=token)
    again = await detach(sandbox, JANE, "WS-ENG", "WS-OPS", token=token)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert names(again) == ["WS-ONCALL", "WS-FIN"]


async def test_detach_of_an_unknown_user_is_zc001(sandbox: httpx.AsyncClient) -> None:
    reply = await detach(sandbox, "nobody@acme.example", "WS-ENG", token=await fetch_token(sandbox))
    assert reply.status_code == 400
    assert reply.json() == {
        "status": 400,
        "name": "CORCustomError",
        "code": "ZC001",
        "message": "Entity is not associated",
    }


async def test_users_are_keyed_by_id_and_source(sandbox: httpx.AsyncClient) -> None:
    token = await fetch_token(sandbox)
    wrong = await detach(sandbox, "mia@acme.example", "WS-ENG", token=token, source="GITHUB")
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "ZC001"
    entra = await detach(sandbox, JANE, "WS-FIN", token=token, source="MICROSOFT_DYNAMICS")
    assert entra.status_code == 200
    assert names(entra) == ["WS-ENG"]
    assert entra.json()["workspaces"][0]["json_integrations"]["source"] == "MICROSOFT_DYNAMICS"
    okta = await sandbox.get(f"/users/{JANE}", params={"source": "OKTA"})
    assert names(okta) == ["WS-ENG", "WS-ONCALL", "WS-FIN"]
    assert okta.json()["id"] != entra.json()["id"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "JSON object"),
        (b"[]", "JSON object"),
        (b'{"workspaces": [], "metadata": {"source": "OKTA"}}', "non-empty list"),
        (b'{"workspaces": "WS-ENG", "metadata": {"source": "OKTA"}}', "non-empty list"),
        (b'{"workspaces": [1], "metadata": {"source": "OKTA"}}', "non-empty list"),
        (b'{"workspaces": ["WS-ENG"]}', "metadata.source is required"),
        (b'{"workspaces": ["WS-ENG"], "metadata": {"source": "LDAP"}}', "must be one of"),
    ],
)
async def test_a_malformed_body_is_zc002_saying_what_is_wrong(
    sandbox: httpx.AsyncClient, body: bytes, fragment: str
) -> None:
    reply = await sandbox.put(
        DETACH.format(JANE),
        content=body,
        headers={"Authorization": f"Bearer {await fetch_token(sandbox)}"},
    )
    assert reply.status_code == 400
    error = reply.json()
    assert (error["status"], error["name"], error["code"]) == (400, "CORCustomError", "ZC002")
    assert fragment in error["message"]


@pytest.mark.parametrize("authorization", [None, "Bearer made-up", "Basic abc"])
async def test_detach_needs_an_issued_bearer_token(
    sandbox: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    reply = await sandbox.put(DETACH.format(JANE), json=change_body("WS-FIN"), headers=headers)
    assert reply.status_code == 401
    assert reply.json() == {"error": 401, "message": "Unauthorized"}
    assert names(await sandbox.get(f"/users/{JANE}")) == ["WS-ENG", "WS-ONCALL", "WS-FIN"]


async def test_revoked_tokens_stop_working_until_a_new_one_is_fetched(
    sandbox: httpx.AsyncClient,
) -> None:
    old = await fetch_token(sandbox)
    assert (await sandbox.post("/tokens/revoke")).json() == {"revoked": 1}
    refused = await detach(sandbox, JANE, "WS-FIN", token=old)
    assert refused.status_code == 401
    again = await detach(sandbox, JANE, "WS-FIN", token=await fetch_token(sandbox))
    assert again.status_code == 200


async def test_faults_answer_their_status_then_cor_answers_normally(
    sandbox: httpx.AsyncClient,
) -> None:
    token = await fetch_token(sandbox)
    fault = {"status": 503, "times": 2, "retry_after": 1.5, "path_contains": "detach"}
    assert (await sandbox.post("/faults", json=fault)).status_code == 201
    first = await detach(sandbox, JANE, "WS-FIN", token=token)
    second = await detach(sandbox, JANE, "WS-FIN", token=token)
    third = await detach(sandbox, JANE, "WS-FIN", token=token)
    assert [first.status_code, second.status_code, third.status_code] == [503, 503, 200]
    assert first.headers["retry-after"] == "1.5"
    assert first.json()["status"] == 503
    assert "retry-after" not in third.headers
    calls = (await sandbox.get("/calls", params={"path_contains": "detach"})).json()["calls"]
    assert [(c["status"], c["fault"]) for c in calls] == [(503, True), (503, True), (200, False)]
    # The faulted calls changed nothing; the third did.
    assert names(third) == ["WS-ENG", "WS-ONCALL"]


async def test_faults_are_fifo_and_match_by_path(sandbox: httpx.AsyncClient) -> None:
    body = {"status": 500, "name": "CORCustomError", "code": "ZC999", "message": "custom"}
    await sandbox.post("/faults", json={"status": 429, "retry_after": 2, "path_contains": "detach"})
    await sandbox.post("/faults", json={"status": 500, "body": body})
    token_call = "/v1/oauth/token?grant_type=client_credentials"
    # The token call skips the detach-only fault and takes the next one.
    failed = await sandbox.post(token_call, headers={"Authorization": basic()})
    assert (failed.status_code, failed.json()) == (500, body)
    token = await fetch_token(sandbox)
    limited = await detach(sandbox, JANE, "WS-FIN", token=token)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
    assert limited.json()["code"] == "HTTP_429"
    assert (await detach(sandbox, JANE, "WS-FIN", token=token)).status_code == 200


async def test_an_unauthorized_fault_looks_like_cor(sandbox: httpx.AsyncClient) -> None:
    token = await fetch_token(sandbox)
    await sandbox.post("/faults", json={"status": 401, "path_contains": "detach"})
    reply = await detach(sandbox, JANE, "WS-FIN", token=token)
    assert (reply.status_code, reply.json()) == (401, {"error": 401, "message": "Unauthorized"})


async def test_cleared_faults_do_not_fire(sandbox: httpx.AsyncClient) -> None:
    await sandbox.post("/faults", json={"status": 503, "times": 5})
    assert (await sandbox.delete("/faults")).status_code == 204
    await fetch_token(sandbox)


async def test_a_delay_only_fault_answers_normally_after_the_delay(
    sandbox: httpx.AsyncClient,
) -> None:
    token = await fetch_token(sandbox)
    await sandbox.post(
        "/faults", json={"status": 0, "delay_seconds": 0.2, "path_contains": "detach"}
    )
    started = time.monotonic()
    reply = await detach(sandbox, JANE, "WS-FIN", token=token)
    assert time.monotonic() - started >= 0.2
    assert reply.status_code == 200
    calls = (await sandbox.get("/calls", params={"path_contains": "detach"})).json()["calls"]
    assert [(c["status"], c["fault"]) for c in calls] == [(200, True)]


async def test_a_caller_that_times_out_leaves_an_unanswered_call(
    sandbox: httpx.AsyncClient,
) -> None:
    token = await fetch_token(sandbox)
    await sandbox.post(
        "/faults", json={"status": 504, "delay_seconds": 5, "path_contains": "detach"}
    )
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(detach(sandbox, JANE, "WS-FIN", token=token), timeout=0.05)
    calls = (await sandbox.get("/calls", params={"path_contains": "detach"})).json()["calls"]
    assert [(c["status"], c["fault"]) for c in calls] == [(None, True)]


async def test_fault_specs_are_validated(sandbox: httpx.AsyncClient) -> None:
    for fault in ({"status": 42}, {"status": 503, "times": 0}, {"delay_seconds": -1}):
        assert (await sandbox.post("/faults", json=fault)).status_code == 422


async def test_calls_record_what_was_asked_and_answered(sandbox: httpx.AsyncClient) -> None:
    token = await fetch_token(sandbox)
    await detach(sandbox, JANE, "WS-FIN", token=token)
    await detach(sandbox, "nobody@acme.example", "WS-FIN", token=token)
    await sandbox.get(f"/users/{JANE}")  # control routes are not recorded
    calls = (await sandbox.get("/calls")).json()["calls"]
    assert [(c["seq"], c["method"], c["path"], c["user_id"], c["status"]) for c in calls] == [
        (1, "POST", "/v1/oauth/token", None, 200),
        (2, "PUT", DETACH.format(JANE), JANE, 200),
        (3, "PUT", DETACH.format("nobody@acme.example"), "nobody@acme.example", 400),
    ]
    assert calls[1]["body"] == change_body("WS-FIN")
    assert calls[0]["body"] is None
    assert all(c["fault"] is False and c["at"].endswith("+00:00") for c in calls)
    assert (await sandbox.delete("/calls")).status_code == 204
    assert (await sandbox.get("/calls")).json() == {"calls": []}


async def test_a_call_to_any_other_route_is_recorded_and_404(sandbox: httpx.AsyncClient) -> None:
    token = await fetch_token(sandbox)
    headers = {"Authorization": f"Bearer {token}"}
    # Where "PUT .../users/../detach" and ".../users/./detach" land once dots are resolved.
    for path in ("/v2/integrations/detach", "/v2/integrations/users/detach"):
        reply = await sandbox.put(path, json=change_body("WS-FIN"), headers=headers)
        assert reply.status_code == 404 and reply.json()["code"] == "ZC404"
    calls = (await sandbox.get("/calls")).json()["calls"][1:]
    assert [(c["method"], c["raw_path"], c["user_id"], c["status"]) for c in calls] == [
        ("PUT", "/v2/integrations/detach", None, 404),
        ("PUT", "/v2/integrations/users/detach", None, 404),
    ]
    assert (await sandbox.get(f"/users/{JANE}")).json()["workspaces"][-1]["name"] == "Finance"


async def test_a_user_id_with_an_escaped_slash_is_one_segment(sandbox: httpx.AsyncClient) -> None:
    user = SeedUser(id="a/../b", source="OKTA", name="Odd", email="odd@acme.example")
    assert (
        await sandbox.post("/users", json=user.model_dump() | {"workspaces": ["WS-FIN"]})
    ).status_code == 201
    token = await fetch_token(sandbox)
    raw = "/v2/integrations/users/a%2F..%2Fb/detach"
    reply = await sandbox.put(
        raw, json=change_body("WS-FIN"), headers={"Authorization": f"Bearer {token}"}
    )
    assert reply.status_code == 200 and reply.json()["workspaces"] == []
    [call] = (await sandbox.get("/calls", params={"path_contains": "detach"})).json()["calls"]
    assert (call["raw_path"], call["user_id"]) == (raw, "a/../b")


async def test_attach_adds_workspaces_once(sandbox: httpx.AsyncClient) -> None:
    token = await fetch_token(sandbox)
    reply = await sandbox.put(
        ATTACH.format("li@acme.example"),
        json=change_body("WS-OPS", "WS-ENG", "WS-OPS"),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert reply.status_code == 200
    assert names(reply) == ["WS-ENG", "WS-ONCALL", "WS-OPS"]


async def test_attach_of_an_unknown_workspace_is_zc003(sandbox: httpx.AsyncClient) -> None:
    reply = await sandbox.put(
        ATTACH.format("li@acme.example"),
        json=change_body("WS-NOPE"),
        headers={"Authorization": f"Bearer {await fetch_token(sandbox)}"},
    )
    assert reply.status_code == 400
    assert reply.json()["code"] == "ZC003"
    assert "WS-NOPE" in reply.json()["message"]


async def test_users_can_be_created_and_replaced(sandbox: httpx.AsyncClient) -> None:
    new = SeedUser(id="zoe", source="GITHUB", name="Zoe", email="zoe@acme.example",
                   workspaces=["WS-OPS"])  # fmt: skip
    created = await sandbox.post("/users", json=new.model_dump())
    assert created.status_code == 201
    replaced = await sandbox.post("/users", json={**new.model_dump(), "workspaces": ["WS-FIN"]})
    assert replaced.json()["id"] == created.json()["id"]
    assert names(await sandbox.get("/users/zoe", params={"source": "GITHUB"})) == ["WS-FIN"]
    bad = await sandbox.post("/users", json={**new.model_dump(), "workspaces": ["WS-NOPE"]})
    assert (bad.status_code, bad.json()["code"]) == (400, "ZC003")
    assert (await sandbox.get("/users/zoe")).status_code == 404


async def test_users_can_be_created_in_bulk_all_or_nothing(sandbox: httpx.AsyncClient) -> None:
    users = [
        SeedUser(id=f"u{i}", source="OKTA", name=f"U{i}", email=f"u{i}@acme.example",
                 workspaces=["WS-OPS"]).model_dump()
        for i in range(3)
    ]  # fmt: skip
    bad = await sandbox.post("/users", json=[*users, {**users[0], "id": "x", "source": "NOPE"}])
    assert (bad.status_code, bad.json()["code"]) == (400, "ZC002")
    assert bad.json()["message"].startswith("x: source must be one of")
    assert (await sandbox.get("/users/u0")).status_code == 404  # nothing stored
    stored = await sandbox.post("/users", json=users)
    assert (stored.status_code, stored.json()) == (201, {"stored": 3})
    assert names(await sandbox.get("/users/u2")) == ["WS-OPS"]


async def test_reset_restores_the_seed(sandbox: httpx.AsyncClient) -> None:
    token = await fetch_token(sandbox)
    await detach(sandbox, JANE, "WS-ENG", "WS-ONCALL", "WS-FIN", token=token)
    await sandbox.post("/faults", json={"status": 503})
    assert (await sandbox.post("/reset")).status_code == 204
    assert names(await sandbox.get(f"/users/{JANE}")) == ["WS-ENG", "WS-ONCALL", "WS-FIN"]
    assert (await sandbox.get("/calls")).json() == {"calls": []}
    assert (await detach(sandbox, JANE, "WS-FIN", token=token)).status_code == 401  # tokens gone
    assert (
        await detach(sandbox, JANE, "WS-FIN", token=await fetch_token(sandbox))
    ).status_code == 200


async def test_default_users_match_the_example_mapping(sandbox: httpx.AsyncClient) -> None:
    expected = {
        (JANE, "OKTA"): ["WS-ENG", "WS-ONCALL", "WS-FIN"],
        ("bob@acme.example", "OKTA"): ["WS-FIN", "WS-ENG"],
        ("mia@acme.example", "OKTA"): ["WS-ENG", "WS-ONCALL"],
        ("li@acme.example", "OKTA"): ["WS-ENG", "WS-ONCALL"],
        (JANE, "MICROSOFT_DYNAMICS"): ["WS-FIN", "WS-ENG"],
        ("ravi@acme.example", "MICROSOFT_DYNAMICS"): ["WS-ENG", "WS-ONCALL"],
    }
    assert {(u.id, u.source): u.workspaces for u in DEFAULT_USERS} == expected
    for (user, source), workspaces in expected.items():
        assert names(await sandbox.get(f"/users/{user}", params={"source": source})) == workspaces


async def test_sandboxes_do_not_share_state() -> None:
    seed = [SeedUser(id="solo", source="OKTA", name="Solo", email="s@x", workspaces=["WS-OPS"])]
    async with mounted(create_sandbox(seed)) as one, mounted(create_sandbox()) as two:
        await detach(one, "solo", "WS-OPS", token=await fetch_token(one))
        assert names(await one.get("/users/solo")) == []
        assert (await two.get("/users/solo")).status_code == 404
        assert (await two.get("/calls")).json() == {"calls": []}
        assert (await one.post("/reset")).status_code == 204
        assert names(await one.get("/users/solo")) == ["WS-OPS"]
    assert DEFAULT_USERS[0].workspaces == ["WS-ENG", "WS-ONCALL", "WS-FIN"]


def test_a_bad_seed_is_refused() -> None:
    bad = SeedUser(id="x", source="OKTA", name="X", email="x@x", workspaces=["WS-NOPE"])
    with pytest.raises(ValueError, match="WS-NOPE"):
        create_sandbox([bad])
