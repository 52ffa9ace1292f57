"""The SCIM server against scim2-tester and the checks Okta's and Entra's validators make."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import CheckResult, Status, check_server

from tests.integration.conftest import report_logs_of
from tests.integration.harness import SCIM_JSON, SCIM_TOKEN, Bridge, StartBridge

pytestmark = pytest.mark.integration

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
PASSING = {Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE}


@pytest.fixture(scope="module")
def shared_bridge(start_module_bridge: StartBridge) -> Bridge:
    """One bridge for the module: each test uses user names no other test uses."""
    return start_module_bridge(SCIM_TOKEN=SCIM_TOKEN)


@pytest.fixture
def scim_bridge(shared_bridge: Bridge, request: pytest.FixtureRequest) -> Bridge:
    report_logs_of(request, shared_bridge)
    return shared_bridge


@pytest.fixture
def scim_client(scim_bridge: Bridge) -> Iterator[SyncSCIMClient]:
    headers = {"Authorization": f"Bearer {SCIM_TOKEN}"}
    with httpx2.Client(base_url=f"{scim_bridge.url}/scim/v2", headers=headers) as http:
        yield SyncSCIMClient(http)


def _summary(results: list[CheckResult]) -> str:
    counts = Counter(r.status.name for r in results)
    lines = [", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    lines += [
        f"{r.status.name} [{r.resource_type or '-'}] {r.title}: {r.reason}"
        for r in results
        if r.status not in PASSING
    ]
    return "\n".join(lines)


def test_scim2_tester_finds_nothing_wrong(scim_client: SyncSCIMClient) -> None:
    results = check_server(scim_client)

    print(_summary(results))
    assert len(results) > 100, _summary(results)
    assert all(r.status in PASSING for r in results), _summary(results)


# -- what Okta's SCIM spec tests and Entra's Test Connection look for -----------------------


def scim_error(reply: httpx.Response, status: int, scim_type: str | None = None) -> dict[str, Any]:
    """A reply in SCIM's error schema, with `status` as a string."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith(SCIM_JSON)
    body: dict[str, Any] = reply.json()
    assert body["schemas"] == [ERROR_SCHEMA], body
    assert body["status"] == str(status), body
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
    return body


def list_response(reply: httpx.Response) -> dict[str, Any]:
    """A 200 ListResponse whose paging values are integers."""
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith(SCIM_JSON)
    body: dict[str, Any] = reply.json()
    assert body["schemas"] == [LIST_SCHEMA], body
    for key in ("totalResults", "startIndex", "itemsPerPage"):
        assert type(body[key]) is int, f"{key}: {body[key]!r}"
    assert len(body.get("Resources", [])) == body["itemsPerPage"], body
    return body


def create_user(bridge: Bridge, user_name: str) -> dict[str, Any]:
    body = {"schemas": [USER_SCHEMA], "userName": user_name, "active": True}
    reply = bridge.scim("POST", "/Users", json=body)
    assert reply.status_code == 201, reply.text
    created: dict[str, Any] = reply.json()
    return created


def test_entra_test_connection_gets_an_empty_list(scim_bridge: Bridge) -> None:
    random_name = str(uuid.uuid4())
    for kind, attribute in (("Users", "userName"), ("Groups", "displayName")):
        reply = scim_bridge.scim(
            "GET", f"/{kind}", params={"filter": f'{attribute} eq "{random_name}"'}
        )
        body = list_response(reply)
        assert body["totalResults"] == 0
        assert body.get("Resources", []) == []


def test_okta_spec_expectations(scim_bridge: Bridge) -> None:
    tag = uuid.uuid4().hex[:8]
    mia_name, li_name = f"mia.{tag}@acme.example", f"li.{tag}@acme.example"
    mia = create_user(scim_bridge, mia_name)
    create_user(scim_bridge, li_name)

    # Okta's first request: the user by its unique identifier, with paging.
    params = {"filter": f'userName eq "{mia_name}"', "startIndex": 1, "count": 100}
    found = list_response(scim_bridge.scim("GET", "/Users", params=params))
    assert found["totalResults"] == 1
    assert found["startIndex"] == 1
    assert [(u["id"], u["userName"]) for u in found["Resources"]] == [(mia["id"], mia_name)]
    # Paging: one per page; the second page holds the other user.
    both = f'userName ew ".{tag}@acme.example"'
    pages = [
        list_response(
            scim_bridge.scim(
                "GET", "/Users", params={"filter": both, "startIndex": start, "count": 1}
            )
        )
        for start in (1, 2)
    ]
    assert [(p["totalResults"], p["startIndex"], p["itemsPerPage"]) for p in pages] == [
        (2, 1, 1),
        (2, 2, 1),
    ]
    assert {p["Resources"][0]["userName"] for p in pages} == {mia_name, li_name}

    scim_error(scim_bridge.scim("GET", f"/Users/{uuid.uuid4()}"), 404)
    scim_error(scim_bridge.scim("GET", f"/Groups/{uuid.uuid4()}"), 404)

    duplicate = {"schemas": [USER_SCHEMA], "userName": mia_name, "active": True}
    scim_error(scim_bridge.scim("POST", "/Users", json=duplicate), 409, "uniqueness")
    # userName is case-insensitive (RFC 7643 section 4.1.1).
    duplicate["userName"] = mia_name.upper()
    scim_error(scim_bridge.scim("POST", "/Users", json=duplicate), 409, "uniqueness")
    everyone = scim_bridge.scim("GET", "/Users", params={"filter": both})
    assert list_response(everyone)["totalResults"] == 2


def test_a_wrong_or_missing_token_is_401_in_the_error_schema(scim_bridge: Bridge) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}, {}):
        reply = scim_bridge.scim("GET", "/Users", token=None, headers=headers)
        scim_error(reply, 401)
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert SCIM_TOKEN not in reply.text
    name = f"eve.{uuid.uuid4().hex[:8]}@acme.example"
    new_user = {"schemas": [USER_SCHEMA], "userName": name}
    scim_error(scim_bridge.scim("POST", "/Users", json=new_user, token="wrong"), 401)
    stored = scim_bridge.scim("GET", "/Users", params={"filter": f'userName eq "{name}"'})
    assert list_response(stored)["totalResults"] == 0
