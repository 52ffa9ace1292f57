"""The operators' API over real HTTP: explicit changes and replay of dead letters."""

from __future__ import annotations

import pytest

from tests.builders import okta_delivery, okta_event
from tests.conftest import ENGINES
from tests.integration.harness import FINANCE, Bridge, Sandbox, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("bridge_engine", ENGINES)]

MIA, GHOST = "mia@acme.example", "ghost@acme.example"


def test_explicit_change_reaches_cor(bridge: Bridge, sandbox: Sandbox) -> None:
    change = {"provider": "okta", "cor_user_id": MIA, "workspaces": ["WS-ONCALL"]}

    reply = bridge.admin("POST", "/changes", json=change)

    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["decision"] == "queued"
    assert answer["event_id"].startswith("admin-")
    [job_id] = answer["jobs"]
    [call] = sandbox.wait_detached(MIA, {"WS-ONCALL"})
    assert call["body"] == {"workspaces": ["WS-ONCALL"], "metadata": {"source": "OKTA"}}
    [job] = bridge.wait_jobs("done", count=1, cor_user_id=MIA)
    assert (job["id"], job["workspace"], job["provider"]) == (job_id, "WS-ONCALL", "okta")
    assert job["remaining"] == ["WS-ENG"]
    [event] = bridge.history(MIA)["events"]
    assert event["source_event_id"] == answer["event_id"]
    assert event["detail"][0] == "operator asked to detach these workspaces"


def test_replay_sends_a_dead_job_again(bridge: Bridge, sandbox: Sandbox) -> None:
    removal = okta_event(
        "group.user_membership.remove", user="ghost", group_id=FINANCE, group_name="finance"
    )
    bridge.deliver(okta_delivery(removal))
    [dead] = bridge.wait_jobs("dead", count=1, cor_user_id=GHOST)
    assert dead["last_code"] == "ZC001"
    # The operator fixes the cause: the user now exists in COR under the OKTA source.
    sandbox.put_user(GHOST, ["WS-FIN", "WS-OPS"])

    dry = bridge.admin("POST", "/replay", json={"filter": {"state": ["dead"]}, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert [j["id"] for j in dry.json()["jobs"]] == [dead["id"]]
    reply = bridge.admin("POST", "/replay", json={"ids": [dead["id"]]})

    assert reply.status_code == 200, reply.text
    assert reply.json() == {"dry_run": False, "jobs": [{"id": dead["id"], "result": "requeued"}]}
    sandbox.wait_detached(GHOST, {"WS-FIN"})
    assert [c["status"] for c in sandbox.detaches(GHOST)] == [400, 200]
    [job] = bridge.wait_jobs("done", count=1, cor_user_id=GHOST)
    assert job["id"] == dead["id"]
    assert job["remaining"] == ["WS-OPS"]
    tried = bridge.job(job["id"])["deliveries"]
    assert [(a["outcome"], a["status"]) for a in tried] == [("dead", 400), ("done", 200)]
    # A done job may be replayed too; the detach is idempotent, so it is simply sent again.
    again = bridge.admin("POST", "/replay", json={"ids": [job["id"]]}).json()
    assert again["jobs"] == [{"id": job["id"], "result": "requeued"}]
    wait_for(
        lambda: [c["status"] for c in sandbox.detaches(GHOST)] == [400, 200, 200],
        what="the replayed done job sent again",
    )
    bridge.wait_jobs("done", count=1, cor_user_id=GHOST)


def test_replay_of_an_unknown_job_is_404(bridge: Bridge) -> None:
    reply = bridge.admin("POST", "/replay", json={"ids": [424242]})

    assert reply.status_code == 404
    assert reply.json()["detail"] == "no job with id 424242"
    assert bridge.admin("GET", "/jobs/424242").status_code == 404
    assert bridge.admin("POST", "/replay", json={}).status_code == 422
