"""SQL for the SCIM server: users, groups and who is in which group."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    delete,
    exc,
    func,
    insert,
    select,
    update,
)

from app.errors import InputError
from app.store.schema import scim_groups, scim_members, scim_users

USERS, GROUPS = "User", "Group"


class ConflictError(InputError):
    """A unique value (a userName) is already taken."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=409)


@dataclass(frozen=True)
class Row:
    """One stored SCIM resource: its JSON document and bookkeeping."""

    id: str
    data: dict[str, Any]
    created: datetime
    modified: datetime
    version: int
    active: bool = True


def _table(kind: str) -> Table:
    return scim_users if kind == USERS else scim_groups


def _keys(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """The indexed columns derived from a document."""
    if kind == USERS:
        return {
            "user_name_key": str(data.get("userName") or "").lower(),
            "external_id": data.get("externalId"),
            "active": data.get("active") is not False,
        }
    return {
        "display_name_key": str(data.get("displayName") or "").lower(),
        "external_id": data.get("externalId"),
    }


def _row(kind: str, r: Any) -> Row:
    return Row(
        id=r.id,
        data=dict(r.data),
        created=r.created,
        modified=r.modified,
        version=r.version,
        active=bool(r.active) if kind == USERS else True,
    )


def get_resource(
    conn: Connection, kind: str, resource_id: str, *, lock: bool = False
) -> Row | None:
    """One user or group, or None; `lock` holds it until the transaction ends (PostgreSQL)."""
    table = _table(kind)
    query = select(table).where(table.c.id == resource_id)
    if lock:
        query = query.with_for_update()
    found = conn.execute(query).first()
    return _row(kind, found) if found is not None else None


def get_resources(
    conn: Connection, kind: str, ids: Iterable[str], *, lock: bool = False
) -> dict[str, Row]:
    """Those of `ids` that exist, by id; `lock` as in get_resource (taken in id order)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    table = _table(kind)
    query = select(table).where(table.c.id.in_(wanted)).order_by(table.c.id)
    if lock:
        query = query.with_for_update()
    return {r.id: _row(kind, r) for r in conn.execute(query)}


def list_resources(
    conn: Connection,
    kind: str,
    *,
    column: str | None = None,
    values: tuple[str, ...] | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[Row]:
    """Users or groups, oldest first; only where the indexed `column` is one of `values`
    when given; the page from `offset` of at most `limit` rows when given."""
    table = _table(kind)
    query = select(table).order_by(table.c.created, table.c.id)
    if column is not None and values is not None:
        query = query.where(table.c[column].in_(list(values)))
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [_row(kind, r) for r in conn.execute(query)]


def count_resources(conn: Connection, kind: str) -> int:
    """How many users or groups there are."""
    return int(conn.execute(select(func.count()).select_from(_table(kind))).scalar_one())


def insert_resource(
    conn: Connection, kind: str, resource_id: str, data: dict[str, Any], now: datetime
) -> None:
    """Store a new user or group; ConflictError when its userName is taken."""
    statement = insert(_table(kind)).values(
        id=resource_id, data=data, created=now, modified=now, version=1, **_keys(kind, data)
    )
    _execute_unique(conn, statement, data)


def update_resource(
    conn: Connection,
    kind: str,
    resource_id: str,
    data: dict[str, Any],
    now: datetime,
    expected_version: int | None = None,
) -> bool:
    """Overwrite a document; False when it is gone or its version moved on."""
    table = _table(kind)
    statement = (
        update(table)
        .where(table.c.id == resource_id)
        .values(data=data, modified=now, version=table.c.version + 1, **_keys(kind, data))
    )
    if expected_version is not None:
        statement = statement.where(table.c.version == expected_version)
    return _execute_unique(conn, statement, data) == 1


def delete_resource(conn: Connection, kind: str, resource_id: str) -> None:
    """Remove a user or group with its memberships."""
    column = scim_members.c.user_id if kind == USERS else scim_members.c.group_id
    conn.execute(delete(scim_members).where(column == resource_id))
    table = _table(kind)
    conn.execute(delete(table).where(table.c.id == resource_id))


def _execute_unique(conn: Connection, statement: Any, data: dict[str, Any]) -> int:
    try:
        # A savepoint, so a unique violation leaves the request's transaction usable.
        with conn.begin_nested():
            return int(conn.execute(statement).rowcount)
    except exc.IntegrityError as error:
        raise ConflictError(f"userName {data.get('userName')!r} is already taken") from error


def members_of(conn: Connection, group_ids: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """Per group, its members as (user id, display name), in a stable order."""
    ids = list(group_ids)
    result: dict[str, list[tuple[str, str]]] = {g: [] for g in ids}
    if not ids:
        return result
    query = (
        select(scim_members.c.group_id, scim_users.c.id, scim_members.c.display, scim_users.c.data)
        .join(scim_users, scim_users.c.id == scim_members.c.user_id)
        .where(scim_members.c.group_id.in_(ids))
        .order_by(scim_members.c.group_id, scim_users.c.id)
    )
    for group_id, user_id, display, data in conn.execute(query):
        result[group_id].append((user_id, display or str(data.get("userName", ""))))
    return result


def user_group_ids(conn: Connection, user_id: str) -> set[str]:
    """The ids of the groups a user is in."""
    query = select(scim_members.c.group_id).where(scim_members.c.user_id == user_id)
    return set(conn.scalars(query))


def groups_of(conn: Connection, user_ids: Iterable[str]) -> dict[str, set[str]]:
    """Per user, the ids of the groups they are in (user_group_ids for many at once)."""
    wanted = sorted(set(user_ids))
    found: dict[str, set[str]] = {u: set() for u in wanted}
    if wanted:
        query = select(scim_members.c.user_id, scim_members.c.group_id).where(
            scim_members.c.user_id.in_(wanted)
        )
        for user_id, group_id in conn.execute(query):
            found[user_id].add(group_id)
    return found


def existing_user_ids(conn: Connection, ids: Iterable[str]) -> set[str]:
    """Those of `ids` that name a stored user."""
    wanted = list(ids)
    if not wanted:
        return set()
    return set(conn.scalars(select(scim_users.c.id).where(scim_users.c.id.in_(wanted))))


def set_group_members(
    conn: Connection, group_id: str, wanted: dict[str, str | None]
) -> tuple[set[str], set[str]]:
    """Make the group's members exactly `wanted` (user id -> display); returns (removed, added)."""
    current = {
        user_id: display
        for user_id, display in conn.execute(
            select(scim_members.c.user_id, scim_members.c.display).where(
                scim_members.c.group_id == group_id
            )
        )
    }
    removed, added = set(current) - set(wanted), set(wanted) - set(current)
    redisplayed = {
        user_id: wanted[user_id]
        for user_id in set(wanted) & set(current)
        if wanted[user_id] != current[user_id]
    }
    change_members(conn, group_id, removed, {u: wanted[u] for u in added}, redisplayed)
    return removed, added


def member_displays(
    conn: Connection, group_id: str, user_ids: Iterable[str]
) -> dict[str, str | None]:
    """Those of `user_ids` that are in the group, with the display stored for each."""
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    query = select(scim_members.c.user_id, scim_members.c.display).where(
        scim_members.c.group_id == group_id, scim_members.c.user_id.in_(wanted)
    )
    return {user_id: display for user_id, display in conn.execute(query)}


def change_members(
    conn: Connection,
    group_id: str,
    removed: Iterable[str],
    added: dict[str, str | None],
    redisplayed: dict[str, str | None],
) -> None:
    """Delete, insert and re-display some rows of one group (user id -> display)."""
    member = and_(scim_members.c.group_id == group_id)
    gone = sorted(set(removed))
    if gone:
        conn.execute(delete(scim_members).where(member, scim_members.c.user_id.in_(gone)))
    if added:
        conn.execute(
            insert(scim_members),
            [{"group_id": group_id, "user_id": u, "display": added[u]} for u in sorted(added)],
        )
    if redisplayed:
        conn.execute(
            update(scim_members)
            .where(member, scim_members.c.user_id == bindparam("member"))
            .values(display=bindparam("shown")),
            [{"member": u, "shown": redisplayed[u]} for u in sorted(redisplayed)],
        )


def touch_resource(
    conn: Connection, kind: str, resource_id: str, now: datetime, expected_version: int
) -> bool:
    """A new version of a resource whose document is unchanged; False when its version moved."""
    table = _table(kind)
    statement = (
        update(table)
        .where(table.c.id == resource_id, table.c.version == expected_version)
        .values(modified=now, version=table.c.version + 1)
    )
    return int(conn.execute(statement).rowcount) == 1
