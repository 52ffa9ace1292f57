"""The bridge's logs, as an operator reads them: JSON lines with ids, and no secrets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.sandbox import SANDBOX_CLIENT_SECRET
from tests.builders import load_fixture
from tests.integration.harness import ADMIN_TOKEN, HOOK_SECRET, Bridge, Sandbox, wait_for

pytestmark = pytest.mark.integration


def test_logs_are_json_lines_with_ids_and_no_secrets(bridge: Bridge, sandbox: Sandbox) -> None:
    reply = bridge.post_okta(
        load_fixture("okta/event-hook-membership-remove.json"),
    )
    assert reply.status_code == 200
    request_id = reply.headers["x-request-id"]
    sandbox.wait_detached("jane@acme.example", {"WS-ENG", "WS-ONCALL"})
    bridge.wait_idle()
    bridge.post_okta({}, secret="wrong-secret")  # a refused request is logged too

    def logged() -> tuple[str, list[dict[str, Any]]] | None:
        """The log once the refused request's line is in it (written after the reply)."""
        text = bridge.log_path.read_text()
        # Every line is JSON, but for the markers the test harness writes between runs.
        lines = [json.loads(x) for x in text.splitlines() if x.strip() and not x.startswith("--- ")]
        done = any(x.get("event") == "request" and x.get("status") == 401 for x in lines)
        return (text, lines) if done else None

    text, lines = wait_for(logged, what="the refused request's log line")
    accepted = [x for x in lines if x.get("event") == "change_accepted"]
    assert [x["event_id"] for x in accepted] == ["d14117f9-5d8c-11ea-a9cb-1f2fbd3b03f7"]
    assert accepted[0]["request_id"] == request_id
    assert accepted[0]["decision"] == "queued"
    [detached] = [x for x in lines if x.get("event") == "detached"]
    assert len(detached["job_ids"]) == 2 and detached["cor_user_id"] == "jane@acme.example"
    access = [x for x in lines if x.get("event") == "request" and x.get("path") == "/hooks/okta"]
    assert [x["status"] for x in access] == [200, 401]
    for secret in (HOOK_SECRET, ADMIN_TOKEN, SANDBOX_CLIENT_SECRET, "wrong-secret"):
        assert secret not in text
