"""A SCIM user's deactivation: not undone by group changes while they stay inactive, and
not sunk by the attributes Entra sends with it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.harness import SCIM_TOKEN, Bridge, Sandbox, StartBridge

pytestmark = pytest.mark.integration

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
# mapping.yaml's Entra group matched by object id (SCIM: externalId): WS-ENG, WS-ONCALL.
ENG_ONCALL_OBJECT_ID = "0bc7d487-fd6f-41a0-8362-71ec81074f11"
JANE = "jane@acme.example"


def created(bridge: Bridge, kind: str, body: dict[str, Any]) -> str:
    reply = bridge.scim("POST", f"/{kind}", json=body)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def test_an_inactive_user_added_to_a_group_keeps_the_deactivation_detach(
    start_bridge: StartBridge, sandbox: Sandbox
) -> None:
    # A grace period, so the deactivation's detach is still pending when the add arrives.
    bridge = start_bridge(SCIM_TOKEN=SCIM_TOKEN, BRIDGE_DELIVERY_DELAY_SECONDS="1")
    jane = created(bridge, "Users", {"schemas": [USER_SCHEMA], "userName": JANE, "active": True})
    created(
        bridge,
        "Groups",
        {"schemas": [GROUP_SCHEMA], "displayName": "Engineering", "members": [{"value": jane}]},
    )
    deactivate = {
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
    assert bridge.scim("PATCH", f"/Users/{jane}", json=deactivate).status_code in (200, 204)

    # Still disabled, she is pushed into another group that grants WS-ENG.
    created(
        bridge,
        "Groups",
        {
            "schemas": [GROUP_SCHEMA],
            "displayName": "Eng Oncall",
            "externalId": ENG_ONCALL_OBJECT_ID,
            "members": [{"value": jane}],
        },
    )

    bridge.wait_idle()
    [job] = bridge.jobs(cor_user_id=JANE)
    assert (job["workspace"], job["state"]) == ("WS-ENG", "done"), job
    [call] = sandbox.detaches(JANE)
    assert call["body"] == {"workspaces": ["WS-ENG"], "metadata": {"source": "MICROSOFT_DYNAMICS"}}


def test_entras_disable_with_its_manager_id_detaches(
    start_bridge: StartBridge, sandbox: Sandbox
) -> None:
    """Entra sends the manager as a bare id on create and again in the disabling PATCH;
    neither is refused, and the disable takes away what Engineering granted."""
    bridge = start_bridge(SCIM_TOKEN=SCIM_TOKEN)
    jane = created(
        bridge,
        "Users",
        {
            "schemas": [USER_SCHEMA, ENTERPRISE],
            "externalId": "jane",
            "userName": JANE,
            "active": True,
            ENTERPRISE: {"manager": "7c1d0a4e-manager"},
        },
    )
    created(
        bridge,
        "Groups",
        {"schemas": [GROUP_SCHEMA], "displayName": "Engineering", "members": [{"value": jane}]},
    )
    disable = {
        "schemas": [PATCH_SCHEMA],
        "Operations": [
            {"op": "Add", "path": f"{ENTERPRISE}:manager", "value": "7c1d0a4e-manager"},
            {"op": "Replace", "path": "active", "value": "False"},
        ],
    }
    reply = bridge.scim("PATCH", f"/Users/{jane}", json=disable)
    assert reply.status_code in (200, 204), reply.text

    bridge.wait_idle()
    [call] = sandbox.detaches(JANE)
    assert call["body"] == {"workspaces": ["WS-ENG"], "metadata": {"source": "MICROSOFT_DYNAMICS"}}
    user = bridge.scim("GET", f"/Users/{jane}").json()
    assert user["active"] is False
    assert user[ENTERPRISE]["manager"] == {"value": "7c1d0a4e-manager"}
