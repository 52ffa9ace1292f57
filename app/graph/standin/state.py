"""The Graph stand-in's state: users, groups, members, subscriptions, faults, calls."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

TENANT = "7d96d549-841b-4092-9c09-89abae4c860c"
CLIENT_ID = "standin-client-id"
CLIENT_SECRET = "standin-client-secret"  # noqa: S105 - the stand-in's own, public
ROLE = {"@odata.type": "#microsoft.graph.directoryRole", "id": "role-1", "displayName": "Reader"}


@dataclass
class Fault:
    """Answer the next `times` calls whose path contains `path_contains` with `status`."""

    status: int
    times: int = 1
    path_contains: str = ""
    retry_after: float | None = None


@dataclass
class StandinState:
    """Everything the stand-in knows and was asked."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    member_of: dict[str, list[str]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    page_size: int = 100
    validate_urls: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Direct members of each group, and every membership change since the start, in order.
    members: dict[str, list[str]] = field(default_factory=dict)
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, group, member)
    deleted: set[str] = field(default_factory=set)
    delta_page_size: int = 100  # members a delta page carries
    pending_pages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    delta_tokens: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)
    # Graph answers an expired groups delta token with 400 syncStateNotFound (others: 410).
    expired_status: int = 400

    def reset(self) -> None:
        """Forget everything."""
        with self.lock:
            boxes = (self.users, self.groups, self.member_of, self.subscriptions, self.members)
            for box in (*boxes, self.pending_pages, self.delta_tokens):
                box.clear()
            self.changes.clear()
            self.deleted.clear()
            self.delta_page_size, self.expired_status = 100, 400
            self.calls.clear()
            self.faults.clear()
            self.tokens.clear()
            self.page_size, self.validate_urls = 100, True

    def add_group(self, group_id: str, name: str) -> None:
        """A group with its display name."""
        self.groups[group_id] = {"id": group_id, "displayName": name}

    def add_user(
        self, user_id: str, upn: str, *, mail: str | None = None, groups: tuple[str, ...] = ()
    ) -> None:
        """A user and the groups Graph reports them in (transitively)."""
        self.users[user_id] = {"id": user_id, "userPrincipalName": upn, "mail": mail}
        self.member_of[user_id] = list(groups)

    def add_member(self, group_id: str, user_id: str) -> None:
        """`user_id` joins `group_id` (directly; transitiveMemberOf lists it too)."""
        with self.lock:
            self.members.setdefault(group_id, [])
            if user_id not in self.members[group_id]:
                self.members[group_id].append(user_id)
            groups = self.member_of.setdefault(user_id, [])
            if group_id not in groups:
                groups.append(group_id)
            self.changes.append(("added", group_id, user_id))

    def remove_member(self, group_id: str, user_id: str) -> None:
        """`user_id` leaves `group_id`."""
        with self.lock:
            if user_id in self.members.get(group_id, []):
                self.members[group_id].remove(user_id)
            if group_id in self.member_of.get(user_id, []):
                self.member_of[user_id].remove(group_id)
            self.changes.append(("removed", group_id, user_id))

    def delete_group(self, group_id: str) -> None:
        """The group is deleted: gone from lookups, `@removed` in the next delta."""
        with self.lock:
            for user_id in self.members.pop(group_id, []):
                if group_id in self.member_of.get(user_id, []):
                    self.member_of[user_id].remove(group_id)
            self.groups.pop(group_id, None)
            self.deleted.add(group_id)
            self.changes.append(("deleted", group_id, ""))

    def expire_delta_tokens(self, status: int = 400) -> None:
        """Every deltaLink and nextLink given so far is refused from now on (tokens expire)."""
        with self.lock:
            self.delta_tokens.clear()
            self.pending_pages.clear()
            self.expired_status = status

    def fault(self, status: int, **more: Any) -> None:
        """Queue misbehaviour for matching calls."""
        self.faults.append(Fault(status, **more))

    def calls_to(self, path_contains: str, method: str | None = None) -> list[dict[str, Any]]:
        """Recorded calls whose path contains `path_contains` (and of `method`)."""
        with self.lock:
            return [
                c
                for c in self.calls
                if path_contains in c["path"] and (method is None or c["method"] == method)
            ]

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.path_contains in path:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None
