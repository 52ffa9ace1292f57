"""Intake's rules seen from outside: dedupe, a re-grant cancels a removal, still granted."""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.builders import T0, minutes, okta_delivery, okta_event
from tests.conftest import ENGINES
from tests.integration.harness import (
    ENG_ONCALL,
    HOOK_SECRET,
    PLATFORM,
    Bridge,
    Sandbox,
    StartBridge,
)

pytestmark = pytest.mark.integration

JANE, MIA = "jane@acme.example", "mia@acme.example"
BOTH = {"WS-ENG", "WS-ONCALL"}
REMOVE, ADD = "group.user_membership.remove", "group.user_membership.add"


def barrier(bridge: Bridge, sandbox: Sandbox) -> None:
    """Deliver a later removal for mia and wait for it: whatever was queued before it
    (and due no later) has been claimed and sent by then."""
    bridge.deliver(okta_delivery(okta_event(REMOVE, user="mia", at=T0 + minutes(30))))
    sandbox.wait_detached(MIA, BOTH)


def test_same_event_twice_detaches_once(bridge: Bridge, sandbox: Sandbox) -> None:
    event = okta_event(REMOVE, user="jane", at=T0)
    delivery = okta_delivery(event)

    bridge.deliver(delivery)
    bridge.deliver(delivery)  # Okta's retry: the same delivery again
    bridge.deliver(okta_delivery(copy.deepcopy(event)))  # the same event in another batch

    sandbox.wait_detached(JANE, BOTH)
    barrier(bridge, sandbox)
    assert len(sandbox.detaches(JANE)) == 1
    history = bridge.history(JANE)
    [recorded] = history["events"]
    assert recorded["source_event_id"] == event["uuid"]
    assert recorded["decision"] == "queued"
    assert len(history["jobs"]) == 2
    duplicates = bridge.metric(
        "cor_bridge_changes_total", provider="okta", kind="removed", decision="duplicate"
    )
    assert duplicates == 2


@pytest.mark.parametrize("bridge_engine", ENGINES)
def test_okta_retries_racing_the_first_delivery_detach_once(
    bridge: Bridge, sandbox: Sandbox
) -> None:
    """Okta retries a delivery it stopped waiting for: the retry may arrive while the
    first is still being written, or after its detach was sent."""
    delivery = okta_delivery(okta_event(REMOVE, user="jane", at=T0))
    start_line = threading.Barrier(3)

    def deliver(_: int) -> httpx.Response:
        with httpx.Client(timeout=10) as http:
            start_line.wait()
            return http.post(
                f"{bridge.url}/hooks/okta", json=delivery, headers={"Authorization": HOOK_SECRET}
            )

    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(deliver, range(3)))
    assert [r.status_code for r in replies] == [200] * 3, [r.text for r in replies]
    sandbox.wait_detached(JANE, BOTH)
    bridge.deliver(delivery)  # a late retry, after the detach went out
    barrier(bridge, sandbox)
    assert len(sandbox.detaches(JANE)) == 1
    [recorded] = bridge.history(JANE)["events"]
    assert recorded["decision"] == "queued"
    duplicates = bridge.metric(
        "cor_bridge_changes_total", provider="okta", kind="removed", decision="duplicate"
    )
    assert duplicates == 3


def test_remove_then_add_in_separate_deliveries(
    start_bridge: StartBridge, sandbox: Sandbox
) -> None:
    # A grace period before sending, so a re-add that arrives a moment later cancels it.
    bridge = start_bridge(BRIDGE_DELIVERY_DELAY_SECONDS="2")
    removed = okta_event(REMOVE, user="jane", at=T0)
    added = okta_event(ADD, user="jane", at=T0 + minutes(1))

    bridge.deliver(okta_delivery(removed))
    queued = bridge.jobs(cor_user_id=JANE)
    assert {j["state"] for j in queued} == {"pending"}
    bridge.deliver(okta_delivery(added))

    barrier(bridge, sandbox)  # delayed the same 2 s, so it also proves time has passed
    assert sandbox.detaches(JANE) == []
    _assert_cancelled_by_add(bridge, removed["uuid"], added["uuid"])


def test_remove_then_add_in_one_batch(bridge: Bridge, sandbox: Sandbox) -> None:
    removed = okta_event(REMOVE, user="jane", at=T0)
    added = okta_event(ADD, user="jane", at=T0 + minutes(1))

    # Okta does not promise order inside a batch: the add comes first here.
    bridge.deliver(okta_delivery(added, removed))

    barrier(bridge, sandbox)
    assert sandbox.detaches(JANE) == []
    _assert_cancelled_by_add(bridge, removed["uuid"], added["uuid"])


def _assert_cancelled_by_add(bridge: Bridge, removed_uuid: str, added_uuid: str) -> None:
    history = bridge.history(JANE)
    assert [(e["source_event_id"], e["decision"]) for e in history["events"]] == [
        (removed_uuid, "queued"),
        (added_uuid, "granted"),
    ]
    jobs = history["jobs"]
    assert {j["workspace"] for j in jobs} == BOTH
    assert {j["state"] for j in jobs} == {"cancelled"}
    assert all(j["attempts"] == 0 for j in jobs)
    assert all(f"(event {added_uuid})" in j["last_message"] for j in jobs)
    cancelled = history["events"][1]["detail"]
    assert sorted(cancelled) == sorted(
        f"cancelled job {j['id']} ({j['workspace']}): re-granted by okta group "
        f"{ENG_ONCALL} (eng-oncall) (event {added_uuid})"
        for j in jobs
    )


def test_workspace_still_granted_by_another_group_is_kept(bridge: Bridge, sandbox: Sandbox) -> None:
    bridge.deliver(
        okta_delivery(okta_event(ADD, user="jane", group_id=PLATFORM, group_name="platform"))
    )
    bridge.deliver(okta_delivery(okta_event(ADD, user="jane", at=T0 + minutes(1))))
    removed = okta_event(REMOVE, user="jane", at=T0 + minutes(2))

    bridge.deliver(okta_delivery(removed))

    [call] = sandbox.wait_detached(JANE, {"WS-ONCALL"})
    assert call["body"] == {"workspaces": ["WS-ONCALL"], "metadata": {"source": "OKTA"}}
    [job] = bridge.wait_jobs("done", count=1, cor_user_id=JANE)
    assert job["workspace"] == "WS-ONCALL"
    # COR still lists WS-ENG for her: platform grants it.
    assert "WS-ENG" in job["remaining"]
    assert "WS-ONCALL" not in job["remaining"]
    barrier(bridge, sandbox)
    assert len(sandbox.detaches(JANE)) == 1

    events = bridge.history(JANE)["events"]
    assert [(e["kind"], e["decision"]) for e in events] == [
        ("added", "granted"),
        ("added", "granted"),
        ("removed", "queued"),
    ]
    detail = events[2]["detail"]
    assert detail[0] == f"kept WS-ENG: still granted by okta group {PLATFORM} (platform)"
    assert detail[1] == f"queued job {job['id']}: detach WS-ONCALL from {JANE}"
    assert len(detail) == 2
