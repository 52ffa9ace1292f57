"""Delta catch-up: what Graph's notifications did not deliver, read from Graph's own state.

Every GRAPH_DELTA_SECONDS one replica (a lease in `directory_state`) runs a delta query over
the mapped Entra groups, at most MAX_IDS groups a query, and follows `@odata.nextLink` to the
end. Each batch of groups keeps its own cursor (its deltaLink, or the nextLink it stopped
at), saved in the transaction that stores what the page led to: after a restart or a
failed page the batch resumes where it was. A batch's first round (its baseline) records
who is in each group and detaches nothing; later rounds put each removal and join into the
Graph inbox, so they take the path a notification's entry takes (transitiveMemberOf before a
removal), and a group that comes back `@removed` sends off each member the bridge knew in it.
A group the mapping adds later gets its own batch and baseline; an expired token, a resync.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import datetime, timedelta

import anyio
import structlog
from sqlalchemy import Connection

from app import metrics
from app.changes import GroupRef, IgnoredEvent
from app.errors import BridgeError, PermanentError
from app.graph.client import DeltaPage, GraphClient
from app.graph.delta_batches import (
    BATCH,
    Batch,
    Listing,
    entry_key,
    new_batches,
    parse_batch,
    token_expired,
)
from app.graph.delta_pages import Entry, read_page
from app.graph.origins import BASELINE, DELTA, GROUP_DELETED
from app.rounds import Rounds, is_due, utcnow
from app.runtime import Bridge
from app.store import cursors
from app.store import graph as graph_store
from app.store import memberships as membership_store
from app.store.graph import NewInboxEntry

log = structlog.get_logger(__name__)

NAME = "graph_delta"  # the lease, the last round and its errors
MAX_PAGES_A_ROUND = 500
SKEW = timedelta(seconds=60)
LEASE = timedelta(seconds=120)  # renewed by every page


class LostTurnError(BridgeError):
    """Another replica runs the delta query now; this one stops its round."""


class DeltaPoller:
    """Runs the delta query over the mapped Entra groups every `interval` seconds."""

    def __init__(
        self,
        bridge: Bridge,
        client: GraphClient,
        *,
        interval: float,
        on_queued: Callable[[], None] = lambda: None,
        write_turn: Callable[[], AbstractAsyncContextManager[object]] = nullcontext,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bridge = bridge
        self.client = client
        self.holder = "graph-delta-" + uuid.uuid4().hex[:12]
        self._interval = interval
        self._on_queued = on_queued
        self._turn = write_turn
        self._clock = clock
        self._first = True
        self.rounds = Rounds("graph_delta")

    async def run(self) -> None:
        """A round whenever one is due, until cancelled; never fatal."""
        log.info("graph_delta_started", holder=self.holder, every_seconds=self._interval)
        await self.rounds.loop(self._round, after_error=min(self._interval, 60.0))

    async def _round(self) -> float:
        state = await anyio.to_thread.run_sync(self._read, NAME)
        if is_due(state.last_success_at if state else None, self._interval, self._clock()):
            await self.run_once()
        return min(self._interval, 60.0)

    async def run_once(self) -> dict[str, int]:
        """One round over every batch; counts of what it read (empty: another replica's turn)."""
        started = self._clock()
        if await anyio.to_thread.run_sync(self._take_turn, started, LEASE) is None:
            return {}
        try:
            return await self._round_held(started)
        except BaseException:
            # Stopped mid-round (shutdown, a bug): give the turn back now, not when it lapses,
            # so the next process (or replica) does not wait out LEASE. The cursors are saved.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._release)
            raise

    async def _round_held(self, started: datetime) -> dict[str, int]:
        counts = {"groups": 0, "entries": 0, "errors": 0}
        errors: list[str] = []
        try:
            batches = await self._plan()
        except BridgeError as exc:
            batches, errors = [], [f"listing the mapped groups: {exc}"]
        for batch in batches:
            try:
                counts["entries"] += await self._run_batch(batch, started, LEASE)
                counts["groups"] += len(batch.groups)
            except LostTurnError:
                return counts
            except BridgeError as exc:
                log.warning("graph_delta_failed", batch=batch.name, error=str(exc))
                errors.append(str(exc))
        counts["errors"] = len(errors)
        await anyio.to_thread.run_sync(self._finish, "; ".join(errors) or None)
        log.info("graph_delta_round", **counts)
        return counts

    async def _plan(self) -> list[Batch]:
        """The stored batches still in use, and new ones for groups none covers."""
        mapped = await self.mapped_groups()
        stored = await anyio.to_thread.run_sync(self._stored)
        keep = [b for b in stored if set(b.groups) & set(mapped)]
        dropped = [b.name for b in stored if b not in keep]
        if dropped:
            await anyio.to_thread.run_sync(self._forget, dropped)
        covered = {g for b in keep for g in b.groups}
        return keep + new_batches([g for g in mapped if g not in covered])

    async def mapped_groups(self) -> list[str]:
        """The ids of the Entra groups the mapping names (rules by name looked up)."""
        found: dict[str, None] = {}
        for rule in self.bridge.mapping.rules:
            if rule.provider != "entra":
                continue
            if rule.group_id is not None:
                found[rule.group_id] = None
            elif rule.group_name is not None:
                found.update((g.id, None) for g in await self.client.find_groups(rule.group_name))
        return list(found)

    async def _run_batch(self, batch: Batch, started: datetime, lease: timedelta) -> int:
        await anyio.to_thread.run_sync(self._hold_batch, batch.name, started, lease)
        link, baseline, resync = batch.link, batch.baseline or batch.link is None, batch.resync
        if resync:
            link = None  # a resync cut short: its listing so far is not in memory, read it again
        listing = Listing(batch.groups) if resync else None
        read = 0
        for _ in range(MAX_PAGES_A_ROUND):
            try:
                page = await self.client.group_delta(link, batch.groups)
            except PermanentError as exc:
                if link is None or not token_expired(exc):
                    raise
                # The token expired: read the groups whole again. After a finished round that
                # is a resync, which also finds who left while nobody told the bridge.
                resync = resync or not baseline
                log.warning("graph_delta_token_expired", batch=batch.name, resync=resync)
                link, baseline = None, True
                listing = Listing(batch.groups) if resync else None
                continue
            read += await self._store_page(batch, page, baseline, started, listing)
            if page.next_url is None:
                break
            link = page.next_url
        else:
            log.warning("graph_delta_page_limit", batch=batch.name, pages=MAX_PAGES_A_ROUND)
        metrics.POLLED_EVENTS.labels(NAME).inc(read)
        return read

    async def _store_page(
        self,
        batch: Batch,
        page: DeltaPage,
        baseline: bool,
        started: datetime,
        listing: Listing | None = None,
    ) -> int:
        entries, deleted = read_page(page)
        done = page.next_url is None
        link = page.next_url or page.delta_url or ""
        cursor = batch.cursor(link, baseline and not done, listing is not None and not done)
        if listing is not None:
            listing.add(entries, deleted)
        # A baseline's sightings are dated a little early: a removal notified just before,
        # by Graph's clock, is then not taken as older than what the listing showed.
        at = started - SKEW if baseline else started

        def work(conn: Connection) -> tuple[int, list[IgnoredEvent]]:
            now = self._clock()
            # Each page renews the round's lease: a long first round keeps its turn, and a
            # replica that died holding it is replaced within LEASE.
            kept = cursors.take_turn(conn, NAME, self.holder, now, LEASE) is not None
            if not kept or not cursors.save_cursor(conn, batch.name, self.holder, cursor, now):
                raise LostTurnError("another replica took over the Graph delta query")
            news = _not_known(conn, entries) if baseline else entries
            queued = sum(self._queue(conn, e, baseline, at) for e in news)
            recorded = [self._group_deleted(conn, group_id, at) for group_id in deleted]
            queued += sum(n for n, _ in recorded)
            if listing is not None and done:
                queued += listing.queue_missing(conn, at, self._clock())
            return queued, [event for _, event in recorded]  # history: each deleted group

        async with self._turn():
            queued, _ = await self.bridge.transact(work, weight=max(len(entries), 1))
        if queued:
            self._on_queued()
        return len(entries) + len(deleted)

    def _queue(self, conn: Connection, entry: Entry, baseline: bool, at: datetime) -> bool:
        origin = BASELINE if baseline else DELTA
        direction = "removed" if entry.removed else "added"
        key = entry_key(origin, at, entry.group_id, entry.member_id, direction)
        new = NewInboxEntry(key, origin, entry.group_id, entry.member_id, entry.removed, at)
        return graph_store.add_inbox_entry(conn, new, self._clock()) is not None

    def _group_deleted(
        self, conn: Connection, group_id: str, at: datetime
    ) -> tuple[int, IgnoredEvent]:
        """Queue a removal of each member the bridge knew in a group Graph says is deleted."""
        known = membership_store.members_of_group(conn, "entra", group_id)
        queued = 0
        for m in known:
            key = entry_key(GROUP_DELETED, at, group_id, m.user_id, "removed")
            entry = NewInboxEntry(key, GROUP_DELETED, group_id, m.user_id, True, at)
            queued += graph_store.add_inbox_entry(conn, entry, self._clock()) is not None
        log.warning("graph_group_deleted", group_id=group_id, known_members=len(known), path=NAME)
        return queued, IgnoredEvent(
            provider="entra",
            event_id=entry_key(GROUP_DELETED, at, group_id, "", "group"),
            occurred_at=at,
            kind="graph.group_deleted",
            reason=f"group {group_id} was deleted (delta): its {len(known)} known members leave it",
            group=GroupRef(
                id=group_id, name=membership_store.known_group_name(conn, "entra", group_id)
            ),
        )

    def _take_turn(self, now: datetime, lease: timedelta) -> cursors.PollerState | None:
        # SQLite serves one process: a turn still held is this process's before a restart.
        first = self._first and self.bridge.db.dialect == "sqlite"
        self._first = False
        with self.bridge.db.begin() as conn:
            return cursors.take_turn(conn, NAME, self.holder, now, lease, force=first)

    def _hold_batch(self, name: str, now: datetime, lease: timedelta) -> None:
        # The round's turn (NAME) is this replica's: its batches are too.
        with self.bridge.db.begin() as conn:
            cursors.take_turn(conn, name, self.holder, now, lease, force=True)

    def _stored(self) -> list[Batch]:
        with self.bridge.db.read() as conn:
            states = [cursors.read(conn, n) for n in cursors.names_like(conn, BATCH)]
        found = [parse_batch(s.name, s.cursor) for s in states if s is not None]
        return [b for b in found if b is not None]

    def _forget(self, names: list[str]) -> None:
        with self.bridge.db.begin() as conn:
            for name in names:
                cursors.forget(conn, name)

    def _read(self, name: str) -> cursors.PollerState | None:
        with self.bridge.db.read() as conn:
            return cursors.read(conn, name)

    def _release(self) -> None:
        with self.bridge.db.begin() as conn:
            cursors.release(conn, NAME, self.holder)

    def _finish(self, error: str | None) -> None:
        with self.bridge.db.begin() as conn:
            if error is None:
                cursors.record_success(conn, NAME, self._clock())
            else:
                cursors.record_error(conn, NAME, error, self._clock())
            cursors.release(conn, NAME, self.holder)


def _not_known(conn: Connection, entries: list[Entry]) -> list[Entry]:
    """A listing's entries less the members the bridge already knows in that group: a resync
    (or a group first read after SCIM or notifications told of it) asks Graph nothing for them."""
    joins = {e.member_id for e in entries if not e.removed}
    found = membership_store.memberships_of(conn, "entra", joins) if joins else []
    known = {(m.group_id, m.user_id) for m in found if m.member}
    return [e for e in entries if e.removed or (e.group_id, e.member_id) not in known]
