"""Entra's manager as a bare id, and Postel's law for the attributes the bridge ignores.

Entra sends the enterprise extension's manager as `"<id>"` (RFC 7643: `{"value": ...}`),
`""` to take it away, and again in every later user PATCH, a disable included. Neither it
nor any other attribute the bridge does not act on may sink a request; an attribute it
acts on is still refused, in SCIM's error schema, naming the attribute.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.sources.scim import leniency
from tests.unit.test_scim import (
    SCIM,
    SCIM_APP,
    USER_SCHEMA,
    create_group,
    create_user,
    patch,
    scim_error,
    settled,
)

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
MANAGER = f"{ENTERPRISE}:manager"
PYDANTIC_TEXT = ("validation error for", "[type=", "For further information visit")


@pytest.fixture
def bridge_settings() -> dict[str, Any]:
    return SCIM_APP


class Warnings:
    """Stands in for the leniency module's logger: the attributes it dropped."""

    def __init__(self) -> None:
        self.dropped: list[str] = []

    def warning(self, event: str, **fields: Any) -> None:
        assert event == "scim_attribute_dropped"
        assert set(fields) == {"attribute", "problem"}
        self.dropped.append(fields["attribute"])


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> Warnings:
    spy = Warnings()
    monkeypatch.setattr(leniency, "log", spy)
    return spy


async def user_of(client: httpx.AsyncClient, user_id: str) -> dict[str, Any]:
    reply = await client.get(f"/scim/v2/Users/{user_id}", headers=SCIM)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def manager_of(client: httpx.AsyncClient, user_id: str) -> Any:
    return (await user_of(client, user_id)).get(ENTERPRISE, {}).get("manager")


def assert_ok(reply: httpx.Response) -> None:
    assert reply.status_code in (200, 204), reply.text


def clean_detail(reply: httpx.Response, attribute: str) -> str:
    """A 400 invalidValue in SCIM's error schema that names the attribute, in plain words."""
    detail = scim_error(reply, 400)
    assert attribute in detail, detail
    assert not any(text in detail for text in PYDANTIC_TEXT), detail
    return detail


# -- the manager as Entra sends it ----------------------------------------------------------


async def test_a_user_created_with_a_manager_id_reads_it_back_as_a_complex_value(client):
    body = {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "userName": "jane@acme.example",
        "active": True,
        ENTERPRISE: {"manager": "123456", "employeeNumber": "42"},
    }
    reply = await client.post("/scim/v2/Users", json=body, headers=SCIM)
    assert reply.status_code == 201, reply.text
    assert reply.json()[ENTERPRISE] == {"manager": {"value": "123456"}, "employeeNumber": "42"}
    assert await manager_of(client, reply.json()["id"]) == {"value": "123456"}


async def test_an_empty_manager_on_create_is_no_manager(client):
    jane = await create_user(client, "jane", **{ENTERPRISE: {"manager": ""}})
    assert await manager_of(client, jane) is None


async def test_patch_adds_replaces_and_removes_the_manager_by_its_id(client):
    jane = await create_user(client, "jane")
    assert_ok(await patch(client, f"Users/{jane}", {"op": "Add", "path": MANAGER, "value": "m1"}))
    assert await manager_of(client, jane) == {"value": "m1"}
    replace = {"op": "Replace", "path": MANAGER, "value": "m2"}
    assert_ok(await patch(client, f"Users/{jane}", replace))
    assert await manager_of(client, jane) == {"value": "m2"}
    assert_ok(await patch(client, f"Users/{jane}", {"op": "replace", "path": MANAGER, "value": ""}))
    assert await manager_of(client, jane) is None
    # Removing it again, or adding "" while there is none, changes nothing.
    assert_ok(await patch(client, f"Users/{jane}", {"op": "Add", "path": MANAGER, "value": ""}))
    assert await manager_of(client, jane) is None


@pytest.mark.parametrize(
    ("value", "cleared"),
    [
        ({MANAGER: "m3"}, {MANAGER: ""}),
        ({ENTERPRISE: {"manager": "m3"}}, {ENTERPRISE: {"manager": ""}}),
    ],
    ids=["dotted-key", "extension-object"],
)
async def test_path_less_replace_of_the_aadoptscim062020_dialect(client, value, cleared):
    jane = await create_user(client, "jane", **{ENTERPRISE: {"employeeNumber": "7"}})
    op = {"op": "replace", "value": {"displayName": "Jane Doe", **value}}
    assert_ok(await patch(client, f"Users/{jane}", op))
    user = await user_of(client, jane)
    assert user["displayName"] == "Jane Doe"
    assert user[ENTERPRISE] == {"employeeNumber": "7", "manager": {"value": "m3"}}
    assert_ok(await patch(client, f"Users/{jane}", {"op": "replace", "value": cleared}))
    assert (await user_of(client, jane))[ENTERPRISE] == {"employeeNumber": "7"}


async def test_put_with_the_manager_id(client):
    jane = await create_user(client, "jane")
    body = {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "userName": "jane@acme.example",
        "active": True,
        ENTERPRISE: {"manager": "m4"},
    }
    reply = await client.put(f"/scim/v2/Users/{jane}", json=body, headers=SCIM)
    assert reply.status_code == 200, reply.text
    assert reply.json()[ENTERPRISE]["manager"] == {"value": "m4"}
    assert await manager_of(client, jane) == {"value": "m4"}


async def test_a_disable_that_carries_the_manager_reaches_intake(client, cor):
    """Entra's disable: the manager again, then active "False"; the person loses WS-FIN."""
    jane = await create_user(client, "jane", **{ENTERPRISE: {"manager": "m1"}})
    await create_group(client, "Finance", [jane])
    reply = await patch(
        client,
        f"Users/{jane}",
        {"op": "Add", "path": MANAGER, "value": "m1"},
        {"op": "Replace", "path": "active", "value": "False"},
    )
    assert_ok(reply)
    await settled(client, cor, 1)
    assert cor.sent() == [
        (
            "/v2/integrations/users/jane@acme.example/detach",
            {"workspaces": ["WS-FIN"], "metadata": {"source": "MICROSOFT_DYNAMICS"}},
        )
    ]
    user = await user_of(client, jane)
    assert user["active"] is False and user[ENTERPRISE]["manager"] == {"value": "m1"}


# -- what the bridge does not act on never sinks a request -----------------------------------


async def test_a_misshapen_attribute_the_bridge_ignores_is_dropped_on_create(client, warnings):
    body = {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "userName": "jane@acme.example",
        "title": {"x": 1},
        "phoneNumbers": "555",
        "nickName": "JD",
        ENTERPRISE: {"employeeNumber": {"n": 1}, "costCenter": "cc"},
    }
    reply = await client.post("/scim/v2/Users", json=body, headers=SCIM)
    assert reply.status_code == 201, reply.text
    user = await user_of(client, reply.json()["id"])
    assert "title" not in user and "phoneNumbers" not in user and user["nickName"] == "JD"
    assert user[ENTERPRISE] == {"costCenter": "cc"}
    assert sorted(warnings.dropped) == sorted(
        ["title", "phoneNumbers", f"{ENTERPRISE}:employeeNumber"]
    )


async def test_a_misshapen_attribute_does_not_sink_a_deactivation(client, cor, warnings):
    jane = await create_user(client, "jane")
    await create_group(client, "Finance", [jane])
    reply = await patch(
        client,
        f"Users/{jane}",
        {"op": "replace", "path": "phoneNumbers", "value": "555"},
        {"op": "replace", "value": {"title": {"x": 1}, "nickName": "JD"}},
        {"op": "Replace", "path": "active", "value": "False"},
    )
    assert_ok(reply)
    await settled(client, cor, 1)
    assert cor.detaches[0].body["workspaces"] == ["WS-FIN"]
    user = await user_of(client, jane)
    assert user["active"] is False and user["nickName"] == "JD" and "title" not in user
    assert warnings.dropped == ["phoneNumbers", "title"]


async def test_a_misshapen_attribute_does_not_sink_a_membership_change(client, cor, warnings):
    jane, ben = await create_user(client, "jane"), await create_user(client, "ben")
    finance = await create_group(client, "Finance", [jane, ben])
    reply = await patch(
        client,
        f"Groups/{finance}",
        {"op": "remove", "path": f'members[value eq "{jane}"]'},
        {"op": "replace", "value": {"displayName": "Finance", "meta": "x"}},
    )
    assert_ok(reply)
    await settled(client, cor, 1)
    assert [path for path, _ in cor.sent()] == ["/v2/integrations/users/jane@acme.example/detach"]
    assert warnings.dropped == ["meta"]


# -- what the bridge acts on is refused, in plain words ---------------------------------------


async def test_a_misshapen_active_is_refused_and_changes_nothing(client, cor):
    jane = await create_user(client, "jane")
    await create_group(client, "Finance", [jane])
    for ops in (
        [{"op": "replace", "path": "active", "value": {"x": 1}}],
        [{"op": "replace", "path": "active", "value": "maybe"}],
        [
            {"op": "Add", "path": MANAGER, "value": "m1"},
            {"op": "replace", "value": {"title": "T", "active": {"x": 1}}},
        ],
    ):
        clean_detail(await patch(client, f"Users/{jane}", *ops), "active")
    user = await user_of(client, jane)
    assert user["active"] is True and "title" not in user and ENTERPRISE not in user
    assert cor.detaches == []


async def test_misshapen_acted_on_attributes_are_refused_on_create(client):
    base = {"schemas": [USER_SCHEMA], "userName": "jane@acme.example"}
    for body, attribute in (
        ({**base, "active": {"x": 1}}, "active"),
        ({**base, "userName": None}, "userName"),
        ({"schemas": [USER_SCHEMA], "title": "T"}, "userName"),
        ({**base, "emails": "jane@acme.example", "title": {"x": 1}}, "emails"),
    ):
        reply = await client.post("/scim/v2/Users", json=body, headers=SCIM)
        clean_detail(reply, attribute)
    listed = await client.get("/scim/v2/Users", headers=SCIM)
    assert listed.json()["totalResults"] == 0


async def test_a_bad_member_list_is_refused_naming_members(client):
    finance = await create_group(client, "Finance")
    reply = await patch(client, f"Groups/{finance}", {"op": "add", "path": "members", "value": 7})
    clean_detail(reply, "members")
