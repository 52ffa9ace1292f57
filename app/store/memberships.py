"""The memberships the bridge has seen: who is in which group, as of when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, insert, select, update

from app.store.schema import memberships


@dataclass(frozen=True)
class Membership:
    """One (user, group) pair and whether the user is in it."""

    provider: str
    user_id: str
    group_id: str
    group_name: str | None
    member: bool
    changed_at: datetime
    user: dict[str, Any]


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


def get_membership(
    conn: Connection, provider: str, user_id: str, group_id: str
) -> Membership | None:
    """The pair as last seen, or None."""
    key = {"b_provider": provider, "b_user": user_id, "b_group": group_id}
    row = conn.execute(_GET, key).first()
    return _from_row(row) if row is not None else None


def put_membership(conn: Connection, m: Membership) -> None:
    """Insert or overwrite the pair."""
    values = {
        "group_name": m.group_name,
        "member": m.member,
        "changed_at": m.changed_at,
        "user": m.user,
    }
    key = {"b_provider": m.provider, "b_user": m.user_id, "b_group": m.group_id}
    done = conn.execute(_UPDATE, {**key, **values})
    if done.rowcount == 0:
        pair = {"provider": m.provider, "user_id": m.user_id, "group_id": m.group_id}
        conn.execute(_INSERT, {**pair, **values})


# Intake runs these for every change: built once, so each call only binds its values.
_PAIR = (
    memberships.c.provider == bindparam("b_provider"),
    memberships.c.user_id == bindparam("b_user"),
    memberships.c.group_id == bindparam("b_group"),
)
_GET = select(memberships).where(*_PAIR)
_UPDATE = update(memberships).where(*_PAIR)
_INSERT = insert(memberships)


def list_user_groups(conn: Connection, provider: str, user_id: str) -> list[Membership]:
    """The groups the user is currently in, as far as the bridge knows."""
    return _user_pairs(conn, provider, user_id, memberships.c.member.is_(True))


def list_left_at(conn: Connection, provider: str, user_id: str, at: datetime) -> list[Membership]:
    """The groups the user left at exactly `at` and has not rejoined or left again since."""
    left = (memberships.c.member.is_(False), memberships.c.changed_at == at)
    return _user_pairs(conn, provider, user_id, *left)


def _user_pairs(
    conn: Connection, provider: str, user_id: str, *where: ColumnElement[bool]
) -> list[Membership]:
    """The user's pairs that meet `where`, by group id."""
    mine = (memberships.c.provider == provider, memberships.c.user_id == user_id)
    query = select(memberships).where(*mine, *where).order_by(memberships.c.group_id)
    return [_from_row(r) for r in conn.execute(query)]
