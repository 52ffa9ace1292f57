"""What one page of a groups delta query says: members who joined or left, groups deleted.

A group object may come back on several pages, each with part of its `members@delta`; an
entry with `@removed` left the group, the others joined it (in a first round: are in it).
A group object that itself carries `@removed` was deleted (`reason` "changed": it can still
be restored; "deleted": for good); either way its members lose what it granted. Members
that are not users (nested groups, devices, service principals) are not expanded, as with
notifications.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from app.graph.client import DeltaPage
from app.graph.notifications import USER_TYPE
from app.http import unsafe_segment_reason

log = structlog.get_logger(__name__)

MAX_ID = 100


@dataclass(frozen=True)
class Entry:
    """One members@delta entry of one group."""

    group_id: str
    member_id: str
    removed: bool


def read_page(page: DeltaPage) -> tuple[list[Entry], list[str]]:
    """(member entries, ids of deleted groups) on this page, in Graph's order."""
    entries: list[Entry] = []
    deleted: list[str] = []
    for group in page.groups:
        group_id = _usable_id(group.get("id"))
        if group_id is None:
            log.warning("graph_delta_bad_group", reason="no usable group id")
            continue
        if "@removed" in group:
            deleted.append(group_id)
            continue
        for raw in group.get("members@delta") or []:
            entry = _entry(group_id, raw)
            if entry is not None:
                entries.append(entry)
    return entries, deleted


def _entry(group_id: str, raw: Any) -> Entry | None:
    if not isinstance(raw, dict):
        return None
    member_id = _usable_id(raw.get("id"))
    kind = raw.get("@odata.type")
    if member_id is None or (isinstance(kind, str) and kind.lower() != USER_TYPE):
        return None
    return Entry(group_id, member_id, "@removed" in raw)


def _usable_id(value: Any) -> str | None:
    # Object ids are GUIDs; anything that could steer a lookup (GET /users/..) is skipped.
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID:
        return None
    value = value.strip()
    return value if unsafe_segment_reason(value) is None else None
