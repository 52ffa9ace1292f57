"""The recorded Okta payloads, replayed against the real service over HTTP."""

from __future__ import annotations

import pytest

from tests.builders import T0, load_fixture, okta_delivery, okta_event
from tests.integration.harness import FINANCE, HOOK_SECRET, JANE_OKTA_ID, Bridge, Sandbox

pytestmark = pytest.mark.integration

JANE, BOB = "jane@acme.example", "bob@acme.example"
CHANGES = "cor_bridge_changes_total"


def test_verification_challenge_is_echoed(bridge: Bridge) -> None:
    recorded = load_fixture("okta/verification-request.json")
    headers = {
        name: value.replace("<OKTA_HOOK_SECRET>", HOOK_SECRET)
        for name, value in recorded["headers"].items()
    }

    reply = bridge.http.request(recorded["method"], bridge.url + recorded["path"], headers=headers)

    assert reply.status_code == recorded["expect"]["status"]
    assert reply.headers["content-type"].startswith(recorded["expect"]["content_type"])
    assert reply.json() == recorded["expect"]["body"]


def test_recorded_removal_detaches_both_workspaces(bridge: Bridge, sandbox: Sandbox) -> None:
    delivery = load_fixture("okta/event-hook-membership-remove.json")

    assert bridge.deliver(delivery) == {"received": 1, "eventId": delivery["eventId"]}

    [call] = sandbox.wait_detached(JANE, {"WS-ENG", "WS-ONCALL"})
    assert call["method"] == "PUT"
    assert call["path"] == f"/v2/integrations/users/{JANE}/detach"
    assert sorted(call["body"]["workspaces"]) == ["WS-ENG", "WS-ONCALL"]
    assert call["body"]["metadata"] == {"source": "OKTA"}
    jobs = bridge.wait_jobs("done", count=2, cor_user_id=JANE)
    assert {j["workspace"] for j in jobs} == {"WS-ENG", "WS-ONCALL"}
    assert all(j["attempts"] == 1 and j["last_status"] == 200 for j in jobs)
    # COR's reply says what jane still has: WS-FIN, not the two just removed.
    assert all(j["remaining"] == ["WS-FIN"] for j in jobs)

    history = bridge.history(JANE)
    [event] = history["events"]
    assert event["source_event_id"] == "d14117f9-5d8c-11ea-a9cb-1f2fbd3b03f7"
    assert event["kind"] == "removed"
    assert event["decision"] == "queued"
    assert event["user_id"] == JANE_OKTA_ID
    assert event["group_id"] == "00g8mo0l5wuTxmoIC0h7"
    assert event["group_name"] == "eng-oncall"
    assert event["cor_user_id"] == JANE
    assert any("detach WS-ENG from jane@acme.example" in d for d in event["detail"])
    assert any("detach WS-ONCALL from jane@acme.example" in d for d in event["detail"])
    assert sorted(j["id"] for j in history["jobs"]) == sorted(j["id"] for j in jobs)
    # The same person, asked for by Okta user id, has the same history.
    assert bridge.history(JANE_OKTA_ID)["events"] == history["events"]


def test_recorded_batch(bridge: Bridge, sandbox: Sandbox) -> None:
    """Bob removed then re-added: nothing sent; FAILURE and session events ignored; jane
    deactivated: detached from the group the bridge has seen her in (finance)."""
    # Before the batch, the bridge learns jane is in finance (Okta would have told it).
    joined = okta_event(
        "group.user_membership.add",
        user="jane",
        user_id=JANE_OKTA_ID,
        group_id=FINANCE,
        group_name="finance",
        at=T0,
    )
    bridge.deliver(okta_delivery(joined))
    batch = load_fixture("okta/event-hook-batch.json")

    assert bridge.deliver(batch) == {"received": 5, "eventId": batch["eventId"]}

    [call] = sandbox.wait_detached(JANE, {"WS-FIN"})
    assert call["body"] == {"workspaces": ["WS-FIN"], "metadata": {"source": "OKTA"}}
    # Okta retries the same delivery: every event is a duplicate, the ignored ones too,
    # which shows they were recorded.
    assert bridge.deliver(batch)["received"] == 5
    assert bridge.metric(CHANGES, provider="okta", kind="ignored", decision="ignored") == 2
    assert bridge.metric(CHANGES, provider="okta", kind="ignored", decision="duplicate") == 2
    assert bridge.metric(CHANGES, provider="okta", kind="removed", decision="duplicate") == 1
    # A barrier: a later removal is delivered, so anything queued before it was too.
    bridge.deliver(okta_delivery(okta_event("group.user_membership.remove", user="mia")))
    sandbox.wait_detached("mia@acme.example", {"WS-ENG", "WS-ONCALL"})
    assert sandbox.detaches(BOB) == []
    assert len(sandbox.detaches(JANE)) == 1

    bob = bridge.history(BOB)
    assert [(e["kind"], e["decision"]) for e in bob["events"]] == [
        ("removed", "queued"),
        ("added", "granted"),
    ]
    [job] = bob["jobs"]
    assert job["workspace"] == "WS-FIN"
    assert job["state"] == "cancelled"
    assert job["attempts"] == 0
    assert job["last_message"].startswith(f"re-granted by okta group {FINANCE} (finance)")
    [cancelled] = bob["events"][1]["detail"]
    assert cancelled.startswith(f"cancelled job {job['id']} (WS-FIN): re-granted by okta group")

    jane = bridge.history(JANE)
    # The FAILURE removal and the session start are about jane too: recorded, ignored.
    assert [(e["kind"], e["decision"]) for e in jane["events"]] == [
        ("added", "granted"),
        ("group.user_membership.remove", "ignored"),
        ("user.session.start", "ignored"),
        ("user_deactivated", "queued"),
    ]
    assert jane["events"][1]["detail"] == ["outcome is FAILURE, not SUCCESS"]
    deactivation = jane["events"][3]
    assert deactivation["source_event_id"] == "0a000005-5d8c-11ea-a9cb-1f2fbd3b03f7"
    # Had the FAILURE removal from finance counted, she would have been in no group.
    assert deactivation["detail"][0] == f"left okta group {FINANCE} (finance) by deactivation"
    [job] = jane["jobs"]
    assert (job["workspace"], job["state"]) == ("WS-FIN", "done")
