"""One drainer for every work table: rounds of claim -> work, the claim kept alive meanwhile.

The detach worker (the outbox), the Graph resolver (the inbox) and the Okta checker (held
changes) each are a Drainer with their own claim, lease extension and work. A round claims
a batch under a short lease (BRIDGE_LEASE_SECONDS), and a lease keeper renews it every third
of the lease while the batch is worked: a live replica's slow call is never taken over, and
a killed replica's claims are free once their lease lapses. Work runs at most `concurrency`
at a time (`each`). Retry and dead letters are the work's own (app/drain/retry.py
decides, app/store/ applies), so are wake-ups: `wake` starts the next round now. The detach
worker does not wait for a batch before the next claim: it uses `claim` and `keep` itself and
keeps claimed groups in a feed (app/delivery/feed.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

import anyio
import structlog
from sqlalchemy import Connection

from app.drain.retry import RetryPolicy, decide
from app.errors import DeliveryError, PermanentError
from app.rounds import Rounds, utcnow
from app.store import Database
from app.store.queue import Decision, WorkTable

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Claim(Protocol[T]):
    """Take up to `limit` due rows for `worker_id` under a lease."""

    def __call__(
        self, conn: Connection, *, now: datetime, limit: int, worker_id: str, lease: timedelta
    ) -> list[T]: ...


Extend = Callable[[Connection, Sequence[int], str, datetime], int]


class Failed(Protocol):
    """A claimed row whose try failed: how often it was tried, since when it waits."""

    @property
    def id(self) -> int: ...
    @property
    def attempts(self) -> int: ...
    @property
    def received_at(self) -> datetime: ...


class Drained:
    """What the worker, the Graph resolver and the Okta checker show of their drainer."""

    drainer: Drainer[Any]

    def wake(self) -> None:
        """New work was committed: look now rather than at the next poll."""
        self.drainer.wake()

    @property
    def last_beat(self) -> float | None:
        """When the latest round started (monotonic), for /readyz."""
        return self.drainer.last_beat

    async def run_once(self) -> int:
        """Claim one batch and work it; returns how many were claimed."""
        return await self.drainer.run_once()


class Drainer(Generic[T]):
    """Rounds of claim -> work over one work table, until cancelled."""

    def __init__(
        self,
        name: str,
        db: Database,
        worker_id: str,
        *,
        claim: Claim[T],
        extend: Extend,
        id_of: Callable[[T], int],
        work: Callable[[list[T]], Awaitable[None]],
        batch: int,
        concurrency: int,
        poll_seconds: float,
        lease: timedelta,
        clock: Callable[[], datetime] = utcnow,
        turn: Callable[[], AbstractAsyncContextManager[object]] = nullcontext,
    ) -> None:
        self.name = name
        self.db = db
        self.worker_id = worker_id
        self._claim_rows = claim
        self._extend_rows = extend
        self._id_of = id_of
        self._work = work
        self._batch = batch
        self._limit = asyncio.Semaphore(concurrency)
        self.poll = poll_seconds
        self.lease = lease
        self.clock = clock
        self._turn = turn  # held while claiming (SQLite's write turn for the resolver)
        self.rounds = Rounds(name)

    def wake(self) -> None:
        """New work was committed: look now rather than at the next poll."""
        self.rounds.wake()

    @property
    def last_beat(self) -> float | None:
        """When the latest round started (monotonic), for /readyz."""
        return self.rounds.last_beat

    async def run(self) -> None:
        """Drain until cancelled; a failing round is logged and retried, never fatal."""
        self.rounds.last_beat = time.monotonic()  # alive from the start, for /readyz
        await self.rounds.loop(self._round, after_error=self.poll)

    async def _round(self) -> float:
        return 0.0 if await self.run_once() else self.poll

    async def run_once(self) -> int:
        """Claim one batch and work it, its lease kept alive; returns how many were claimed."""
        async with self._turn():
            rows = await anyio.to_thread.run_sync(self.claim)
        if rows:
            async with anyio.create_task_group() as tg:
                # A batch can outlast its lease while the far end is slow: keep the claim
                # alive, or another replica takes it over and sends it all again.
                tg.start_soon(self.keep, {self._id_of(r) for r in rows})
                await self._work(rows)
                tg.cancel_scope.cancel()
        return len(rows)

    async def each(
        self, items: Sequence[Any], fn: Callable[[Any], Awaitable[R]], *, limited: bool = True
    ) -> list[R]:
        """fn(item) for every item, at most `concurrency` at a time (or, `limited=False`, all
        at once: `fn` takes `slot()` itself around what must be bounded); results in order."""

        results: list[Any] = [None] * len(items)

        async def run(i: int) -> None:
            if not limited:
                results[i] = await fn(items[i])
                return
            async with self._limit:
                results[i] = await fn(items[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(items)):
                tg.start_soon(run, i)
        return results

    def slot(self) -> asyncio.Semaphore:
        """One of the `concurrency` places: `async with drainer.slot(): ...`."""
        return self._limit

    def fail(
        self,
        conn: Connection,
        table: WorkTable,
        row: Failed,
        error: DeliveryError,
        policy: RetryPolicy,
    ) -> Decision | None:
        """A failed try of a claimed row of a work table, decided by the retry policy and
        applied: Retry(at) or Dead. None when another replica took the row over meanwhile."""
        now = self.clock()
        attempts, since = row.attempts + 1, row.received_at
        decision = decide(policy, error, attempts=attempts, created_at=since, now=now)
        mine = table.apply(conn, row.id, self.worker_id, decision, str(error), now)
        return decision if mine else None

    def claim(self) -> list[T]:
        """Up to a batch of due rows, claimed under a lease (in the calling thread)."""
        with self.db.begin() as conn:
            return self._claim_rows(
                conn, now=self.clock(), limit=self._batch, worker_id=self.worker_id,
                lease=self.lease,
            )  # fmt: skip

    async def keep(self, held: Collection[int]) -> None:
        """Renew the lease of the rows in `held` every third of the lease, until cancelled;
        `held` may change meanwhile (the worker's claims in flight)."""
        every = self.lease.total_seconds() / 3
        while True:
            await anyio.sleep(every)
            if not held:
                continue
            try:
                await anyio.to_thread.run_sync(self._extend, sorted(held))
            except Exception:  # the lease lapses and another replica takes over: no loss
                log.exception(f"{self.name}_lease_not_extended")

    def _extend(self, ids: list[int]) -> None:
        with self.db.begin() as conn:
            self._extend_rows(conn, ids, self.worker_id, self.clock() + self.lease)


def bug(exc: Exception, what: str) -> PermanentError:
    """An exception nobody raised on purpose: a bug in the bridge. Every drainer stops the
    row it hit as a dead letter (the caller logs the traceback) instead of retrying it."""
    text = f"a bug in the bridge stopped this {what} ({type(exc).__name__}; see the log)"
    return PermanentError(text, code="BRIDGE_BUG")
