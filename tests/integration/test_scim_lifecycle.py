"""A SCIM user's deactivation is not undone by group changes while they stay inactive."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.harness import SCIM_TOKEN, Bridge, Sandbox, StartBridge

pytestmark = pytest.mark.integration

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
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
