"""The running bridge: the objects a request needs, and the one way changes go in."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol, TypeVar

import structlog
from fastapi import Depends, Request
from sqlalchemy import Connection

from app import metrics
from app.changes import ChangeKind, IgnoredEvent, MembershipChange
from app.delivery.worker import Worker
from app.guard import FailureLimiter
from app.intake import Decision, accept_changes
from app.intake.locks import intake_keys
from app.mapping import Mapping
from app.mapping_reload import MappingHolder
from app.settings import Settings
from app.store import Database
from app.store import held as held_store
from app.store.batch import GroupCommit, Keys
from app.store.db import lock_intake_keys

log = structlog.get_logger(__name__)
T = TypeVar("T")
Item = MembershipChange | IgnoredEvent


class Waker(Protocol):
    """Background work that new rows can start early."""

    def wake(self) -> None: ...


class Bridge:
    """What the routes share: settings, database, mapping table and worker."""

    def __init__(self, settings: Settings, db: Database, tables: MappingHolder) -> None:
        self.settings = settings
        self.db = db
        self.tables = tables
        self.worker: Worker | None = None
        self.okta_checker: Waker | None = None
        self.auth_failures = FailureLimiter(settings.bridge_auth_failures_per_minute)
        # Requests that arrive together share a transaction and its commit (one disk flush).
        # Each takes intake's turn first: a SCIM request locks rows before its intake does.
        self.commits = GroupCommit(db, first=lock_intake_keys)

    @property
    def mapping(self) -> Mapping:
        """The mapping table in force (replaced whole on reload, so a read is consistent)."""
        return self.tables.current

    async def submit(
        self, items: Sequence[MembershipChange | IgnoredEvent], *, ask_okta: bool = False
    ) -> list[Decision]:
        """Run intake in one committed transaction, then wake the worker.

        `ask_okta` (the Okta hook and System Log): with the Okta directory configured, a
        removal or deactivation is held, stored, until Okta says what the user is in now.
        Its users are known beforehand: it takes intake's turn for them only, and submits
        that arrive together go through intake as one call (GroupCommit's merge).
        """
        hold = bool(ask_okta and self.settings.okta_directory())
        given = list(items)

        def merged(conn: Connection, payloads: list[list[Item]]) -> list[Any]:
            _, every, decisions = self._intake(
                conn, lambda c: (None, [i for p in payloads for i in p]), hold
            )
            out, start = [], 0
            for part in payloads:
                end = start + len(part)
                out.append((None, every[start:end], decisions[start:end]))
                start = end
            return out

        _, decisions = await self._run(
            lambda conn: self._intake(conn, lambda c: (None, given), hold),
            len(given),
            keys=intake_keys(self.mapping, given),
            merge=(("intake", hold), merged, given),
        )
        return decisions

    async def transact(
        self,
        work: Callable[[Connection], tuple[T, Sequence[Item]]],
        weight: int = 1,
        *,
        ask_okta: bool = False,
        keys: Keys | None = None,
    ) -> tuple[T, list[Decision]]:
        """Run `work` and intake of the changes it returns in one transaction.

        `work` may write its own rows (the SCIM server does); nothing is kept unless the
        whole transaction commits, and only then is the worker woken. Transactions that
        arrive together are committed together (app/store/batch.py), each in its savepoint.
        `keys`: intake's lock keys the transaction takes first; None, the whole turn.
        """
        hold = bool(ask_okta and self.settings.okta_directory())
        return await self._run(lambda conn: self._intake(conn, work, hold), weight, keys=keys)

    async def _run(
        self,
        run: Callable[[Connection], tuple[T, list[Item], list[Decision]]],
        weight: int,
        *,
        keys: Keys | None,
        merge: Any = None,
    ) -> tuple[T, list[Decision]]:
        result, items, decisions = await self.commits.run(run, weight, keys=keys, merge=merge)
        account(items, decisions)
        if self.worker is not None and self._due_soon() and any(d.jobs for d in decisions):
            self.worker.wake()
        if self.okta_checker is not None and any(d.decision == HELD for d in decisions):
            self.okta_checker.wake()
        return result, decisions

    def _due_soon(self) -> bool:
        """Whether new jobs fall due before the worker's next poll: else a wake-up only makes
        it claim nothing (and take SQLite's write lock between two group commits)."""
        settings = self.settings
        return settings.bridge_delivery_delay_seconds < settings.bridge_poll_seconds

    def _intake(
        self, conn: Connection, work: Callable[[Connection], tuple[T, Sequence[Item]]], hold: bool
    ) -> tuple[T, list[Item], list[Decision]]:
        delay = timedelta(seconds=self.settings.bridge_delivery_delay_seconds)
        now = datetime.now(UTC)
        result, found = work(conn)
        items = list(found)
        asks = [i for i in items if hold and needs_okta(i) and isinstance(i, MembershipChange)]
        kept_out = held_store.hold(conn, asks, now)
        verdicts: list[Decision | None] = []
        told: set[str] = set()
        for item in items:
            verdict = None
            if item.event_id in kept_out and needs_okta(item):
                fresh = kept_out[item.event_id] and item.event_id not in told
                told.add(item.event_id)
                verdict = Decision(item.event_id, HELD, [HELD_TEXT]) if fresh else _duplicate(item)
            verdicts.append(verdict)
        rest = [i for i, v in zip(items, verdicts, strict=True) if v is None]
        decided = iter(accept_changes(conn, self.mapping, rest, now=now, delay=delay))
        decisions = [v if v is not None else next(decided) for v in verdicts]
        return result, items, decisions


def account(items: Sequence[Item], decisions: Sequence[Decision]) -> None:
    """Count the changes (one increment per label set) and log them: one line per call, so
    a 50-event delivery writes one line, not fifty (a line costs ~17 us of the event loop).
    A lone change keeps its flat line; several are listed under `events`, each with its id."""
    counts: Counter[tuple[str, str, str]] = Counter()
    lines = []
    for item, decision in zip(items, decisions, strict=True):
        kind = item.change.value if isinstance(item, MembershipChange) else "ignored"
        counts[(item.provider, kind, decision.decision)] += 1
        lines.append(
            {
                "event_id": decision.event_id,
                "provider": item.provider,
                "kind": kind,
                "decision": decision.decision,
                "detail": decision.detail,
                "job_ids": decision.jobs or None,
            }
        )
    for labels, n in counts.items():
        metrics.CHANGES.labels(*labels).inc(n)
    if len(lines) == 1:
        log.info("change_accepted", **lines[0])
    elif lines:
        log.info("changes_accepted", count=len(lines), events=lines)


HELD = "held"
HELD_TEXT = "held until Okta says which groups the user is in now"


def _duplicate(item: Item) -> Decision:
    """A change already held for Okta's answer."""
    return Decision(item.event_id, "duplicate", ["seen before (held for Okta's answer)"])


def needs_okta(item: Item) -> bool:
    """A removal or deactivation from Okta: Okta decides what is still granted."""
    return (
        isinstance(item, MembershipChange)
        and item.provider == "okta"
        and item.change in (ChangeKind.removed, ChangeKind.user_deactivated)
        and item.member_of is None
        and item.workspaces is None
    )


async def get_bridge(request: Request) -> Bridge:
    """The app's Bridge, for `Depends` (async: FastAPI runs a plain `def` in a thread)."""
    bridge: Bridge = request.app.state.bridge
    return bridge


BridgeDep = Annotated[Bridge, Depends(get_bridge)]
