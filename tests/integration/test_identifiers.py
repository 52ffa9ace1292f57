"""No identifier steers a call: dot-segment ids from every source never reach COR, over real
HTTP (the bridge process and the COR sandbox, which records every path exactly as it arrived).

A COR user id of ".." would otherwise be sent as PUT /v2/integrations/detach (httpx removes
dot segments), with the bridge's token, and a COR that answered 200 would make it a removal
recorded done that never happened.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import pytest

from tests.builders import okta_delivery, okta_event
from tests.integration.harness import FINANCE, SCIM_TOKEN, Bridge, Sandbox, StartBridge

pytestmark = pytest.mark.integration

DETACH = re.compile(r"/v2/integrations/users/([^/]+)/detach")
TOKEN = "/v1/oauth/token"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
REFUSED = "{} is not a usable identifier in a URL path"
# Path-like, but each one segment: these are sent, as exactly themselves.
OKTA_ODD, SCIM_ODD, ADMIN_ODD = "a/../b", "../../v1/oauth/token", "%2e%2e"


def okta_removal(okta_id: str, login: str) -> dict[str, Any]:
    event = okta_event(
        "group.user_membership.remove", user_id=okta_id, group_id=FINANCE, group_name="finance"
    )
    event["target"][0]["alternateId"] = login
    return event


def scim_removal(bridge: Bridge, external_id: str, user_name: str) -> None:
    """A SCIM user joins Finance and leaves it again (Entra's default dialect)."""
    body = {"schemas": [USER_SCHEMA], "userName": user_name, "externalId": external_id}
    user = bridge.scim("POST", "/Users", json=body)
    assert user.status_code == 201, user.text
    member = [{"value": user.json()["id"]}]
    group = {"schemas": [GROUP_SCHEMA], "displayName": "Finance", "members": member}
    group_id = bridge.scim("POST", "/Groups", json=group).json()["id"]
    leave = {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "Remove", "path": "members", "value": member}
    ]}  # fmt: skip
    assert bridge.scim("PATCH", f"/Groups/{group_id}", json=leave).status_code in (200, 204)
    assert bridge.scim("DELETE", f"/Groups/{group_id}").status_code == 204


def decisions(bridge: Bridge, idp_user_id: str) -> list[tuple[str, str]]:
    return [(e["decision"], e["detail"][0]) for e in bridge.history(idp_user_id)["events"]]


def test_dotted_ids_from_every_source_never_reach_cor(
    start_bridge: StartBridge, sandbox: Sandbox
) -> None:
    bridge = start_bridge(SCIM_TOKEN=SCIM_TOKEN)
    sandbox.put_user(OKTA_ODD, ["WS-FIN"])
    sandbox.put_user(SCIM_ODD, ["WS-FIN"], source="MICROSOFT_DYNAMICS")
    sandbox.put_user(ADMIN_ODD, ["WS-OPS"])

    # The Okta hook: alternateId is the login, and mapping.yaml's okta user_id is {login}.
    logins = {"00udots": "..", "00udot": ".", "00uodd": OKTA_ODD}
    bridge.deliver(okta_delivery(*(okta_removal(i, login) for i, login in logins.items())))
    # SCIM (Entra): userName is the login, and the entra user_id is {login}.
    for external_id, user_name in (("scim-dots", ".."), ("scim-odd", SCIM_ODD)):
        scim_removal(bridge, external_id, user_name)
    # The admin API: an explicit COR user id.
    for bad in ("..", "."):
        change = {"provider": "okta", "cor_user_id": bad, "workspaces": ["WS-OPS"]}
        reply = bridge.admin("POST", "/changes", json=change)
        assert reply.status_code == 422 and REFUSED.format(repr(bad)) in reply.text
    change = {"provider": "okta", "cor_user_id": ADMIN_ODD, "workspaces": ["WS-OPS"]}
    assert bridge.admin("POST", "/changes", json=change).status_code == 200

    for user, cor_id in (("00udots", ".."), ("00udot", "."), ("scim-dots", "..")):
        decided = decisions(bridge, user)  # SCIM: the join, then the removal
        assert decided and all(d == "unresolved" for d, _ in decided), decided
        assert all(REFUSED.format(repr(cor_id)) in why for _, why in decided), decided
    sandbox.wait_detached(OKTA_ODD, {"WS-FIN"})
    sandbox.wait_detached(SCIM_ODD, {"WS-FIN"})
    sandbox.wait_detached(ADMIN_ODD, {"WS-OPS"})
    bridge.wait_idle()

    # What COR received: its token endpoint, and detaches of exactly one segment each.
    calls = [c for c in sandbox.calls() if c["raw_path"] != TOKEN]
    for call in calls:
        found = DETACH.fullmatch(call["raw_path"])
        assert found is not None and call["method"] == "PUT", call
        assert unquote(found[1]) == call["user_id"] and call["status"] == 200, call
    assert sorted(c["user_id"] for c in calls) == sorted([OKTA_ODD, SCIM_ODD, ADMIN_ODD])
    assert all(job["state"] == "done" for job in bridge.jobs())
