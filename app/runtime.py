"""The running bridge: the objects a request needs, and the one way changes go in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import structlog
from fastapi import Depends, Request
from sqlalchemy import Connection

from app import metrics
from app.changes import IgnoredEvent, MembershipChange
from app.delivery.worker import Worker
from app.guard import FailureLimiter
from app.intake import Decision, accept_changes
from app.mapping import Mapping
from app.settings import Settings
from app.store import Database
from app.store.batch import GroupCommit
from app.store.db import serialize_intake
from app.tables import MappingHolder

log = structlog.get_logger(__name__)
T = TypeVar("T")
Item = MembershipChange | IgnoredEvent


class Bridge:
    """What the routes share: settings, database, mapping table and worker."""

    def __init__(self, settings: Settings, db: Database, tables: MappingHolder) -> None:
        self.settings = settings
        self.db = db
        self.tables = tables
        self.worker: Worker | None = None
        self.auth_failures = FailureLimiter(settings.bridge_auth_failures_per_minute)
        # Requests that arrive together share a transaction and its commit (one disk flush).
        # Each takes intake's turn first: a SCIM request locks rows before its intake does.
        self.commits = GroupCommit(db, first=serialize_intake)

    @property
    def mapping(self) -> Mapping:
        """The mapping table in force (replaced whole on reload, so a read is consistent)."""
        return self.tables.current

    async def submit(self, items: Sequence[MembershipChange | IgnoredEvent]) -> list[Decision]:
        """Run intake in one committed transaction, then wake the worker."""
        _, decisions = await self.transact(lambda conn: (None, items), weight=len(items))
        return decisions

    async def transact(
        self, work: Callable[[Connection], tuple[T, Sequence[Item]]], weight: int = 1
    ) -> tuple[T, list[Decision]]:
        """Run `work` and intake of the changes it returns in one transaction.

        `work` may write its own rows (the SCIM server does); nothing is kept unless the
        whole transaction commits, and only then is the worker woken. Transactions that
        arrive together are committed together (app/store/batch.py), each in its savepoint.
        """
        result, items, decisions = await self.commits.run(
            lambda conn: self._intake(conn, work), weight
        )
        for item, decision in zip(items, decisions, strict=True):
            kind = item.change.value if isinstance(item, MembershipChange) else "ignored"
            metrics.CHANGES.labels(item.provider, kind, decision.decision).inc()
            log.info(
                "change_accepted",
                event_id=decision.event_id,
                provider=item.provider,
                kind=kind,
                decision=decision.decision,
                detail=decision.detail,
                job_ids=decision.jobs or None,
            )
        if self.worker is not None and any(d.jobs for d in decisions):
            self.worker.wake()
        return result, decisions

    def _intake(
        self, conn: Connection, work: Callable[[Connection], tuple[T, Sequence[Item]]]
    ) -> tuple[T, list[Item], list[Decision]]:
        delay = timedelta(seconds=self.settings.bridge_delivery_delay_seconds)
        result, found = work(conn)
        items = list(found)
        decisions = accept_changes(conn, self.mapping, items, now=datetime.now(UTC), delay=delay)
        return result, items, decisions


def get_bridge(request: Request) -> Bridge:
    """The app's Bridge, for `Depends`."""
    bridge: Bridge = request.app.state.bridge
    return bridge


BridgeDep = Annotated[Bridge, Depends(get_bridge)]
