"""The memberships the bridge has seen: who is in which group, as of when."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, select

# Membership, what intake plans with, lives with the plan (app/intake_plan.py); re-exported.
from app.intake_plan import Membership as Membership
from app.store.bulk import insert_rows
from app.store.db import chunked
from app.store.schema import memberships


def _from_row(row: Any) -> Membership:
    return Membership(
        provider=row.provider,
        user_id=row.user_id,
        group_id=row.group_id,
        group_name=row.group_name,
        member=bool(row.member),
        changed_at=row.changed_at,
        user=dict(row.user or {}),
    )


def memberships_of(conn: Connection, provider: str, user_ids: Collection[str]) -> list[Membership]:
    """Every pair of these users, in a group or not."""
    found: list[Membership] = []
    for chunk in chunked(sorted(user_ids)):
        query = select(memberships).where(
            memberships.c.provider == provider, memberships.c.user_id.in_(chunk)
        )
        found += [_from_row(r) for r in conn.execute(query)]
    return found


def put_memberships(conn: Connection, pairs: Collection[Membership]) -> None:
    """Insert or overwrite these pairs (each at most once), in one statement (from arrays)."""
    if not pairs:
        return
    rows = [(m.provider, m.user_id, m.group_id, m.group_name, m.member, m.changed_at, m.user)
            for m in pairs]  # fmt: skip
    insert_rows(conn, memberships, _COLUMNS, rows, conflict=_OVERWRITE)


_COLUMNS = ("provider", "user_id", "group_id", "group_name", "member", "changed_at", "user")
_OVERWRITE = (
    "ON CONFLICT (provider, user_id, group_id) DO UPDATE SET group_name = excluded.group_name, "
    'member = excluded.member, changed_at = excluded.changed_at, "user" = excluded."user"'
)


def list_user_groups(conn: Connection, provider: str, user_id: str) -> list[Membership]:
    """The groups the user is currently in, as far as the bridge knows, by group id."""
    return _current(conn, provider, memberships.c.user_id == user_id, memberships.c.group_id)


def members_of_group(conn: Connection, provider: str, group_id: str) -> list[Membership]:
    """Everyone the bridge believes is in this group now."""
    return _current(conn, provider, memberships.c.group_id == group_id, memberships.c.user_id)


def _current(conn: Connection, provider: str, which: Any, order: Any) -> list[Membership]:
    query = (
        select(memberships)
        .where(memberships.c.provider == provider, which, memberships.c.member.is_(True))
        .order_by(order)
    )
    return [_from_row(r) for r in conn.execute(query)]


def known_group_name(conn: Connection, provider: str, group_id: str) -> str | None:
    """The latest name the bridge saw this group under (a deleted group has none left)."""
    row = conn.execute(
        select(memberships.c.group_name)
        .where(
            memberships.c.provider == provider,
            memberships.c.group_id == group_id,
            memberships.c.group_name.is_not(None),
        )
        .order_by(memberships.c.changed_at.desc())
        .limit(1)
    ).first()
    return str(row[0]) if row is not None else None
