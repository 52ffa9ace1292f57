"""Builders for test input: Okta deliveries shaped like the recorded fixtures."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
T0 = datetime(2026, 3, 3, 20, 0, tzinfo=UTC)


def load_fixture(name: str) -> Any:
    """A recorded payload from tests/fixtures, e.g. 'okta/event-hook-batch.json'."""
    return json.loads((FIXTURES / name).read_text())


def okta_event(
    event_type: str,
    *,
    user: str = "jane",
    user_id: str | None = None,
    group_id: str | None = "00g8mo0l5wuTxmoIC0h7",
    group_name: str = "eng-oncall",
    at: datetime | None = None,
    uuid_: str | None = None,
    result: str = "SUCCESS",
) -> dict[str, Any]:
    """One System Log event, built from the recorded removal."""
    template = load_fixture("okta/event-hook-membership-remove.json")["data"]["events"][0]
    event = copy.deepcopy(template)
    event["uuid"] = uuid_ or str(uuid.uuid4())
    event["eventType"] = event_type
    event["published"] = (at or T0).isoformat().replace("+00:00", "Z")
    event["outcome"]["result"] = result
    targets: list[dict[str, Any]] = [
        {
            "id": user_id or f"00u{user}",
            "type": "User",
            "alternateId": f"{user}@acme.example",
            "displayName": user.title(),
        }
    ]
    if group_id is not None:
        targets.append(
            {
                "id": group_id,
                "type": "UserGroup",
                "alternateId": "unknown",
                "displayName": group_name,
            }
        )
    event["target"] = targets
    return event


def okta_delivery(*events: dict[str, Any]) -> dict[str, Any]:
    """An event hook envelope around `events`."""
    envelope = load_fixture("okta/event-hook-membership-remove.json")
    envelope["eventId"] = str(uuid.uuid4())
    envelope["data"]["events"] = list(events)
    return envelope


def minutes(n: float) -> timedelta:
    """A timedelta of n minutes."""
    return timedelta(minutes=n)
