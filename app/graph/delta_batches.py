"""The delta query's batches: which groups one query reads, where it stands, what a resync saw.

A batch is up to MAX_IDS mapped groups read by one delta query, stored as a cursor row in
`directory_state` named BATCH + a hash of its group ids: its link (the deltaLink, or the
nextLink a round stopped at), whether that link is still inside the first round (a baseline,
which detaches nothing), and whether it is inside a resync (a whole listing after an expired
token, which finds who left unseen).

A delta token does not live for ever (Graph: seven days for groups, then 400
`syncStateNotFound`; other resources answer 410). The batch then reads its groups whole again,
a resync: whoever the bridge knew in a group and the complete listing no longer shows left it
while the bridge was not told, and is queued as a removal like any delta removal. A resync cut
short (a restart, another replica) starts its listing again, as only a whole listing says who
is gone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import Connection

from app.errors import PermanentError
from app.graph.delta_pages import Entry
from app.graph.origins import RESYNC
from app.store import graph as graph_store
from app.store import memberships as membership_store
from app.store.graph import NewInboxEntry

log = structlog.get_logger(__name__)

BATCH = "graph_delta:"  # + a hash of the batch's group ids: one cursor per batch
# Graph takes at most 50 `id eq` expressions in one delta query's $filter.
MAX_IDS = 50
GONE = 410  # Graph: the delta token expired; start that batch again
EXPIRED_CODES = frozenset({"syncstatenotfound", "resyncrequired"})  # Graph's 400 for the same


@dataclass(frozen=True)
class Batch:
    """Up to MAX_IDS groups read by one delta query, and where that query stands."""

    name: str
    groups: tuple[str, ...]
    link: str | None = None  # the deltaLink, or the nextLink a round stopped at
    baseline: bool = True  # the link (if any) is still inside the first round
    resync: bool = False  # the link (if any) is inside a listing after an expired token

    def cursor(self, link: str, baseline: bool, resync: bool = False) -> str:
        """The stored form of this batch at `link`."""
        found = {"groups": list(self.groups), "link": link, "baseline": baseline}
        return json.dumps(found | ({"resync": True} if resync else {}))


def token_expired(exc: PermanentError) -> bool:
    """Graph says the delta (or next) link can no longer be followed: list the groups again."""
    return exc.status == GONE or (exc.status == 400 and (exc.code or "").lower() in EXPIRED_CODES)


def new_batches(group_ids: Sequence[str]) -> list[Batch]:
    """Groups no batch covers yet, MAX_IDS to a batch, each named by its groups."""
    found = []
    for start in range(0, len(group_ids), MAX_IDS):
        ids = tuple(sorted(group_ids[start : start + MAX_IDS]))
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        found.append(Batch(BATCH + digest, ids))
    return found


def parse_batch(name: str, cursor: str | None) -> Batch | None:
    """A stored batch, or None when its row holds nothing usable."""
    try:
        raw = json.loads(cursor or "")
        groups = tuple(str(g) for g in raw["groups"])
    except (ValueError, KeyError, TypeError):
        return None
    link = raw.get("link")
    baseline, resync = bool(raw.get("baseline", True)), bool(raw.get("resync", False))
    return Batch(name, groups, str(link) if link else None, baseline, resync)


class Listing:
    """Who a resync's complete listing showed in each group of its batch."""

    def __init__(self, groups: Sequence[str]) -> None:
        self.seen: dict[str, set[str]] = {g: set() for g in groups}
        self.deleted: set[str] = set()

    def add(self, entries: Sequence[Entry], deleted: Sequence[str]) -> None:
        """One page's members (and groups that came back deleted)."""
        for entry in entries:
            members = self.seen.setdefault(entry.group_id, set())
            if entry.removed:
                members.discard(entry.member_id)
            else:
                members.add(entry.member_id)
        self.deleted.update(deleted)

    def queue_missing(self, conn: Connection, at: datetime, now: datetime) -> int:
        """Queue a removal of each member the bridge knew whom the whole listing left out."""
        queued = 0
        for group_id, missing in self.missing(conn).items():
            for user_id in missing:
                key = entry_key(RESYNC, at, group_id, user_id, "removed")
                entry = NewInboxEntry(key, RESYNC, group_id, user_id, True, at)
                queued += graph_store.add_inbox_entry(conn, entry, now) is not None
            log.warning("graph_delta_resync_missing", group_id=group_id, members=len(missing))
        return queued

    def missing(self, conn: Connection) -> dict[str, list[str]]:
        """Per group, the members the bridge knows whom the listing did not show; a group
        that came back deleted is left out (its members were queued as such)."""
        found = {}
        for group_id, seen in self.seen.items():
            if group_id in self.deleted:
                continue
            known = membership_store.members_of_group(conn, "entra", group_id)
            gone = [m.user_id for m in known if m.user_id not in seen]
            if gone:
                found[group_id] = gone
        return found


def entry_key(origin: str, at: datetime, group_id: str, member_id: str, what: str) -> str:
    key = f"{origin}:{at.isoformat(timespec='seconds')}:{group_id}:{member_id}:{what}"
    return key if len(key) <= 200 else f"{origin}:" + hashlib.sha256(key.encode()).hexdigest()
