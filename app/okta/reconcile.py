"""Deleted groups and drift: what the bridge believes of Okta's groups, set right.

- A `group.lifecycle.delete` of a group (hook or System Log) is a removal of everyone the
  bridge knew in it: Okta sends no removal per member, and lists nobody once it is gone.
- The membership sync reads the members of every mapped Okta group (every OKTA_SYNC_SECONDS,
  or `cor-bridge okta sync`): a member the bridge did not know is recorded, and anyone the
  bridge believed a member whom Okta no longer lists is a removal ("reconciled").
Both become ordinary changes: removals are held and checked against the user's current
groups like any other (app/okta/checker.py).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import anyio
import structlog
from sqlalchemy import Connection

from app import metrics
from app.changes import ChangeKind, GroupRef, IgnoredEvent, MembershipChange, UserRef
from app.errors import BridgeError
from app.http import NotFoundError
from app.mapping import Mapping
from app.okta.client import OktaClient
from app.rounds import Rounds, is_due, utcnow
from app.runtime import Bridge
from app.store import cursors
from app.store import memberships as membership_store
from app.store.memberships import Membership

log = structlog.get_logger(__name__)

GROUP_DELETED = "group.lifecycle.delete"
SKEW = timedelta(seconds=60)
NAME = "okta_sync"
Item = MembershipChange | IgnoredEvent


def expand_deletions(conn: Connection, mapping: Mapping, items: Sequence[Item]) -> list[Item]:
    """Each deletion of a mapped group, followed by a removal of each member the bridge knew."""
    out: list[Item] = []
    for item in items:
        out.append(item)
        if not isinstance(item, IgnoredEvent) or item.kind != GROUP_DELETED:
            continue
        group = item.group
        if group is None or not mapping.workspaces_for("okta", group):
            continue
        known = membership_store.members_of_group(conn, "okta", group.id)
        reason = f"okta group {group.id} was deleted: its {len(known)} known members leave it"
        out[-1] = item.model_copy(update={"reason": reason})
        out += [
            _removal(
                m, f"{item.event_id}:{m.user_id}", item.occurred_at, f"{reason} ({GROUP_DELETED})"
            )
            for m in known
        ]
    return out


def _removal(m: Membership, event_id: str, at: datetime, note: str) -> MembershipChange:
    if len(event_id) > 200:  # a stable id of the right length for very long user ids
        event_id = "okta:" + hashlib.sha256(event_id.encode()).hexdigest()
    user = UserRef.model_validate({**m.user, "id": m.user_id})
    return MembershipChange(
        provider="okta",
        event_id=event_id,
        occurred_at=at,
        change=ChangeKind.removed,
        user=user,
        group=GroupRef(id=m.group_id, name=m.group_name),
        note=note,
    )


def drift(
    group: GroupRef, known: Sequence[Membership], listed: Sequence[UserRef], at: datetime
) -> list[MembershipChange]:
    """What the sync found: members to record, and members Okta no longer lists."""
    stamp = at.isoformat(timespec="seconds")
    listed_ids = {u.id for u in listed}
    known_ids = {m.user_id for m in known}
    found: list[MembershipChange] = [
        MembershipChange(
            provider="okta",
            event_id=_sync_id(stamp, group.id, user.id),
            # Seen in a list read after `at`; dated a little earlier so that a removal Okta
            # logged just before (by its clock) is not taken as older than this sighting.
            occurred_at=at - SKEW,
            change=ChangeKind.added,
            user=user,
            group=group,
            note="reconciled: Okta lists them as a member",
        )
        for user in listed
        if user.id not in known_ids
    ]
    found += [
        _removal(
            m, _sync_id(stamp, group.id, m.user_id), at, "reconciled: Okta no longer lists them"
        )
        for m in known
        if m.user_id not in listed_ids
    ]
    return found


def _sync_id(stamp: str, group_id: str, user_id: str) -> str:
    key = f"okta-sync:{stamp}:{group_id}:{user_id}"
    return key if len(key) <= 200 else "okta-sync:" + hashlib.sha256(key.encode()).hexdigest()


class Sync:
    """Compares the members of every mapped Okta group with what the bridge knows."""

    def __init__(
        self,
        bridge: Bridge,
        client: OktaClient,
        *,
        interval: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bridge = bridge
        self.client = client
        self.holder = "okta-sync-" + uuid.uuid4().hex[:12]
        self._interval = interval
        self._clock = clock
        self.rounds = Rounds("okta_sync")

    async def run(self) -> None:
        """Sync whenever a round is due, until cancelled (one replica at a time)."""
        log.info("okta_sync_started", holder=self.holder, every_seconds=self._interval)
        await self.rounds.loop(self._round, after_error=min(self._interval, 60))

    async def _round(self) -> float:
        state = await anyio.to_thread.run_sync(self._read)
        if is_due(state.last_success_at if state else None, self._interval, self._clock()):
            await self.run_once()
        return min(self._interval, 60.0)

    def _read(self) -> cursors.PollerState | None:
        with self.bridge.db.read() as conn:
            return cursors.read(conn, NAME)

    async def run_once(self, *, force: bool = False) -> dict[str, int]:
        """One sync of every mapped group; counts of what it found (empty: another replica)."""
        now = self._clock()
        turn = await anyio.to_thread.run_sync(self._take_turn, now, force)
        if turn is None:
            return {}
        counts = {"groups": 0, "added": 0, "removed": 0}
        try:
            for group in await self._mapped_groups():
                found = await self._sync_group(group, now)
                counts["groups"] += 1
                for change in found:
                    counts[change.change.value] += 1
        except BridgeError as exc:
            log.warning("okta_sync_failed", error=str(exc))
            await anyio.to_thread.run_sync(self._note, str(exc))
            return counts
        await anyio.to_thread.run_sync(self._note, None)
        log.info("okta_synced", **counts)
        return counts

    async def _mapped_groups(self) -> list[GroupRef]:
        groups: dict[str, GroupRef] = {}
        for rule in self.bridge.mapping.rules:
            if rule.provider != "okta":
                continue
            if rule.group_id is not None:
                groups.setdefault(rule.group_id, GroupRef(id=rule.group_id))
            elif rule.group_name is not None:
                for group in await self.client.find_groups(rule.group_name):
                    groups[group.id] = group
        return list(groups.values())

    async def _sync_group(self, group: GroupRef, now: datetime) -> list[MembershipChange]:
        try:
            listed = [u async for u in self.client.group_members(group.id)]
        except NotFoundError:
            listed = []  # deleted: nobody is in it any more
        metrics.POLLED_EVENTS.labels(NAME).inc(len(listed))
        found = await self.bridge.transact(
            lambda conn: self._compare(conn, group, listed, now), ask_okta=True
        )
        return found[0]

    def _compare(
        self, conn: Connection, group: GroupRef, listed: list[UserRef], now: datetime
    ) -> tuple[list[MembershipChange], list[Item]]:
        known = membership_store.members_of_group(conn, "okta", group.id)
        named = group if group.name else GroupRef(id=group.id, name=_name_of(known))
        changes = drift(named, known, listed, now)
        return changes, list(changes)

    def _take_turn(self, now: datetime, force: bool) -> cursors.PollerState | None:
        lease = timedelta(minutes=30)
        with self.bridge.db.begin() as conn:
            return cursors.take_turn(conn, NAME, self.holder, now, lease, force=force)

    def _note(self, error: str | None) -> None:
        with self.bridge.db.begin() as conn:
            if error is None:
                cursors.record_success(conn, NAME, self._clock())
                cursors.release(conn, NAME, self.holder)
            else:
                cursors.record_error(conn, NAME, error, self._clock())


def _name_of(known: Sequence[Membership]) -> str | None:
    return next((m.group_name for m in known if m.group_name), None)
