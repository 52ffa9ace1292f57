"""The inbox resolver: stored Graph entries -> MembershipChanges, handed to intake.

Claims due inbox rows, asks Graph what the mapping needs (a group's name, a user's login or
mail, the user's current groups for the still-granted rule) and runs intake on the results
in one transaction that also marks the rows done. A lookup that fails for a reason that may
pass (429, 5xx, network) leaves its row pending with backoff (BRIDGE_RETRY_*); one Graph
refuses for good (a missing permission, say), one past BRIDGE_MAX_AGE_SECONDS, or one a bug
in the bridge stopped is a dead letter: in the member's history, the admin dead letters,
and replayable once fixed (app/dead_letters.py). A user Graph no longer knows is looked up
in what the bridge saw of them before, and otherwise recorded as ignored with the reason.
Without Graph credentials nothing is looked up.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import anyio
import structlog
from sqlalchemy import Connection

from app.changes import ChangeKind, GroupRef, IgnoredEvent, MembershipChange, UserRef
from app.drain import Drained, Drainer, bug, utcnow
from app.drain.retry import DEFAULT_RETRY, RetryPolicy
from app.errors import DeliveryError
from app.graph.config import Needs, mapping_needs
from app.graph.directory import Directory
from app.graph.origins import origin_note
from app.http import NotFoundError
from app.runtime import Bridge
from app.store import graph as graph_store
from app.store import memberships as membership_store
from app.store.graph import InboxRow
from app.store.queue import Dead, Retry, hours_waited, letter_event_id

log = structlog.get_logger(__name__)

USER_FIELDS = frozenset(UserRef.model_fields)


@dataclass(frozen=True)
class Unknown:
    """A user Graph does not know (any more): settled from what the bridge saw of them."""

    row: InboxRow
    group: GroupRef
    fields: frozenset[str]

    def settle(self, conn: Connection) -> MembershipChange | IgnoredEvent:
        """A deleted user is exactly who must lose access: use what earlier changes said."""
        row = self.row
        known = graph_store.last_known_user(conn, "entra", row.member_id) or {}
        user = UserRef.model_validate(
            {"id": row.member_id, **{k: v for k, v in known.items() if k in USER_FIELDS}}
        )
        if self.fields <= user.fields().keys():
            kind = ChangeKind.removed if row.removed else ChangeKind.added
            return MembershipChange(
                provider="entra",
                event_id=row.dedupe_key,
                occurred_at=row.occurred_at,
                change=kind,
                user=user,
                group=self.group,
                member_of=() if row.removed else None,  # a deleted user is in no group
                note=origin_note(row.subscription_id, row.group_id, row.removed),
            )
        fields = ", ".join(f"{{{f}}}" for f in sorted(self.fields))
        action = "detach them by hand" if row.removed else "the join is not recorded"
        return IgnoredEvent(
            provider="entra",
            event_id=row.dedupe_key,
            occurred_at=row.occurred_at,
            kind="graph.removed" if row.removed else "graph.added",
            reason=(
                f"user {row.member_id} is not in Graph (deleted?) and the bridge never saw them "
                f"with {fields}, which the entra user_id template needs: {action}"
            ),
            user=UserRef(id=row.member_id),
            group=self.group,
        )


@dataclass(frozen=True)
class Resolved:
    """An inbox row turned into what intake takes."""

    row: InboxRow
    item: MembershipChange | Unknown


@dataclass(frozen=True)
class Deferred:
    """An inbox row whose lookups failed this time."""

    row: InboxRow
    error: DeliveryError


class Resolver(Drained):
    """Drains the Graph inbox until cancelled; one per process (a Drainer, app/drain/)."""

    def __init__(
        self,
        bridge: Bridge,
        directory: Directory | None,
        *,
        poll_seconds: float = 1.0,
        # Small batches keep each intake transaction short: on SQLite the webhook's
        # acknowledgement waits for the write lock behind it.
        batch: int = 20,
        concurrency: int = 8,
        lease: timedelta = timedelta(seconds=15),
        max_age: timedelta = timedelta(days=3),
        retry: RetryPolicy = DEFAULT_RETRY,
        clock: Callable[[], datetime] = utcnow,
        write_turn: Callable[[], AbstractAsyncContextManager[object]] = nullcontext,
    ) -> None:
        self.bridge = bridge
        self._turn = write_turn
        self.directory = directory
        self.worker_id = "graph-" + uuid.uuid4().hex[:12]
        # The delivery's backoff and age limit (then a dead letter); a lookup has no attempt
        # limit of its own.
        self._retry = replace(retry, max_age=max_age, max_attempts=2**31)
        self._clock = clock
        self.drainer = Drainer(
            "graph_resolver", bridge.db, self.worker_id,
            claim=graph_store.claim_inbox, extend=graph_store.INBOX.extend, id_of=lambda r: r.id,
            work=self._work, batch=batch, concurrency=concurrency, poll_seconds=poll_seconds,
            lease=lease, clock=clock, turn=write_turn,
        )  # fmt: skip

    async def run(self) -> None:
        """Resolve until cancelled; a failing round is logged and retried, never fatal."""
        log.info("graph_resolver_started", worker_id=self.worker_id, lookups=bool(self.directory))
        await self.drainer.run()

    async def _work(self, rows: list[InboxRow]) -> None:
        needs = mapping_needs(self.bridge.mapping)
        outcomes = await self.drainer.each(rows, lambda row: self._attempt(row, needs))
        resolved = [o for o in outcomes if isinstance(o, Resolved)]
        failed = [o for o in outcomes if isinstance(o, Deferred)]
        async with self._turn():
            if resolved:
                await self.bridge.transact(lambda conn: self._finish(conn, resolved))
            if failed:
                await self.bridge.transact(lambda conn: self._fail(conn, failed))

    def _finish(
        self, conn: Connection, resolved: list[Resolved]
    ) -> tuple[None, list[MembershipChange | IgnoredEvent]]:
        ids = [r.row.id for r in resolved]
        held = graph_store.INBOX.finish(conn, ids, self.worker_id, self._clock())
        # A row whose claim lapsed and was taken by another replica is theirs to hand in.
        items = [r.item for r in resolved if r.row.id in held]
        return None, [i.settle(conn) if isinstance(i, Unknown) else i for i in items]

    def _fail(
        self, conn: Connection, failed: list[Deferred]
    ) -> tuple[None, list[MembershipChange | IgnoredEvent]]:
        """Each failed entry is tried again later, or is a dead letter: refused (a permanent
        error, a bug) or past the age limit; the dead letter is in the member's history."""
        now = self._clock()
        dead: list[MembershipChange | IgnoredEvent] = []
        for d in failed:
            row, error = d.row, d.error
            decision = self.drainer.fail(conn, graph_store.INBOX, row, error, self._retry)
            if decision is None:
                continue  # taken over by another replica meanwhile
            if isinstance(decision, Dead):
                dead.append(_dead_letter(row, decision, now))
                log.error("graph_lookup_dead_letter", event_id=row.dedupe_key, error=str(error))
            else:
                assert isinstance(decision, Retry)
                log.warning(
                    "graph_lookup_failed",
                    event_id=row.dedupe_key,
                    member_id=row.member_id,
                    error=str(error),
                    retry_in_seconds=round((decision.at - now).total_seconds(), 1),
                )
        return None, dead

    async def _attempt(self, row: InboxRow, needs: Needs) -> Resolved | Deferred:
        try:
            return Resolved(row, await self.resolve(row, needs))
        except DeliveryError as exc:
            return Deferred(row, exc)
        except Exception as exc:
            log.exception("graph_lookup_crashed", event_id=row.dedupe_key)
            return Deferred(row, bug(exc, "lookup"))

    async def resolve(self, row: InboxRow, needs: Needs) -> MembershipChange | Unknown:
        """The change an inbox row stands for, with what Graph says about it."""
        group = GroupRef(id=row.group_id)
        user: UserRef | Unknown = UserRef(id=row.member_id)
        member_of = None
        if self.directory is not None:
            if needs.group_names:
                group = await self._group(row)
            if needs.user_fields:
                user = await self._user(row, group, needs)
            # Current groups matter only when the group left grants something to keep.
            granting = self.bridge.mapping.workspaces_for("entra", group)
            if row.removed and isinstance(user, UserRef) and granting:
                member_of = await self._member_of(row)
        if isinstance(user, Unknown):
            return user
        return MembershipChange(
            provider="entra",
            event_id=row.dedupe_key,
            occurred_at=row.occurred_at,
            change=ChangeKind.removed if row.removed else ChangeKind.added,
            user=user,
            group=group,
            member_of=member_of,
            note=origin_note(row.subscription_id, row.group_id, row.removed),
        )

    async def _group(self, row: InboxRow) -> GroupRef:
        assert self.directory is not None
        try:
            return await self.directory.group(row.group_id)
        except NotFoundError:
            # A deleted group still took access away: rules by id can match it yet.
            # Its name is what a rule by name matched: the one the bridge last saw it under.
            log.info("graph_group_not_found", event_id=row.dedupe_key, group_id=row.group_id)
            name = await anyio.to_thread.run_sync(self._known_name, row.group_id)
            return GroupRef(id=row.group_id, name=name)

    def _known_name(self, group_id: str) -> str | None:
        with self.bridge.db.read() as conn:
            return membership_store.known_group_name(conn, "entra", group_id)

    async def _user(self, row: InboxRow, group: GroupRef, needs: Needs) -> UserRef | Unknown:
        assert self.directory is not None
        try:
            return await self.directory.user(row.member_id)
        except NotFoundError:
            return Unknown(row, group, needs.user_fields)

    async def _member_of(self, row: InboxRow) -> tuple[GroupRef, ...]:
        assert self.directory is not None
        try:
            groups = await self.directory.current_groups(row.member_id)
        except NotFoundError:
            return ()  # a deleted user is in no group
        mapping = self.bridge.mapping
        # Only groups that grant something matter, and the rest would bloat the event log.
        return tuple(g for g in groups if mapping.workspaces_for("entra", g))


def _dead_letter(row: InboxRow, dead: Dead, now: datetime) -> IgnoredEvent:
    """The history line of an entry that died: why, and what the operator can do."""
    if dead.gave_up:
        hours = hours_waited(row.received_at, now)
        why = f"Graph could not be asked for {hours} h ({dead.reason})"
    else:
        why = f"the lookup was refused ({dead.reason})"
    return IgnoredEvent(
        provider="entra",
        event_id=letter_event_id(row.dedupe_key, now),
        occurred_at=row.occurred_at,
        kind="graph.removed (unresolved)" if row.removed else "graph.added (unresolved)",
        reason=(
            f"dead letter: {why}; nothing was decided on a guess: replay it once fixed "
            f"(POST /admin/dead-letters/replay, inbox {row.id}) or check the member's groups "
            "in Entra and detach by hand (POST /admin/changes)"
        ),
        user=UserRef(id=row.member_id),
        group=GroupRef(id=row.group_id),
    )
