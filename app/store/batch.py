"""Group commit: the work of callers who arrive together shares one transaction and one commit.

A durable commit costs a disk flush (SQLite's WAL fsync, PostgreSQL's WAL flush), and
intake and the worker's bookkeeping each run one small transaction per request or detach.
`GroupCommit.run(work)` queues `work`; one flusher at a time takes everything queued, runs
each piece in a savepoint of one transaction and commits once. A lone caller waits for
nothing (its batch is just itself); under load, callers that arrive while a commit is on
disk go in the next one. Each caller gets its own result or exception only after the commit:
a piece that raises is rolled back to its savepoint and the others keep theirs; a commit
that fails fails every piece of it. To each caller it is its own transaction, run in
arrival order, each seeing what the ones before it wrote.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from sqlalchemy import Connection

from app.store.db import Database

T = TypeVar("T")
Work = Callable[[Connection], Any]
Outcome = tuple[bool, Any]  # (ok, result or exception)


class GroupCommit:
    """Runs pieces of work in shared transactions of at most `max_weight` (the pieces' weights
    summed: intake weighs a request by its changes, so a batch of big requests stays short)."""

    def __init__(
        self,
        db: Database,
        max_weight: int = 200,
        first: Callable[[Connection], None] | None = None,
    ) -> None:
        self.db = db
        self.max_weight = max_weight
        # Run at the start of every shared transaction, before any piece: a lock every piece
        # would take anyway (intake's turn) is then taken before any row lock, and held by the
        # transaction itself, so a piece rolled back to its savepoint does not drop it.
        # Taken later, by the second piece, it would come after the first piece's row locks:
        # the order two transactions can deadlock on.
        self.first = first
        self._queue: list[tuple[Work, asyncio.Future[Any], int]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, work: Callable[[Connection], T], weight: int = 1) -> T:
        """`work(conn)` committed; its result, or what it raised."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future, max(1, weight)))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="cor-bridge-group-commit")
        return await future

    def _next_batch(self) -> list[tuple[Work, asyncio.Future[Any], int]]:
        taken, weight = 0, 0
        while taken < len(self._queue) and (taken == 0 or weight < self.max_weight):
            weight += self._queue[taken][2]
            taken += 1
        if taken > 1 and weight > self.max_weight:
            taken -= 1  # the last one would overfill the batch: it starts the next one
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    async def _flush(self) -> None:
        batch: list[tuple[Work, asyncio.Future[Any], int]] = []
        try:
            while self._queue:
                batch = self._next_batch()
                try:
                    outcomes = await anyio.to_thread.run_sync(
                        self._commit, [work for work, _, _ in batch]
                    )
                except Exception as exc:  # the commit itself failed: nothing of it is kept
                    outcomes = [(False, exc)] * len(batch)
                for (_, future, _), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                batch = []
        finally:
            self._flusher = None
            for _, future, _ in batch + self._queue:  # cancelled (shutdown): nobody is left waiting
                future.cancel()
            self._queue = []

    def _commit(self, works: list[Work]) -> list[Outcome]:
        if len(works) == 1:  # no savepoint needed
            try:
                with self.db.begin() as conn:
                    if self.first is not None:
                        self.first(conn)
                    return [(True, works[0](conn))]
            except Exception as exc:
                return [(False, exc)]
        outcomes: list[Outcome] = []
        with self.db.begin() as conn:
            if self.first is not None:
                self.first(conn)
            for work in works:
                try:
                    with conn.begin_nested():
                        outcomes.append((True, work(conn)))
                except Exception as exc:
                    outcomes.append((False, exc))
        return outcomes
