"""Dead letters outside the outbox: Graph inbox entries and held changes that died, and
removals intake recorded as `unresolved` (no COR user id); listed, and handed back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, select, update

from app.store.queue import DEAD
from app.store.schema import events, graph_inbox, held_changes

UNRESOLVED = "unresolved"
REPLAYED = "replayed"  # an unresolved removal an operator sent through intake again
REMOVALS = ("removed", "user_deactivated")  # what a dead letter would have detached


def dead_inbox(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    """Graph inbox entries that died, newest first."""
    t = graph_inbox
    what = (t.c.dedupe_key.label("event_id"), t.c.group_id, t.c.member_id, t.c.removed,
            t.c.occurred_at)  # fmt: skip
    return _dead(conn, t, what, limit)


def dead_held(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    """Held changes that died unchecked, newest first (with the kind and group changed)."""
    t = held_changes
    what = (t.c.provider, t.c.event_id, t.c.user_id, t.c.user_login, t.c.change)
    found = []
    for row in _dead(conn, t, what, limit):
        change = row.pop("change") or {}
        found.append({**row, "kind": change.get("change"), "group": change.get("group")})
    return found


def _dead(
    conn: Connection, t: Table, what: tuple[ColumnElement[Any], ...], limit: int
) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(t.c.id, *what, t.c.received_at, t.c.attempts, t.c.last_error, t.c.done_at)
        .where(t.c.state == DEAD)
        .order_by(t.c.id.desc())
        .limit(limit)
    )
    return [dict(r) for r in rows.mappings()]


def unresolved_removals(
    conn: Connection, limit: int = 100, ids: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """Removals and deactivations intake could not give a COR user id, newest first (with
    the change as received when `ids` are given: to send it again)."""
    e = events
    columns = [e.c.id, e.c.provider, e.c.source_event_id.label("event_id"), e.c.kind,
               e.c.occurred_at, e.c.received_at, e.c.user_id, e.c.user_login, e.c.group_id,
               e.c.group_name, e.c.detail]  # fmt: skip
    query = select(*columns, *([e.c.change] if ids is not None else [])).where(
        e.c.decision == UNRESOLVED, e.c.kind.in_(REMOVALS)
    )
    if ids is not None:
        query = query.where(e.c.id.in_(list(ids)))
    rows = conn.execute(query.order_by(e.c.id.desc()).limit(limit))
    return [dict(r) for r in rows.mappings()]


def mark_replayed(conn: Connection, event_id: int, detail: list[str], line: str) -> None:
    """An unresolved removal was sent again: its history says so, the list drops it."""
    conn.execute(
        update(events)
        .where(events.c.id == event_id, events.c.decision == UNRESOLVED)
        .values(decision=REPLAYED, detail=[*detail, line])
    )


def replay_key(event_id: str, now: datetime) -> str:
    """The event id a replayed change goes through intake under (the original is taken)."""
    return f"{event_id}~replay-{int(now.timestamp())}"
