"""Okta's own truth, end to end: the real bridge, the COR sandbox and the Okta stand-in as
processes on loopback (DESIGN.md section 8)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from app.okta.standin import STANDIN_TOKEN
from tests.conftest import ENGINES
from tests.integration.harness import (
    ENG_ONCALL,
    FINANCE,
    PLATFORM,
    Bridge,
    Sandbox,
    StartBridge,
    wait_for,
)

pytestmark = pytest.mark.integration

JANE, JANE_LOGIN = "00ujane000000000000", "jane@acme.example"
MIA, MIA_LOGIN = "00umia0000000000000", "mia@acme.example"


# What rests on the store (cursors, leases, held rows, memberships) runs on both engines; the
# rest on SQLite (the conftest default), to keep `make test` within its time.
BOTH_ENGINES = pytest.mark.parametrize("bridge_engine", ENGINES)


@pytest.fixture
def okta(sandbox: Sandbox) -> Sandbox:
    """The stand-in org: Jane in eng-oncall and platform (both grant WS-ENG), Mia in finance."""
    sandbox.okta("POST", "/users", {"id": JANE, "login": JANE_LOGIN})
    sandbox.okta("POST", "/users", {"id": MIA, "login": MIA_LOGIN})
    for group_id, name in ((ENG_ONCALL, "eng-oncall"), (PLATFORM, "platform"), (FINANCE, "fin")):
        sandbox.okta("POST", "/groups", {"id": group_id, "name": name})
    for group_id in (ENG_ONCALL, PLATFORM):
        member(sandbox, group_id, JANE, "add", logged=False)
    member(sandbox, FINANCE, MIA, "add", logged=False)
    return sandbox


def member(sandbox: Sandbox, group_id: str, user_id: str, op: str, logged: bool = True) -> Any:
    """Add or remove in Okta; the System Log event Okta wrote (when logged)."""
    body = {"group_id": group_id, "user_id": user_id, "op": op, "logged": logged}
    return sandbox.okta("POST", "/members", body)


def hook(*events: dict[str, Any]) -> dict[str, Any]:
    """An Okta event hook delivery of these System Log events."""
    return {"eventType": "com.okta.event_hook", "eventId": "d", "data": {"events": list(events)}}


def directory_bridge(start: StartBridge, okta: Sandbox, **env: str | None) -> Bridge:
    """A bridge that asks the Okta stand-in (System Log polling and sync off unless asked)."""
    settings: dict[str, str | None] = {
        "OKTA_ORG_URL": okta.okta_url,
        "OKTA_API_TOKEN": STANDIN_TOKEN,
        "OKTA_LOG_POLL_SECONDS": "0",
        "OKTA_SYNC_SECONDS": "0",
        **env,
    }
    return start(**settings)


def history_lines(bridge: Bridge, user: str) -> list[str]:
    return [line for e in bridge.history(user)["events"] for line in e["detail"]]


@BOTH_ENGINES
def test_a_workspace_another_okta_group_grants_is_kept_until_that_group_goes_too(
    start_bridge: StartBridge, okta: Sandbox
):
    bridge = directory_bridge(start_bridge, okta)
    # The bridge never heard Jane join platform: only Okta can tell it WS-ENG is still granted.
    bridge.deliver(hook(member(okta, ENG_ONCALL, JANE, "remove")))
    okta.wait_detached(JANE_LOGIN, {"WS-ONCALL"})
    kept = "kept WS-ENG: still granted by okta group 00gplatform000000000 (platform) (asked Okta)"
    assert kept in history_lines(bridge, JANE_LOGIN)
    assert all("WS-ENG" not in c["body"]["workspaces"] for c in okta.detaches(JANE_LOGIN))

    bridge.deliver(hook(member(okta, PLATFORM, JANE, "remove")))
    okta.wait_detached(JANE_LOGIN, {"WS-ONCALL", "WS-ENG"})


def test_deactivating_a_user_the_bridge_never_saw_leaves_the_groups_okta_lists(
    start_bridge: StartBridge, okta: Sandbox
):
    bridge = directory_bridge(start_bridge, okta)
    event = okta.okta("POST", f"/users/{MIA}/deactivate")
    bridge.deliver(hook(event))
    okta.wait_detached(MIA_LOGIN, {"WS-FIN"})
    assert any("by deactivation (asked Okta)" in line for line in history_lines(bridge, MIA_LOGIN))


def test_a_deactivation_held_while_okta_was_down_and_undone_since_detaches_nothing(
    start_bridge: StartBridge, okta: Sandbox
):
    bridge = directory_bridge(start_bridge, okta, BRIDGE_RETRY_MAX_SECONDS="0.5")
    okta.okta("POST", "/faults", {"status": 503, "times": 4, "path_contains": "/api/v1/users"})
    bridge.deliver(hook(okta.okta("POST", f"/users/{MIA}/deactivate")))
    bridge.deliver(hook(okta.okta("POST", f"/users/{MIA}/reactivate")))

    def settled() -> list[str] | None:
        lines = history_lines(bridge, MIA_LOGIN)
        return lines if any("reactivated since" in line for line in lines) else None

    lines = wait_for(settled, timeout=30, what="the held deactivation to meet Okta's answer")
    assert (
        "Okta says the user is ACTIVE now (reactivated since): nothing detached (asked Okta)"
        in lines
    )
    bridge.wait_idle()
    assert okta.detaches(MIA_LOGIN) == []


@BOTH_ENGINES
def test_a_removal_only_in_the_system_log_is_found_and_the_hook_copy_counts_once(
    start_bridge: StartBridge, okta: Sandbox
):
    bridge = directory_bridge(start_bridge, okta, OKTA_LOG_POLL_SECONDS="0.3")
    wait_for(lambda: bridge.readyz()["checks"]["okta_directory"]["system_log"]["last_poll"])
    event = member(okta, FINANCE, MIA, "remove")  # the hook never delivers it
    okta.wait_detached(MIA_LOGIN, {"WS-FIN"})
    # Okta's one retry arrives late with the same event: it is the same removal.
    bridge.deliver(hook(event))
    bridge.wait_idle()
    assert len(okta.detaches(MIA_LOGIN)) == 1
    decisions = [e["decision"] for e in bridge.history(MIA_LOGIN)["events"]]
    assert decisions == ["queued"]


@BOTH_ENGINES
def test_a_removal_made_while_the_bridge_was_killed_arrives_after_restart(
    start_bridge: StartBridge, okta: Sandbox
):
    bridge = directory_bridge(start_bridge, okta, OKTA_LOG_POLL_SECONDS="0.3")
    wait_for(lambda: bridge.readyz()["checks"]["okta_directory"]["system_log"]["last_poll"])
    bridge.kill()
    member(okta, FINANCE, MIA, "remove")
    member(okta, PLATFORM, JANE, "remove")
    directory_bridge(start_bridge, okta, OKTA_LOG_POLL_SECONDS="0.3", workdir=bridge.workdir)
    okta.wait_detached(MIA_LOGIN, {"WS-FIN"})
    # Jane is still in eng-oncall, which grants WS-ENG: nothing to detach for her.
    assert okta.detaches(JANE_LOGIN) == []


def test_okta_unavailable_holds_the_detach_and_the_right_one_goes_in_the_end(
    start_bridge: StartBridge, okta: Sandbox
):
    bridge = directory_bridge(start_bridge, okta, BRIDGE_RETRY_MAX_SECONDS="0.5")
    okta.okta("POST", "/faults", {"status": 503, "times": 3, "path_contains": "/api/v1/users"})
    event = member(okta, ENG_ONCALL, JANE, "remove")
    bridge.deliver(hook(event))

    def failed_and_held() -> dict[str, Any] | None:
        state = bridge.readyz()["checks"]["okta_directory"]
        return state if state["held"] == 1 and state["held_error"] else None

    state = wait_for(failed_and_held, what="the check to fail and hold the removal")
    assert "503" in state["held_error"]
    assert okta.detaches(JANE_LOGIN) == []  # nothing on a guess
    [held] = bridge.history(JANE_LOGIN)["held"]  # and her history says why
    assert held["source_event_id"] == event["uuid"] and "503" in held["last_error"]
    # Then Okta's rate limit: 429 until the bucket resets.
    okta.okta("POST", "/rate", {"limit": 1, "window_seconds": 2})
    okta.wait_detached(JANE_LOGIN, {"WS-ONCALL"}, timeout=30)
    assert all("WS-ENG" not in c["body"]["workspaces"] for c in okta.detaches(JANE_LOGIN))


def test_a_wrong_token_is_shown_and_nothing_is_detached(start_bridge: StartBridge, okta: Sandbox):
    bridge = directory_bridge(start_bridge, okta, OKTA_API_TOKEN="not-the-token")
    bridge.deliver(hook(member(okta, ENG_ONCALL, JANE, "remove")))

    def refused() -> dict[str, Any] | None:
        state = bridge.readyz()["checks"]["okta_directory"]
        return state if state["last_error"] and "401" in state["last_error"] else None

    state = wait_for(refused, what="the 401 in /readyz")
    assert "E0000011" in state["last_error"] and "not-the-token" not in str(state)
    assert state["held"] == 1
    assert okta.detaches(JANE_LOGIN) == []
    assert "not-the-token" not in bridge.log_tail(500)


def test_without_the_directory_readyz_says_still_granted_rests_on_events_seen(bridge: Bridge):
    state = bridge.readyz()["checks"]["okta_directory"]
    assert state["configured"] is False
    assert "seen" in state["still_granted"]


@BOTH_ENGINES
def test_a_deleted_group_takes_away_what_it_granted_from_every_member_the_bridge_knew(
    start_bridge: StartBridge, okta: Sandbox
):
    people = [f"00upeople{i:010}" for i in range(210)]  # two pages of a group's members
    for user_id in people:
        okta.okta("POST", "/users", {"id": user_id, "login": f"{user_id}@acme.example"})
        member(okta, FINANCE, user_id, "add", logged=False)
    member(okta, PLATFORM, people[0], "add", logged=False)
    bridge = directory_bridge(start_bridge, okta, OKTA_SYNC_SECONDS="3600")

    def synced() -> str | None:
        return bridge.readyz()["checks"]["okta_directory"]["sync"]["last_sync"]

    wait_for(synced, timeout=30, what="the first membership sync")  # the bridge learns them
    event = okta.okta("DELETE", f"/groups/{FINANCE}")
    bridge.deliver(hook(event))
    expected = {f"{p}@acme.example" for p in people}
    wait_for(
        lambda: {c["user_id"] for c in okta.detaches()} >= expected or None,
        timeout=60,
        what="every known member of the deleted group detached",
    )
    assert all(c["body"]["workspaces"] == ["WS-FIN"] for c in okta.detaches())
    lines = history_lines(bridge, f"{people[0]}@acme.example")
    assert any("was deleted" in line for line in lines)


@BOTH_ENGINES
def test_a_member_removed_in_okta_with_no_event_at_all_is_found_by_the_sync(
    start_bridge: StartBridge, okta: Sandbox
):
    bridge = directory_bridge(start_bridge, okta, OKTA_SYNC_SECONDS="1")
    wait_for(
        lambda: bridge.readyz()["checks"]["okta_directory"]["sync"]["last_sync"],
        what="the first membership sync",
    )
    member(okta, FINANCE, MIA, "remove", logged=False)  # no hook, nothing in the System Log
    okta.wait_detached(MIA_LOGIN, {"WS-FIN"}, timeout=20)
    assert any(line.startswith("reconciled") for line in history_lines(bridge, MIA_LOGIN))
    assert okta.detaches(JANE_LOGIN) == []  # Jane's groups did not change


def test_catch_up_since_an_earlier_time_finds_what_happened_before_the_first_start(
    start_bridge: StartBridge, okta: Sandbox
):
    member(okta, FINANCE, MIA, "remove")  # before the bridge ever ran
    bridge = directory_bridge(start_bridge, okta, OKTA_LOG_POLL_SECONDS="0.3")
    wait_for(lambda: bridge.readyz()["checks"]["okta_directory"]["system_log"]["last_poll"])
    assert okta.detaches(MIA_LOGIN) == []  # the first start begins at "now"
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "okta", "catch-up", "--since", "2026-01-01T00:00:00"],
        env=bridge.env,
        cwd=bridge.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "2026-01-01T00:00:00.000Z" in done.stdout
    okta.wait_detached(MIA_LOGIN, {"WS-FIN"})
