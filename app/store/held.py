"""Changes held until the IdP's directory is asked: a small queue with leases and backoff.

A held change was stored before its source was answered; it reaches intake once the
directory has said what the user is in now (or, past the age limit, becomes a dead letter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, or_, select, tuple_

from app.changes import MembershipChange
from app.store import queue
from app.store.db import chunked, insert_ignoring_conflicts
from app.store.schema import events, held_changes

PENDING, DONE, DEAD = queue.PENDING, "done", "dead"


@dataclass(frozen=True)
class HeldChange:
    """A stored change waiting for the directory's answer."""

    id: int
    change: MembershipChange
    received_at: datetime
    attempts: int


def hold(conn: Connection, changes: Sequence[MembershipChange], now: datetime) -> dict[str, bool]:
    """Store each change not seen before. Returns, for each event id intake must not see,
    whether it was held now (True) or was held already (False: a duplicate).

    A change whose event intake already recorded (heard before, by hook or log) is left out:
    intake says it is a duplicate.
    """
    if not changes:
        return {}
    keys = [(c.provider, c.event_id) for c in changes]
    seen: set[tuple[str, str]] = set()
    for part in chunked(keys, 500):
        rows = conn.execute(
            select(events.c.provider, events.c.source_event_id).where(
                tuple_(events.c.provider, events.c.source_event_id).in_(list(part))
            )
        )
        seen.update((r[0], r[1]) for r in rows)
    fresh = {(c.provider, c.event_id): c for c in changes if (c.provider, c.event_id) not in seen}
    if not fresh:
        return {}
    rows = conn.execute(
        insert_ignoring_conflicts(conn, held_changes)
        .values([_row(c, now) for c in fresh.values()])
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(held_changes.c.event_id)
    )
    held_now = {r[0] for r in rows}
    return {event_id: event_id in held_now for _, event_id in fresh}


def _row(change: MembershipChange, now: datetime) -> dict[str, Any]:
    return {
        "provider": change.provider,
        "event_id": change.event_id,
        "user_id": change.user.id,
        "user_login": change.user.login or change.user.userName or change.user.email,
        "change": change.model_dump(mode="json"),
        "received_at": now,
        "state": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
    }


HELD = queue.WorkTable(held_changes)  # claim, extend, finish, apply (retry or bury), requeue


def claim(
    conn: Connection, *, now: datetime, limit: int, worker_id: str, lease: timedelta
) -> list[HeldChange]:
    """Take up to `limit` due pending changes (and those whose claim lapsed), oldest first."""
    rows = HELD.claim(conn, now=now, limit=limit, worker_id=worker_id, lease=lease)
    return [
        HeldChange(
            id=r.id,
            change=MembershipChange.model_validate(r.change),
            received_at=r.received_at,
            attempts=r.attempts,
        )
        for r in rows
    ]


def stats(conn: Connection, provider: str) -> dict[str, Any]:
    """Held and dead counts, the oldest held arrival, and the latest error."""
    counts: dict[str, int] = dict(
        conn.execute(
            select(held_changes.c.state, func.count())
            .where(held_changes.c.provider == provider, held_changes.c.state != DONE)
            .group_by(held_changes.c.state)
        ).all()
    )
    oldest = conn.execute(
        select(func.min(held_changes.c.received_at)).where(
            held_changes.c.provider == provider, held_changes.c.state == PENDING
        )
    ).scalar()
    error = conn.execute(
        select(held_changes.c.last_error)
        .where(held_changes.c.provider == provider, held_changes.c.last_error.is_not(None))
        .where(held_changes.c.state != DONE)
        .order_by(held_changes.c.next_attempt_at.desc())
        .limit(1)
    ).scalar()
    return {
        "held": int(counts.get(PENDING, 0)),
        "dead": int(counts.get(DEAD, 0)),
        "oldest_held": oldest,
        "last_error": error,
    }


def for_user(conn: Connection, user: str) -> list[dict[str, Any]]:
    """A user's changes still held, or buried unchecked, for their history (IdP id or login)."""
    rows = conn.execute(
        select(
            held_changes.c.provider,
            held_changes.c.event_id,
            held_changes.c.change,
            held_changes.c.received_at,
            held_changes.c.state,
            held_changes.c.attempts,
            held_changes.c.last_error,
        )
        .where(
            or_(held_changes.c.user_id == user, held_changes.c.user_login == user),
            held_changes.c.state != DONE,
        )
        .order_by(held_changes.c.id)
    )
    return [
        {
            "provider": r.provider,
            "source_event_id": r.event_id,
            "kind": r.change.get("change"),
            "group": r.change.get("group"),
            "received_at": r.received_at,
            "state": r.state,
            "attempts": r.attempts,
            "last_error": r.last_error,
        }
        for r in rows
    ]
