"""The event log: dedupe by source event id, and what intake decided for each event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, or_, select, update

from app.store.db import insert_ignoring_conflicts
from app.store.schema import events


@dataclass(frozen=True)
class NewEvent:
    """An event about to be recorded."""

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


def record_event(conn: Connection, new: NewEvent) -> int | None:
    """Insert the event; None when this (provider, source event id) was seen before.

    The caller holds intake's turn (`accept_changes` takes it).
    """
    row = conn.execute(
        _insert_event(conn),
        {
            "provider": new.provider,
            "source_event_id": new.source_event_id,
            "kind": new.kind,
            "occurred_at": new.occurred_at,
            "received_at": new.received_at,
            "user_id": new.user_id,
            "user_login": new.user_login,
            "group_id": new.group_id,
            "group_name": new.group_name,
            "change": new.change,
            "decision": "received",
            "detail": [],
        },
    ).first()
    return None if row is None else int(row[0])


def set_decision(
    conn: Connection,
    event_id: int,
    decision: str,
    detail: list[str],
    cor_user_id: str | None = None,
) -> None:
    """Record what intake decided for an event, and why."""
    conn.execute(
        _SET_DECISION,
        {"b_id": event_id, "decision": decision, "detail": detail, "cor_user_id": cor_user_id},
    )


_INSERTS: dict[str, Any] = {}


def _insert_event(conn: Connection) -> Any:
    """The INSERT of a new event for this engine, built once (intake runs it for every event)."""
    name = conn.dialect.name
    if name not in _INSERTS:
        _INSERTS[name] = (
            insert_ignoring_conflicts(conn, events)
            .on_conflict_do_nothing(index_elements=["provider", "source_event_id"])
            .returning(events.c.id)
        )
    return _INSERTS[name]


# Built once: intake sets a decision for every event.
_SET_DECISION = update(events).where(events.c.id == bindparam("b_id"))


def event_time(conn: Connection, event_id: int) -> datetime | None:
    """When the source says an event happened (by our row id)."""
    found = conn.execute(select(events.c.occurred_at).where(events.c.id == event_id)).scalar()
    return found if isinstance(found, datetime) else None


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
