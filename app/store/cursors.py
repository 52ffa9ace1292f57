"""The directory pollers' state: a cursor per poller, one holder across replicas, errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, literal, or_, select, update

from app.store.db import insert_ignoring_conflicts
from app.store.schema import directory_state


@dataclass(frozen=True)
class PollerState:
    """What a poller last did."""

    name: str
    cursor: str | None
    holder: str | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    updated_at: datetime | None


def take_turn(
    conn: Connection,
    name: str,
    holder: str,
    now: datetime,
    lease: timedelta,
    *,
    force: bool = False,
) -> PollerState | None:
    """This poller's state if `holder` may poll now (no other replica holds a live lease,
    or `force`: the caller knows no other can)."""
    _ensure(conn, name)
    taken = conn.execute(
        update(directory_state)
        .where(
            directory_state.c.name == name,
            or_(
                literal(force),
                directory_state.c.holder.is_(None),
                directory_state.c.holder == holder,
                directory_state.c.lease_until.is_(None),
                directory_state.c.lease_until < now,
            ),
        )
        .values(holder=holder, lease_until=now + lease)
    )
    return read(conn, name) if taken.rowcount == 1 else None


def save_cursor(
    conn: Connection,
    name: str,
    holder: str,
    cursor: str,
    now: datetime,
    lease: timedelta | None = None,
) -> bool:
    """Move the cursor on (only while `holder` still has the turn), renewing the lease."""
    values: dict[str, object] = {"cursor": cursor, "last_success_at": now, "updated_at": now}
    if lease is not None:
        values["lease_until"] = now + lease
    done = conn.execute(
        update(directory_state)
        .where(directory_state.c.name == name, directory_state.c.holder == holder)
        .values(**values)
    )
    return done.rowcount == 1


def record_success(conn: Connection, name: str, now: datetime) -> None:
    """A round finished without error."""
    conn.execute(
        update(directory_state)
        .where(directory_state.c.name == name)
        .values(last_success_at=now, updated_at=now)
    )


def record_error(conn: Connection, name: str, error: str, now: datetime) -> None:
    """Keep what went wrong last, for /readyz and /metrics."""
    _ensure(conn, name)
    conn.execute(
        update(directory_state)
        .where(directory_state.c.name == name)
        .values(last_error=error[:1000], last_error_at=now, updated_at=now)
    )


def set_cursor(conn: Connection, name: str, cursor: str | None, now: datetime) -> None:
    """An operator's reset: start from `cursor` (None: from now) at the next round.

    The turn is taken back too, so a round under way cannot save its own cursor over this
    one (its next save finds it has no turn, and its page is not kept).
    """
    _ensure(conn, name)
    conn.execute(
        update(directory_state)
        .where(directory_state.c.name == name)
        .values(cursor=cursor, updated_at=now, holder=None, lease_until=None)
    )


def _ensure(conn: Connection, name: str) -> None:
    """The poller's row exists (made empty the first time)."""
    conn.execute(
        insert_ignoring_conflicts(conn, directory_state)
        .values(name=name)
        .on_conflict_do_nothing(index_elements=["name"])
    )


def read(conn: Connection, name: str) -> PollerState | None:
    """One poller's state, or None before its first round."""
    row = conn.execute(select(directory_state).where(directory_state.c.name == name)).first()
    if row is None:
        return None
    return PollerState(
        name=row.name,
        cursor=row.cursor,
        holder=row.holder,
        last_success_at=row.last_success_at,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        updated_at=row.updated_at,
    )


def release(conn: Connection, name: str, holder: str) -> None:
    """Give the turn back (a round finished), so another replica may take the next one."""
    conn.execute(
        update(directory_state)
        .where(directory_state.c.name == name, directory_state.c.holder == holder)
        .values(holder=None, lease_until=None)
    )


def names_like(conn: Connection, prefix: str) -> list[str]:
    """The pollers whose name starts with `prefix` (one per batch of a batched poller)."""
    which = directory_state.c.name.startswith(prefix, autoescape=True)
    query = select(directory_state.c.name).where(which)
    return sorted(str(r[0]) for r in conn.execute(query))


def forget(conn: Connection, name: str) -> None:
    """Drop a poller's state (a batch whose groups are no longer mapped)."""
    conn.execute(delete(directory_state).where(directory_state.c.name == name))
