"""The Okta stand-in's state: users, groups, members, the System Log, faults and calls."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

WINDOW_SECONDS = 60


@dataclass
class Fault:
    """Answer the next `times` API calls whose path contains `path_contains` with `status`."""

    status: int
    times: int = 1
    path_contains: str = ""


@dataclass
class Org:
    """Everything the stand-in knows and was asked."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    rate_limit: int = 600
    window_seconds: float = WINDOW_SECONDS
    used: dict[str, tuple[float, int]] = field(default_factory=dict)

    def event(self, event_type: str, *targets: dict[str, Any]) -> dict[str, Any]:
        """Append a System Log event as Okta writes it, and return it."""
        published = datetime.now(UTC).isoformat(timespec="milliseconds")
        event = {
            "uuid": str(uuid.uuid4()),
            "published": published.replace("+00:00", "Z"),
            "eventType": event_type,
            "outcome": {"result": "SUCCESS"},
            "target": list(targets),
        }
        self.log.append(event)
        return event

    def user_target(self, user_id: str) -> dict[str, Any]:
        """A System Log target of type User."""
        login = self.users[user_id]["profile"]["login"]
        return {"id": user_id, "type": "User", "alternateId": login, "displayName": login}

    def group_target(self, group_id: str, group: dict[str, Any]) -> dict[str, Any]:
        """A System Log target of type UserGroup."""
        return {"id": group_id, "type": "UserGroup", "displayName": group["profile"]["name"]}

    def groups_of(self, user_id: str) -> list[str]:
        """The ids of the groups a user is in."""
        return [g for g, ids in self.members.items() if user_id in ids]


JANE = "00uptu0jj9V91p5QM0h7"  # the recorded hook fixtures' Jane
MIA = "00umia0000000000000"


def seeded() -> Org:
    """The `make run` demo org: Jane in eng-oncall and platform (both grant WS-ENG), Mia in
    finance; the groups and logins of mapping.yaml and the COR sandbox."""
    org = Org()
    org.users[JANE] = user_doc(JANE, "jane@acme.example")
    org.users[MIA] = user_doc(MIA, "mia@acme.example")
    for group_id, name, members in (
        ("00g8mo0l5wuTxmoIC0h7", "eng-oncall", [JANE]),
        ("00gplatform000000000", "platform", [JANE]),
        ("00g9fin0l5wuTxmoIC0h", "finance", [MIA]),
    ):
        org.groups[group_id] = group_doc(group_id, name)
        org.members[group_id] = list(members)
    return org


def user_doc(user_id: str, login: str, status: str = "ACTIVE") -> dict[str, Any]:
    """A user as the Management API returns one."""
    return {"id": user_id, "status": status, "profile": {"login": login, "email": login}}


def group_doc(group_id: str, name: str) -> dict[str, Any]:
    """A group as the Management API returns one."""
    return {"id": group_id, "type": "OKTA_GROUP", "profile": {"name": name}}
