"""What every work table of the bridge shares: claim due rows under a lease, settle them,
or try them again later. The Graph inbox and the held changes are such tables: each has
`id`, `state`, `attempts`, `next_attempt_at`, `lease_until`, `claimed_by`, `last_error`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, Table, and_, or_, select, update

PENDING = "pending"


@dataclass(frozen=True)
class Retry:
    """Try again at `at`."""

    at: datetime


@dataclass(frozen=True)
class Dead:
    """Stop: a dead letter that says why. `gave_up`: the error may pass, but the attempts or
    the age limit ran out."""

    reason: str
    gave_up: bool = False


@dataclass(frozen=True)
class Split:
    """A call that carried several refused them: try each alone, now."""


Decision = Retry | Dead | Split


def claim(
    conn: Connection, table: Table, *, now: datetime, limit: int, worker_id: str, lease: timedelta
) -> list[Row[Any]]:
    """Take up to `limit` due pending rows (and those whose claim lapsed), oldest first."""
    due = and_(
        table.c.state == PENDING,
        table.c.next_attempt_at <= now,
        or_(table.c.lease_until.is_(None), table.c.lease_until < now),
    )
    rows = list(
        conn.execute(
            select(table)
            .where(due)
            .order_by(table.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if rows:
        conn.execute(
            update(table)
            .where(table.c.id.in_([r.id for r in rows]))
            .values(lease_until=now + lease, claimed_by=worker_id)
        )
    return rows


def settle(
    conn: Connection, table: Table, ids: Sequence[int], worker_id: str, **values: Any
) -> set[int]:
    """Set `values` on the claimed rows this worker still holds; returns their ids."""
    if not ids:
        return set()
    rows = conn.execute(
        update(table)
        .where(table.c.id.in_(list(ids)), table.c.state == PENDING, table.c.claimed_by == worker_id)
        .values(lease_until=None, **values)
        .returning(table.c.id)
    )
    return {int(r[0]) for r in rows}


def defer(
    conn: Connection, table: Table, row_id: int, worker_id: str, at: datetime, error: str
) -> None:
    """This try failed: the row is due again at `at`, with the error kept."""
    conn.execute(
        update(table)
        .where(table.c.id == row_id, table.c.claimed_by == worker_id)
        .values(
            attempts=table.c.attempts + 1,
            next_attempt_at=at,
            lease_until=None,
            last_error=error[:1000],
        )
    )
