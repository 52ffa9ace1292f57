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
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from sqlalchemy import Connection

from app.store.db import Database

T = TypeVar("T")
Work = Callable[[Connection], Any]
Outcome = tuple[bool, Any]  # (ok, result or exception)
Merge = Callable[[Connection, list[Any]], list[Any]]
Keys = frozenset[str]
# A piece whose lock keys only its work finds out (a SCIM request: which users a group
# PATCH touches is read under the group's row lock). On PostgreSQL it commits alone and
# takes its keys itself, after its own row locks (see app/store/db.py, intake locks).
LATE: Keys = frozenset({"\0late"})


@dataclass(eq=False)
class Piece:
    """One caller's work, its weight, what it locks (None: everything), and how it merges."""

    work: Work
    future: asyncio.Future[Any]
    weight: int
    keys: Keys | None = None
    merge: Hashable | None = None  # pieces with the same merge key may run as one call
    payload: Any = None
    merged: Merge | None = field(default=None, repr=False)


class GroupCommit:
    """Runs pieces of work in shared transactions of at most `max_weight` (the pieces' weights
    summed: intake weighs a request by its changes, so a batch of big requests stays short).

    A piece may say which lock keys it needs (`keys`: intake's users); `first(conn, keys)`
    then gets the union of a transaction's keys, or None when a piece did not say (the whole
    turn). Consecutive pieces of one `merge` key run as one call, `merged(conn, payloads)`,
    in one savepoint: a call of many changes costs about what a call of one does. Should that
    call raise, each piece runs again on its own, in its savepoint, so only a failing piece
    fails.
    """

    def __init__(
        self,
        db: Database,
        max_weight: int = 200,
        first: Callable[[Connection, Keys | None], None] | None = None,
    ) -> None:
        self.db = db
        self.max_weight = max_weight
        # Run at the start of every shared transaction, before any piece: a lock every piece
        # would take anyway (intake's turn) is then taken before any row lock, and held by the
        # transaction itself, so a piece rolled back to its savepoint does not drop it.
        # Taken later, by the second piece, it would come after the first piece's row locks:
        # the order two transactions can deadlock on.
        self.first = first
        self.alone_late = db.dialect == "postgresql"
        self._queue: list[Piece] = []
        self._flusher: asyncio.Task[None] | None = None

    async def run(
        self,
        work: Callable[[Connection], T],
        weight: int = 1,
        *,
        keys: Keys | None = None,
        merge: tuple[Hashable, Merge, Any] | None = None,
    ) -> T:
        """`work(conn)` committed; its result, or what it raised. `merge`: (key, merged,
        payload), where `merged(conn, payloads)` does what each piece's work would."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        piece = Piece(work, future, max(1, weight), keys)
        if merge is not None:
            piece.merge, piece.merged, piece.payload = merge
        self._queue.append(piece)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="cor-bridge-group-commit")
        return await future

    def _alone(self, piece: Piece) -> bool:
        return self.alone_late and piece.keys is LATE

    def _next_batch(self) -> list[Piece]:
        taken, weight = 0, 0
        while taken < len(self._queue) and (taken == 0 or weight < self.max_weight):
            piece = self._queue[taken]
            if taken and (self._alone(piece) or self._alone(self._queue[0])):
                break
            weight += piece.weight
            taken += 1
        if taken > 1 and weight > self.max_weight:
            taken -= 1  # the last one would overfill the batch: it starts the next one
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    async def _flush(self) -> None:
        batch: list[Piece] = []
        try:
            while self._queue:
                batch = self._next_batch()
                try:
                    outcomes = await anyio.to_thread.run_sync(self._commit, batch)
                except Exception as exc:  # the commit itself failed: nothing of it is kept
                    outcomes = [(False, exc)] * len(batch)
                else:
                    kept = zip(batch, outcomes, strict=True)
                    self.db.grew(sum(p.weight for p, (ok, _) in kept if ok))
                for piece, (ok, value) in zip(batch, outcomes, strict=True):
                    if piece.future.done():
                        continue
                    if ok:
                        piece.future.set_result(value)
                    else:
                        piece.future.set_exception(value)
                batch = []
        finally:
            self._flusher = None
            for piece in batch + self._queue:  # cancelled (shutdown): nobody is left waiting
                piece.future.cancel()
            self._queue = []

    def _commit(self, pieces: list[Piece]) -> list[Outcome]:
        with self.db.begin() as conn:
            if self.first is not None:
                self.first(conn, _union(pieces))
            if len(pieces) == 1:  # no savepoint needed: its failure is the transaction's
                return [(True, pieces[0].work(conn))]
            outcomes: list[Outcome] = []
            for run in _runs(pieces):
                if len(run) > 1:
                    outcomes += self._run_merged(conn, run)
                else:
                    outcomes.append(_in_savepoint(conn, run[0].work))
        return outcomes

    def _run_merged(self, conn: Connection, run: list[Piece]) -> list[Outcome]:
        merged = run[0].merged
        assert merged is not None
        ok, results = _in_savepoint(conn, lambda c: merged(c, [p.payload for p in run]))
        if ok:
            return [(True, r) for r in results]
        return [_in_savepoint(conn, p.work) for p in run]  # find the one that fails


def _in_savepoint(conn: Connection, work: Work) -> Outcome:
    try:
        with conn.begin_nested():
            return (True, work(conn))
    except Exception as exc:
        return (False, exc)


def _runs(pieces: list[Piece]) -> list[list[Piece]]:
    """Consecutive pieces of the same merge key together; a piece without one alone."""
    runs: list[list[Piece]] = []
    for piece in pieces:
        if runs and piece.merge is not None and runs[-1][0].merge == piece.merge:
            runs[-1].append(piece)
        else:
            runs.append([piece])
    return runs


def _union(pieces: list[Piece]) -> Keys | None:
    """The keys a transaction takes up front: None (the whole turn) if a piece did not say."""
    if any(p.keys is None for p in pieces):
        return None
    return frozenset(k for p in pieces if p.keys is not LATE for k in p.keys or ())
