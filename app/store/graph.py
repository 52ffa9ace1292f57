"""Microsoft Graph's tables: the subscriptions the bridge renews, and the notification inbox."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from app.store import queue
from app.store.db import insert_ignoring_conflicts
from app.store.schema import graph_inbox, graph_subscriptions, memberships

PENDING, DONE, DEAD = queue.PENDING, "done", "dead"
# Graph retries an unacknowledged notification for up to 4 hours.
GRAPH_RETRY_PERIOD = timedelta(hours=4)


@dataclass(frozen=True)
class StoredSubscription:
    """A subscription the bridge knows: created by `graph subscribe` or registered."""

    id: str
    resource: str
    expires_at: datetime
    created_at: datetime
    last_renewed_at: datetime | None
    last_error: str | None
    reauthorize_requested_at: datetime | None


@dataclass(frozen=True)
class NewInboxEntry:
    """One members@delta entry about to be stored."""

    base_key: str
    subscription_id: str
    group_id: str
    member_id: str
    removed: bool
    occurred_at: datetime


@dataclass(frozen=True)
class InboxRow:
    """A stored entry waiting to become a MembershipChange."""

    id: int
    dedupe_key: str
    subscription_id: str
    group_id: str
    member_id: str
    removed: bool
    occurred_at: datetime
    attempts: int
    received_at: datetime


def _subscription(row: Any) -> StoredSubscription:
    return StoredSubscription(
        id=row.id,
        resource=row.resource,
        expires_at=row.expires_at,
        created_at=row.created_at,
        last_renewed_at=row.last_renewed_at,
        last_error=row.last_error,
        reauthorize_requested_at=row.reauthorize_requested_at,
    )


def put_subscription(
    conn: Connection, subscription_id: str, resource: str, expires_at: datetime, now: datetime
) -> None:
    """Remember a subscription (or update its resource and expiry)."""
    done = conn.execute(
        update(graph_subscriptions)
        .where(graph_subscriptions.c.id == subscription_id)
        .values(resource=resource, expires_at=expires_at, last_error=None)
    )
    if done.rowcount == 0:
        conn.execute(
            insert(graph_subscriptions).values(
                id=subscription_id, resource=resource, expires_at=expires_at, created_at=now
            )
        )


def get_subscription(conn: Connection, subscription_id: str) -> StoredSubscription | None:
    """One subscription, or None when the bridge does not know it."""
    row = conn.execute(
        select(graph_subscriptions).where(graph_subscriptions.c.id == subscription_id)
    ).first()
    return _subscription(row) if row is not None else None


def list_subscriptions(conn: Connection) -> list[StoredSubscription]:
    """Every known subscription, soonest expiry first."""
    rows = conn.execute(
        select(graph_subscriptions).order_by(
            graph_subscriptions.c.expires_at, graph_subscriptions.c.id
        )
    )
    return [_subscription(r) for r in rows]


def record_renewal(
    conn: Connection,
    subscription_id: str,
    expires_at: datetime,
    now: datetime,
    *,
    requested_before: datetime | None = None,
) -> None:
    """Graph accepted a renewal or reauthorization: new expiry, no error, no pending request."""
    values: dict[str, Any] = {"expires_at": expires_at, "last_renewed_at": now, "last_error": None}
    conn.execute(
        update(graph_subscriptions)
        .where(graph_subscriptions.c.id == subscription_id)
        .values(**values)
    )
    clear_reauthorization(conn, subscription_id, requested_before or now)


def clear_reauthorization(
    conn: Connection, subscription_id: str, requested_before: datetime
) -> None:
    """Forget a reauthorization request, unless a newer one came in meanwhile."""
    conn.execute(
        update(graph_subscriptions)
        .where(
            graph_subscriptions.c.id == subscription_id,
            graph_subscriptions.c.reauthorize_requested_at <= requested_before,
        )
        .values(reauthorize_requested_at=None)
    )


def record_subscription_error(conn: Connection, subscription_id: str, error: str) -> None:
    """Keep the last thing that went wrong with a subscription, for /readyz and `graph list`."""
    conn.execute(
        update(graph_subscriptions)
        .where(graph_subscriptions.c.id == subscription_id)
        .values(last_error=error[:1000])
    )


def request_reauthorization(conn: Connection, subscription_id: str, now: datetime) -> bool:
    """Mark a subscription for reauthorization; False when the bridge does not know it."""
    done = conn.execute(
        update(graph_subscriptions)
        .where(graph_subscriptions.c.id == subscription_id)
        .values(reauthorize_requested_at=now)
    )
    return done.rowcount == 1


def add_inbox_entry(conn: Connection, entry: NewInboxEntry, now: datetime) -> str | None:
    """Store an entry; None when it is a retry: the same entry is the latest one stored for
    its (group, member), with nothing in between, within Graph's retry period.

    The same entry after another one for that pair is a new change (a member removed,
    re-added and removed again produces identical notifications), so it gets a key of its
    own; so does one past the retry period (a join the bridge never heard may lie between);
    whether it changes anything is intake's call, on the memberships it knows.
    """
    latest = conn.execute(
        select(graph_inbox.c.id, graph_inbox.c.received_at)
        .where(graph_inbox.c.base_key == entry.base_key)
        .order_by(graph_inbox.c.id.desc())
        .limit(1)
    ).first()
    seen = latest.id if latest is not None else None
    if latest is not None and latest.received_at >= now - GRAPH_RETRY_PERIOD:
        since = conn.execute(
            select(graph_inbox.c.id)
            .where(
                graph_inbox.c.id > seen,
                graph_inbox.c.group_id == entry.group_id,
                graph_inbox.c.member_id == entry.member_id,
            )
            .limit(1)
        ).first()
        if since is None:
            return None
    key = entry.base_key if seen is None else f"{entry.base_key}~{int(now.timestamp() * 1e6)}"
    row = conn.execute(
        insert_ignoring_conflicts(conn, graph_inbox)
        .values(
            dedupe_key=key,
            base_key=entry.base_key,
            subscription_id=entry.subscription_id,
            group_id=entry.group_id,
            member_id=entry.member_id,
            removed=entry.removed,
            received_at=now,
            occurred_at=entry.occurred_at,
            state=PENDING,
            attempts=0,
            next_attempt_at=now,
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(graph_inbox.c.id)
    ).first()
    return key if row is not None else None


INBOX = queue.WorkTable(graph_inbox)  # claim, extend, finish, apply (retry or bury), requeue


def claim_inbox(
    conn: Connection, *, now: datetime, limit: int, worker_id: str, lease: timedelta
) -> list[InboxRow]:
    """Take up to `limit` due pending entries (and those whose claim lapsed), oldest first."""
    rows = INBOX.claim(conn, now=now, limit=limit, worker_id=worker_id, lease=lease)
    return [
        InboxRow(
            id=r.id,
            dedupe_key=r.dedupe_key,
            subscription_id=r.subscription_id,
            group_id=r.group_id,
            member_id=r.member_id,
            removed=bool(r.removed),
            occurred_at=r.occurred_at,
            attempts=r.attempts,
            received_at=r.received_at,
        )
        for r in rows
    ]


def inbox_stats(conn: Connection) -> dict[str, Any]:
    """Pending and dead entries, the oldest pending one's arrival, the latest lookup error."""
    pending, oldest = conn.execute(
        select(func.count(), func.min(graph_inbox.c.received_at)).where(
            graph_inbox.c.state == PENDING
        )
    ).one()
    error = conn.execute(
        select(graph_inbox.c.last_error)
        .where(graph_inbox.c.state == PENDING, graph_inbox.c.last_error.is_not(None))
        .order_by(graph_inbox.c.next_attempt_at.desc())
        .limit(1)
    ).scalar()
    dead = conn.execute(
        select(func.count()).select_from(graph_inbox).where(graph_inbox.c.state == DEAD)
    ).scalar_one()
    return {"pending": int(pending), "oldest_pending": oldest, "last_error": error,
            "dead": int(dead)}  # fmt: skip


def last_known_user(conn: Connection, provider: str, user_id: str) -> dict[str, Any] | None:
    """The identifiers a user last came with (from any earlier change), or None."""
    row = conn.execute(
        select(memberships.c.user)
        .where(memberships.c.provider == provider, memberships.c.user_id == user_id)
        .order_by(memberships.c.changed_at.desc())
        .limit(1)
    ).first()
    return dict(row[0]) if row is not None and row[0] else None
