"""The event log: dedupe by source event id, and what intake decided for each event."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, or_, select, update

from app.store.bulk import insert_rows
from app.store.db import chunked
from app.store.schema import events


@dataclass(frozen=True)
class NewEvent:
    """An event about to be recorded, with what intake decided for it."""

    provider: str
    source_event_id: str
    kind: str
    occurred_at: datetime
    received_at: datetime
    user_id: str | None = None
    user_login: str | None = None
    group_id: str | None = None
    group_name: str | None = None
    change: dict[str, Any] | None = None
    decision: str = "received"
    detail: list[str] = field(default_factory=list)
    cor_user_id: str | None = None


def seen_events(conn: Connection, provider: str, source_event_ids: Collection[str]) -> set[str]:
    """Of these source event ids of `provider`, the ones already recorded."""
    seen: set[str] = set()
    for chunk in chunked(sorted(source_event_ids)):
        query = select(events.c.source_event_id).where(
            events.c.provider == provider, events.c.source_event_id.in_(chunk)
        )
        seen.update(str(r[0]) for r in conn.execute(query))
    return seen


def record_events(conn: Connection, rows: Sequence[NewEvent]) -> list[int]:
    """Insert the events in one statement (from arrays: app/store/bulk.py); their row ids,
    in order.

    The caller holds intake's turn and asked `seen_events` first: an event recorded meanwhile
    (something wrote events outside intake) fails the transaction on the unique key.
    """
    if not rows:
        return []
    found = insert_rows(conn, events, _EVENT_COLUMNS, [_event_values(new) for new in rows],
                        returning=("id", "provider", "source_event_id"))  # fmt: skip
    ids = {(str(provider), str(source_id)): int(i) for i, provider, source_id in found}
    return [ids[(new.provider, new.source_event_id)] for new in rows]


_EVENT_COLUMNS = tuple(f.name for f in fields(NewEvent))


def _event_values(new: NewEvent) -> tuple[Any, ...]:
    return tuple(getattr(new, name) for name in _EVENT_COLUMNS)


def set_details(conn: Connection, details: Mapping[int, list[str]]) -> None:
    """Overwrite the detail of these events (by row id): the ids of jobs written after them."""
    if details:
        conn.execute(_SET_DETAIL, [{"b_id": i, "detail": d} for i, d in details.items()])


_SET_DETAIL = update(events).where(events.c.id == bindparam("b_id"))


def last_time_of(
    conn: Connection, provider: str, user_id: str, kind: str, until: datetime
) -> datetime | None:
    """When the latest event of `kind` about this IdP user happened, up to `until`."""
    found = conn.execute(
        select(func.max(events.c.occurred_at)).where(
            events.c.provider == provider,
            events.c.user_id == user_id,
            events.c.kind == kind,
            events.c.occurred_at <= until,
        )
    ).scalar()
    return found if isinstance(found, datetime) else None


def idp_user_ids(conn: Connection, provider: str, cor_user_id: str) -> list[str]:
    """The IdP user ids of `provider` whose events resolved to this COR user."""
    rows = conn.execute(
        select(events.c.user_id)
        .where(
            events.c.provider == provider,
            events.c.cor_user_id == cor_user_id,
            events.c.user_id.is_not(None),
        )
        .distinct()
        .order_by(events.c.user_id)
    )
    return [str(r[0]) for r in rows]


def list_user_events(conn: Connection, user: str, limit: int = 500) -> list[dict[str, Any]]:
    """The latest `limit` events about a user (by IdP id, login or COR id), oldest first."""
    rows = conn.execute(
        select(events)
        .where(
            or_(
                events.c.user_id == user,
                events.c.user_login == user,
                events.c.cor_user_id == user,
            )
        )
        .order_by(events.c.occurred_at.desc(), events.c.id.desc())
        .limit(limit)
    ).mappings()
    return [dict(r) for r in reversed(list(rows))]


def count_events(conn: Connection) -> dict[str, int]:
    """Events by decision."""
    rows = conn.execute(select(events.c.decision, func.count()).group_by(events.c.decision))
    return {str(d): int(n) for d, n in rows}
