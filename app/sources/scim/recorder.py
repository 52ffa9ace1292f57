"""The membership changes one SCIM request makes, read from our tables as it writes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scim2_models import NotFoundException, Resource
from sqlalchemy import Connection

from app.changes import ChangeKind, MembershipChange, Provider
from app.sources.scim.documents import group_ref, user_ref
from app.store import scim as scim_store
from app.store.scim import GROUPS, USERS, Row


class Recorder:
    """Collects the changes of one request (`changes`), on the request's transaction."""

    def __init__(
        self, conn: Connection, idp: Provider, request_id: str, now: datetime, lock: bool
    ) -> None:
        self.conn = conn
        self.idp: Provider = idp
        self.request_id = request_id
        self.now = now
        self.lock = lock
        self.changes: list[MembershipChange] = []

    def stored(self, kind: str, resource_id: str) -> Row:
        """Our row of a user or group, or SCIM's 404."""
        row = scim_store.get_resource(self.conn, kind, resource_id, lock=self.lock)
        if row is None:
            raise NotFoundException(detail=f"{kind} {resource_id} not found")
        return row

    def members(self, group_id: str, removed: set[str], added: set[str]) -> None:
        """The changes of members leaving and joining a group, once its rows are written."""
        group = self.stored(GROUPS, group_id)
        # Read in bulk what each change needs (Entra removes 100 members a PATCH): the users,
        # and for each one removed the groups they are still in (the still-granted rule).
        users = scim_store.get_resources(self.conn, USERS, removed | added, lock=self.lock)
        left_in = scim_store.groups_of(self.conn, removed)
        groups = scim_store.get_resources(
            self.conn, GROUPS, set().union(*left_in.values()), lock=self.lock
        )
        for kind, user_ids in ((ChangeKind.removed, removed), (ChangeKind.added, added)):
            for user_id in sorted(user_ids):
                user = users[user_id]
                # An inactive user already lost every group; reactivation rejoins the ones held.
                if not user.active:
                    continue
                if kind is ChangeKind.removed:
                    still = [groups[g] for g in sorted(left_in[user_id])]
                    self.change(kind, user, group, still)
                else:
                    self.change(kind, user, group)

    def activity(self, before: Row, after: Resource[Any]) -> None:
        """`active` false is leaving every group; true again rejoins the groups still held."""
        now_active = getattr(after, "active", None) is not False
        if before.active and not now_active:
            self.change(ChangeKind.user_deactivated, self.stored(USERS, before.id), None)
        elif not before.active and now_active:
            user = self.stored(USERS, before.id)
            for group_id in sorted(scim_store.user_group_ids(self.conn, before.id)):
                self.change(ChangeKind.added, user, self.stored(GROUPS, group_id))

    def change(
        self, kind: ChangeKind, user: Row, group: Row | None, member_of: list[Row] | None = None
    ) -> None:
        if kind is ChangeKind.removed and member_of is None:
            # Our own table is the truth of who is in what: the still-granted rule reads it
            # rather than intake's copy, which an externalId change or a rename can leave stale.
            current = scim_store.user_group_ids(self.conn, user.id)
            member_of = [self.stored(GROUPS, g) for g in sorted(current)]
        self.changes.append(
            MembershipChange(
                provider=self.idp,
                event_id=f"scim:{self.request_id}:{len(self.changes):04d}",
                occurred_at=self.now,
                change=kind,
                user=user_ref(user),
                group=group_ref(group) if group is not None else None,
                member_of=tuple(group_ref(g) for g in member_of) if member_of is not None else None,
            )
        )
