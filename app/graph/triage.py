"""Triage of a Graph delivery: each notification becomes an inbox row, a recorded-only
event or a lifecycle mark (the subscription check and dedupe included).

Runs inside the webhook's transaction, before Graph gets its 202, and does no lookups: a
membership entry becomes an inbox row (resolved later), everything else an IgnoredEvent
that intake records in the same transaction. Lifecycle events mark the subscription for the
subscription manager, which acts after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Connection

from app.changes import GroupRef, IgnoredEvent, UserRef
from app.graph.notifications import Notification, entry_key
from app.graph.origins import GROUP_DELETED
from app.http import unsafe_segment_reason
from app.store import graph as graph_store
from app.store import memberships as membership_store
from app.store.graph import NewInboxEntry

log = structlog.get_logger(__name__)

REAUTHORIZATION = "reauthorizationRequired"


@dataclass
class Received:
    """What one delivery amounted to."""

    queued: int = 0
    retries: int = 0
    ignored: int = 0
    lifecycle: int = 0
    reauthorize: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        """The counts, for the 202 body and the log."""
        return {
            "queued": self.queued,
            "retries": self.retries,
            "ignored": self.ignored,
            "lifecycle": self.lifecycle,
        }


def accept_notifications(
    conn: Connection, notes: list[Notification], now: datetime, *, credentials: bool
) -> tuple[Received, list[IgnoredEvent]]:
    """Store every entry of every notification, or say why it is only recorded."""
    received, recorded = Received(), []
    for index, note in enumerate(notes):
        # Graph's notifications carry no time of their own: arrival order stands in for it.
        at = now + timedelta(microseconds=index)
        problem = _subscription_problem(conn, note, now)
        if problem is not None:
            log.warning(
                "graph_notification_refused", subscription_id=note.subscription_id, reason=problem
            )
            recorded.append(_ignored(note, note.key, at, problem, kind=_kind(note)))
        elif note.body.lifecycleEvent:
            recorded.append(_lifecycle(conn, note, at, now, credentials, received))
        else:
            recorded += _membership(conn, note, at, now, received)
    received.ignored += len(recorded) - received.lifecycle
    return received, recorded


def _subscription_problem(conn: Connection, note: Notification, now: datetime) -> str | None:
    stored = graph_store.get_subscription(conn, note.subscription_id)
    if stored is None:
        return (
            f"unknown subscription {note.subscription_id}: not created or registered by this "
            "bridge (see `cor-bridge graph subscribe` and `cor-bridge graph register`)"
        )
    # Graph's own word on the expiry wins: the subscription may have been renewed elsewhere.
    expires = note.body.subscriptionExpirationDateTime or stored.expires_at
    if expires <= now:
        return f"expired subscription {note.subscription_id} (expired {expires.isoformat()})"
    return None


def _lifecycle(
    conn: Connection,
    note: Notification,
    at: datetime,
    now: datetime,
    credentials: bool,
    received: Received,
) -> IgnoredEvent:
    event = note.body.lifecycleEvent or ""
    received.lifecycle += 1
    if event == REAUTHORIZATION and credentials:
        graph_store.request_reauthorization(conn, note.subscription_id, now)
        received.reauthorize.append(note.subscription_id)
        reason = "Graph asks for reauthorization; the bridge reauthorizes the subscription"
    elif event == REAUTHORIZATION:
        reason = (
            "Graph asks for reauthorization, but GRAPH_TENANT_ID, GRAPH_CLIENT_ID and "
            "GRAPH_CLIENT_SECRET are unset: renew the subscription yourself or it will stop"
        )
    elif event == "subscriptionRemoved":
        reason = "Graph removed the subscription: create it again (cor-bridge graph subscribe)"
        graph_store.record_subscription_error(conn, note.subscription_id, reason)
    elif event == "missed":
        reason = "Graph says some notifications were not delivered: review recent removals"
    else:
        reason = f"lifecycle event {event!r} needs no action"
    say = log.info if event == REAUTHORIZATION and credentials else log.warning
    say(
        "graph_lifecycle_event",
        subscription_id=note.subscription_id,
        lifecycle_event=event,
        reason=reason,
    )
    return _ignored(note, f"{note.key}:lifecycle", at, reason, kind=_kind(note))


def _membership(
    conn: Connection, note: Notification, at: datetime, now: datetime, received: Received
) -> list[IgnoredEvent]:
    group_id = note.group_id
    if note.group_removed:
        return [_group_deleted(conn, note, at, now, received)]
    if not note.members:
        return []  # a property change (a rename, say): nothing about memberships
    assert group_id is not None
    unsafe_group = unsafe_segment_reason(group_id)
    if unsafe_group is not None:
        # Graph object ids are GUIDs; a dot segment would steer the lookups (GET /groups/..).
        return [_ignored(note, note.key, at, f"group id {unsafe_group}", kind=_kind(note))]
    recorded = []
    for entry in note.members:
        key = entry_key(note, entry)
        if not entry.is_user():
            reason = f"member {entry.member_id} is a {entry.odata_type}, not a user; not expanded"
            recorded.append(_ignored(note, key, at, reason, kind="graph.member", user=None))
            continue
        unsafe = unsafe_segment_reason(entry.member_id)
        if unsafe is not None:  # the delivery's other entries still count
            reason = f"member id {unsafe}; not looked up, nothing detached"
            recorded.append(_ignored(note, key, at, reason, kind="graph.member", user=None))
            continue
        stored = graph_store.add_inbox_entry(
            conn,
            NewInboxEntry(key, note.subscription_id, group_id, entry.member_id, entry.removed, at),
            now,
        )
        if stored is None:
            received.retries += 1
        else:
            received.queued += 1
    return recorded


def _group_deleted(
    conn: Connection, note: Notification, at: datetime, now: datetime, received: Received
) -> IgnoredEvent:
    """Graph names no member of a deleted group: each one the bridge knew in it leaves it."""
    group_id = note.group_id
    log.warning("graph_group_deleted", subscription_id=note.subscription_id, group_id=group_id)
    if group_id is None or unsafe_segment_reason(group_id) is not None:
        reason = "a group was deleted, but the notification names no usable group id"
        return _ignored(note, note.key, at, reason, kind="graph.group_deleted")
    known = membership_store.members_of_group(conn, "entra", group_id)
    for m in known:
        key = f"{note.key}:{m.user_id}:removed"
        entry = NewInboxEntry(key, GROUP_DELETED, group_id, m.user_id, True, at)
        if graph_store.add_inbox_entry(conn, entry, now) is None:
            received.retries += 1
        else:
            received.queued += 1
    reason = f"group {group_id} was deleted: its {len(known)} known members leave it"
    return _ignored(note, note.key, at, reason, kind="graph.group_deleted")


def _ignored(
    note: Notification,
    event_id: str,
    at: datetime,
    reason: str,
    *,
    kind: str,
    user: UserRef | None = None,
) -> IgnoredEvent:
    group = GroupRef(id=note.group_id) if note.group_id else None
    return IgnoredEvent(
        provider="entra",
        event_id=event_id,
        occurred_at=at,
        kind=kind,
        reason=reason,
        user=user,
        group=group,
    )


def _kind(note: Notification) -> str:
    if note.body.lifecycleEvent:
        return f"graph.lifecycle.{note.body.lifecycleEvent}"[:64]
    return "graph.notification"
