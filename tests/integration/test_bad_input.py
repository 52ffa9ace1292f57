"""Bad input over real HTTP: clear 4xx answers, nothing stored, nothing accepted lost."""

from __future__ import annotations

import json

import pytest

from tests.builders import okta_delivery, okta_event
from tests.integration.harness import HOOK_SECRET, Bridge, Sandbox, StartBridge, wait_for

pytestmark = pytest.mark.integration

JANE, LI = "jane@acme.example", "li@acme.example"
BOTH = {"WS-ENG", "WS-ONCALL"}
MAX_BODY = 2048


def hook(bridge: Bridge, content: bytes, secret: str | None = HOOK_SECRET, **kw):
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    if secret is not None:
        headers["Authorization"] = secret
    return bridge.http.post(f"{bridge.url}/hooks/okta", content=content, headers=headers, **kw)


def refused(reply, status: int, says: str) -> None:
    assert reply.status_code == status, reply.text
    detail = reply.json()["detail"]
    assert isinstance(detail, str)
    assert says in detail, detail


def test_bad_input_is_refused_and_loses_nothing(start_bridge: StartBridge, sandbox: Sandbox):
    bridge = start_bridge(BRIDGE_MAX_BODY_BYTES=str(MAX_BODY))
    # An accepted removal that COR keeps refusing while the bad input comes in.
    sandbox.fault(503, times=100_000)
    bridge.deliver(okta_delivery(okta_event("group.user_membership.remove", user="jane")))
    wait_for(lambda: sandbox.detaches(JANE), what="jane's first, refused, detach")

    li_removal = okta_delivery(okta_event("group.user_membership.remove", user="li"))
    good = json.dumps(li_removal).encode()
    # Wrong or missing secret: 401, and the delivery is not stored.
    wrong = hook(bridge, good, secret="not-the-secret")
    refused(wrong, 401, "missing or wrong secret in the Authorization header")
    assert "not-the-secret" not in wrong.text
    refused(hook(bridge, good, secret=None), 401, "Authorization header")
    refused(hook(bridge, good, secret=""), 401, "Authorization header")
    refused(hook(bridge, good, secret=f"Bearer {HOOK_SECRET}"), 401, "Authorization header")
    verify = bridge.http.get(f"{bridge.url}/hooks/okta", headers={"Authorization": "nope"})
    refused(verify, 401, "wrong secret")
    # Broken bodies: 400 that says what is wrong.
    refused(hook(bridge, b'{"eventType": "com.okta.event_hook", '), 400, "malformed JSON at line 1")
    refused(hook(bridge, b""), 400, "request body is empty")
    refused(hook(bridge, b'{"eventType": "\xc3\x28"}'), 400, "not UTF-8")
    refused(hook(bridge, b'{"hello": "world"}'), 400, "not an Okta event hook delivery")
    refused(hook(bridge, b"[1, 2]"), 400, "not an Okta event hook delivery")
    no_uuid = okta_delivery(okta_event("group.user_membership.remove", user="li"))
    del no_uuid["data"]["events"][0]["uuid"]
    # A malformed event inside a good envelope is recorded as ignored, not refused: Okta does
    # not retry a 4xx, so refusing would lose the good events of the same batch.
    accepted = hook(bridge, json.dumps(no_uuid).encode())
    assert accepted.status_code == 200, accepted.text
    ignored = {"decision": "ignored", "kind": "ignored", "provider": "okta"}
    assert bridge.metric("cor_bridge_changes_total", **ignored) >= 1
    no_challenge = bridge.http.get(
        f"{bridge.url}/hooks/okta", headers={"Authorization": HOOK_SECRET}
    )
    refused(no_challenge, 400, "x-okta-verification-challenge")
    # Too big, declared up front or streamed without a length: 413.
    padded = dict(li_removal, padding="x" * MAX_BODY)
    big = json.dumps(padded).encode()
    refused(hook(bridge, big), 413, f"over the {MAX_BODY}-byte limit")
    refused(hook(bridge, iter([big[:1000], big[1000:]])), 413, f"over the {MAX_BODY}-byte limit")
    # Admin API without, or with the wrong, bearer token.
    bare = bridge.http.get(f"{bridge.url}/admin/jobs")
    refused(bare, 401, "bearer token")
    assert bare.headers["www-authenticate"] == "Bearer"
    refused(bridge.admin("GET", "/jobs", headers={"Authorization": "Bearer nope"}), 401, "token")
    refused(bridge.admin("GET", "/jobs", headers={"Authorization": HOOK_SECRET}), 401, "token")
    # An operator change that names nobody: 422 from validation.
    assert bridge.admin("POST", "/changes", json={"provider": "okta"}).status_code == 422

    # None of the refused requests stored anything about li ...
    assert bridge.history(LI) == {"user": LI, "events": [], "jobs": [], "held": []}
    # ... so the very same event, now with the secret, is new (not a duplicate) and sent.
    assert bridge.deliver(li_removal)["received"] == 1
    # The removal accepted before all this still arrives once COR is back.
    sandbox.clear_faults()
    sandbox.wait_detached(JANE, BOTH)
    sandbox.wait_detached(LI, BOTH)
    assert {j["state"] for j in bridge.wait_jobs("done", count=4)} == {"done"}
    assert bridge.http.get(f"{bridge.url}/readyz").status_code == 200


def test_sources_without_secrets_are_off(start_bridge: StartBridge) -> None:
    bridge = start_bridge(OKTA_HOOK_SECRET=None, BRIDGE_ADMIN_TOKEN=None)
    delivery = json.dumps(okta_delivery(okta_event("group.user_membership.remove"))).encode()

    refused(hook(bridge, delivery), 404, "OKTA_HOOK_SECRET is unset")
    refused(hook(bridge, delivery, secret=None), 404, "OKTA_HOOK_SECRET is unset")
    challenge = {"x-okta-verification-challenge": "abc"}
    refused(bridge.http.get(f"{bridge.url}/hooks/okta", headers=challenge), 404, "not enabled")
    refused(bridge.admin("GET", "/jobs"), 404, "BRIDGE_ADMIN_TOKEN is unset")
    refused(bridge.http.get(f"{bridge.url}/admin/jobs"), 404, "admin API is not enabled")
    ready = bridge.http.get(f"{bridge.url}/readyz").json()
    assert ready["ready"] is True
    assert ready["checks"]["sources"]["okta_hook"] is False
    assert ready["checks"]["sources"]["admin"] is False
    assert ready["checks"]["queue"]["jobs"]["pending"] == 0


def test_a_delivery_past_the_event_cap_is_refused_fast_and_stores_nothing(
    start_bridge: StartBridge, sandbox: Sandbox
):
    bridge = start_bridge(BRIDGE_MAX_EVENTS_PER_DELIVERY="5")
    six = okta_delivery(*(okta_event("group.user_membership.remove", user="li") for _ in range(6)))
    refused(hook(bridge, json.dumps(six).encode()), 413, "6 events in one delivery; the limit is 5")
    # A megabyte of empty events (the default cap is 1000) is answered within Okta's 3 s.
    flood = start_bridge()
    body = b'{"eventType":"com.okta.event_hook","data":{"events":[' + b"{}," * 340_000 + b"{}]}}"
    reply = hook(flood, body, timeout=3.0)
    refused(reply, 413, "340001 events in one delivery; the limit is 1000")
    assert bridge.history(LI)["events"] == [] and flood.history(LI)["events"] == []
    assert sandbox.detaches(LI) == []
