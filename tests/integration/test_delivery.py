"""Delivery to COR over real HTTP: crashes, retries, Retry-After, dead letters, token refresh."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.builders import okta_delivery, okta_event
from tests.conftest import ENGINES
from tests.integration.harness import (
    ENG_ONCALL,
    FINANCE,
    Bridge,
    Sandbox,
    StartBridge,
    parse_at,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("bridge_engine", ENGINES)]

JANE, MIA, LI, BOB = (f"{u}@acme.example" for u in ("jane", "mia", "li", "bob"))
GHOST = "ghost@acme.example"
BOTH = {"WS-ENG", "WS-ONCALL"}


def remove(user: str, group_id: str = ENG_ONCALL, group_name: str = "eng-oncall") -> dict:
    """A delivery of one removal of `user` (a login's local part) from a group."""
    event = okta_event("group.user_membership.remove", user=user, group_id=group_id)
    event["target"][1]["displayName"] = group_name
    return okta_delivery(event)


def test_sigkill_with_pending_removals_loses_none(
    start_bridge: StartBridge, sandbox: Sandbox, tmp_path: Path, bridge_engine: str
) -> None:
    sandbox.fault(503, times=100_000)  # COR is down until the faults are cleared
    workdir = tmp_path / "bridge"
    # On PostgreSQL other replicas may hold claims, so a restarted bridge takes back a job
    # the killed one was sending only when its lease lapses (SQLite releases them at start).
    lease = {"BRIDGE_LEASE_SECONDS": "2"} if bridge_engine == "postgresql" else {}
    first = start_bridge(workdir, **lease)
    expected = {JANE: BOTH, MIA: BOTH, LI: BOTH, BOB: {"WS-FIN"}}
    for user in ("jane", "mia", "li"):
        first.deliver(remove(user))
    first.deliver(remove("bob", FINANCE, "finance"))

    # Every removal was tried and refused at least once: all of them are now retries.
    # The bridge's record is what is waited for: COR having answered 503 is not enough, a
    # kill before the bridge wrote it down would leave a job with no attempt on record.
    def all_refused_once() -> bool:
        jobs = first.jobs()
        return len(jobs) == 7 and all(j["attempts"] >= 1 for j in jobs)

    wait_for(all_refused_once, what="a recorded refusal for every job")
    assert {c["user_id"] for c in sandbox.detaches() if c["status"] == 503} >= set(expected)
    before = first.jobs()
    assert {j["state"] for j in before} <= {"pending", "running"}
    assert first.kill() == -signal.SIGKILL
    sandbox.clear_faults()
    refused = sandbox.detaches()
    assert {c["status"] for c in refused} == {503}

    second = start_bridge(workdir, **lease)
    for user, workspaces in expected.items():
        sandbox.wait_detached(user, workspaces)
    jobs = second.wait_jobs("done", count=7)
    assert sorted(j["id"] for j in jobs) == sorted(j["id"] for j in before)
    assert all(j["attempts"] >= 2 and j["last_status"] == 200 for j in jobs)
    # Every detach that got through was sent by the restarted bridge.
    assert all(c["status"] == 200 for c in sandbox.detaches()[len(refused) :])
    # SIGTERM, unlike SIGKILL, lets it shut down cleanly (uvicorn re-raises the signal
    # after its graceful shutdown, so the exit status says SIGTERM).
    assert second.stop() in (0, -signal.SIGTERM)
    assert '"event": "bridge_stopped"' in second.log_tail()


def test_two_503s_then_success(bridge: Bridge, sandbox: Sandbox) -> None:
    sandbox.fault(503, times=2)

    bridge.deliver(remove("jane"))

    sandbox.wait_detached(JANE, BOTH)
    calls = sandbox.detaches(JANE)
    assert [c["status"] for c in calls] == [503, 503, 200]
    assert all(sorted(c["body"]["workspaces"]) == sorted(BOTH) for c in calls)
    assert len(sandbox.calls("/oauth/token")) == 1  # a 503 is no reason to drop the token
    jobs = bridge.wait_jobs("done", count=2, cor_user_id=JANE)
    for job in jobs:
        assert job["attempts"] == 3
        assert job["last_status"] == 200
        assert job["last_code"] is None
        # /admin/jobs/{id} lists the attempts themselves.
        tried = bridge.job(job["id"])["deliveries"]
        assert [(a["outcome"], a["status"]) for a in tried] == [
            ("retry", 503),
            ("retry", 503),
            ("done", 200),
        ]
        assert tried[0]["code"] == "HTTP_503"


def test_429_retry_after_is_honoured(bridge: Bridge, sandbox: Sandbox) -> None:
    sandbox.fault(429, retry_after=1)

    bridge.deliver(remove("jane"))

    sandbox.wait_detached(JANE, BOTH)
    refused, accepted = sandbox.detaches(JANE)
    assert (refused["status"], accepted["status"]) == (429, 200)
    gap = (parse_at(accepted) - parse_at(refused)).total_seconds()
    # The backoff alone would retry after 0.05-0.1 s; COR asked for 1 s.
    assert 0.95 <= gap < 5, gap
    [job, _] = bridge.wait_jobs("done", count=2, cor_user_id=JANE)
    assert [a["status"] for a in bridge.job(job["id"])["deliveries"]] == [429, 200]


def test_unknown_user_is_a_dead_letter_at_once(bridge: Bridge, sandbox: Sandbox) -> None:
    bridge.deliver(remove("ghost", FINANCE, "finance"))

    [job] = bridge.wait_jobs("dead", count=1, cor_user_id=GHOST)
    assert job["workspace"] == "WS-FIN"
    assert job["attempts"] == 1
    assert job["last_status"] == 400
    assert job["last_code"] == "ZC001"
    assert "Entity is not associated" in job["last_message"]
    [attempt] = bridge.job(job["id"])["deliveries"]
    assert (attempt["outcome"], attempt["status"], attempt["code"]) == ("dead", 400, "ZC001")
    assert [j["id"] for j in bridge.jobs(state="dead")] == [job["id"]]

    # Never retried: wait well past the first backoff (0.05-0.1 s), then one call only.
    time.sleep(0.5)
    [call] = sandbox.detaches(GHOST)
    assert call["status"] == 400
    assert call["body"] == {"workspaces": ["WS-FIN"], "metadata": {"source": "OKTA"}}
    assert bridge.jobs(cor_user_id=GHOST)[0]["state"] == "dead"


def test_refused_coalesced_detach_is_split_then_dead(bridge: Bridge, sandbox: Sandbox) -> None:
    """Two workspaces in one call: a 400 splits them so one bad workspace cannot sink the
    other; each alone is refused too and becomes a dead letter, and that is the end."""
    bridge.deliver(remove("ghost"))

    jobs = bridge.wait_jobs("dead", count=2, cor_user_id=GHOST)
    assert {j["workspace"] for j in jobs} == BOTH
    assert all(j["last_code"] == "ZC001" for j in jobs)
    time.sleep(0.5)
    calls = sandbox.detaches(GHOST)
    assert [sorted(c["body"]["workspaces"]) for c in calls[:1]] == [sorted(BOTH)]
    assert sorted(w for c in calls[1:] for w in c["body"]["workspaces"]) == sorted(BOTH)
    assert len(calls) == 3
    assert {c["status"] for c in calls} == {400}


def test_revoked_token_is_fetched_again_once(bridge: Bridge, sandbox: Sandbox) -> None:
    bridge.deliver(remove("jane"))
    sandbox.wait_detached(JANE, BOTH)
    assert sandbox.revoke_tokens() == 1

    bridge.deliver(remove("mia"))

    sandbox.wait_detached(MIA, BOTH)

    def seen(call: dict) -> tuple[str, int]:
        what = "token" if call["path"].endswith("/oauth/token") else f"detach {call['user_id']}"
        return what, call["status"]

    assert [seen(c) for c in sandbox.calls()] == [
        ("token", 200),
        (f"detach {JANE}", 200),
        (f"detach {MIA}", 401),
        ("token", 200),
        (f"detach {MIA}", 200),
    ]
    # The refresh is part of one delivery attempt, not a retry.
    for job in bridge.wait_jobs("done", count=2, cor_user_id=MIA):
        assert job["attempts"] == 1
        assert [a["status"] for a in bridge.job(job["id"])["deliveries"]] == [200]
