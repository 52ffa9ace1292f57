"""The worker's feed: claimed groups waiting for a delivery place, and the claims it holds.

The worker claims the next batch while the current one is in flight (app/delivery/worker.py),
so its `concurrency` places never wait for a round to finish. What is claimed waits here:

- A group is checked for jobs called off since the claim right before it is sent, a few
  groups at a time (one read for the next `check_ahead` groups, not one per call). The next
  few are checked while the last checked ones are being taken (when no more than half of
  `check_ahead` are left), so a delivery place that comes free finds a checked group instead
  of waiting for that read. A checked group that waited more than FRESH_SECONDS for a place
  (a slow COR) is checked again, so a re-grant taken in meanwhile still calls it off.
- A new claim's jobs join the waiting group of the same COR user and source instead of
  making a call of their own (a job marked solo still travels alone).
- `held` is every job claimed and not yet recorded: the lease keeper renews exactly these,
  and the worker claims no more while it holds `max_held`. A job claimed again while held
  (its lease lapsed during a database outage) is not fed twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from itertools import groupby

import structlog

from app.store.jobs import Job

log = structlog.get_logger(__name__)


def coalesce(jobs: list[Job]) -> list[list[Job]]:
    """One group per (COR user, source); a job marked solo travels alone."""
    groups: list[list[Job]] = []
    key = lambda j: (j.cor_user_id, j.source)  # noqa: E731
    for _, same_user in groupby(sorted(jobs, key=key), key=key):
        together = []
        for job in same_user:
            if job.solo:
                groups.append([job])
            else:
                together.append(job)
        if together:
            groups.append(together)
    return groups


Check = Callable[[list[list[Job]]], Awaitable[list[list[Job]]]]
FRESH_SECONDS = 0.05  # how long a check stands for a group waiting for a delivery place


class Feed:
    """Groups of claimed jobs, oldest first, taken by the worker's senders."""

    def __init__(self, check: Check, check_ahead: int) -> None:
        self._check = check
        self._ahead = max(1, check_ahead)
        self._unchecked: deque[list[Job]] = deque()
        self._ready: deque[tuple[float, list[Job]]] = deque()  # (checked at, group)
        self._waiting: dict[tuple[str, str], list[Job]] = {}  # unchecked, by user and source
        self._checking = asyncio.Lock()
        self._arrived = asyncio.Event()
        self._moved = asyncio.Event()  # a group taken or a job recorded
        self._closed = False
        self._ahead_task: asyncio.Task[None] | None = None
        self.held: set[int] = set()

    def put(self, groups: Iterable[list[Job]]) -> None:
        """Claimed groups join the queue (or the waiting group of their COR user)."""
        for claimed in groups:
            group = [j for j in claimed if j.id not in self.held]  # not fed twice
            if not group:
                continue
            self.held.update(j.id for j in group)
            key = (group[0].cor_user_id, group[0].source)
            solo = any(j.solo for j in group)
            waiting = None if solo else self._waiting.get(key)
            if waiting is not None:
                waiting.extend(group)
                continue
            self._unchecked.append(group)
            if not solo:
                self._waiting[key] = group
        self._arrived.set()

    def close(self) -> None:
        """Nothing more will be put: `take` returns None once the queue is empty."""
        self._closed = True
        self._arrived.set()

    def waiting(self) -> int:
        """Groups not yet taken."""
        return len(self._unchecked) + len(self._ready)

    def done(self, ids: Iterable[int]) -> None:
        """These jobs are recorded (or their claim given up): no longer held."""
        self.held.difference_update(ids)
        self._moved.set()

    async def moved(self) -> None:
        """Until a group is taken or a job recorded."""
        self._moved.clear()
        await self._moved.wait()

    async def take(self) -> list[Job] | None:
        """The next group to send, checked; None when closed and empty."""
        while True:
            if self._ready:
                checked_at, group = self._ready[0]
                if time.monotonic() - checked_at <= FRESH_SECONDS:
                    self._ready.popleft()
                    self._moved.set()
                    self._check_ahead()
                    return group
                # Checked too long ago: every waiting group is checked again, in order.
                self._unchecked.extendleft(g for _, g in reversed(self._ready))
                self._ready.clear()
                continue
            if self._unchecked:
                async with self._checking:
                    if not self._ready and self._unchecked:
                        await self._check_next()
                continue
            if self._closed and not self._checking.locked():
                return None
            self._arrived.clear()
            await self._arrived.wait()

    def _check_ahead(self) -> None:
        """Check the next groups now if few checked ones are left (in a task of its own)."""
        if (
            2 * len(self._ready) > self._ahead
            or not self._unchecked
            or self._checking.locked()
            or self._ahead_task is not None
        ):
            return
        self._ahead_task = asyncio.create_task(self._ahead_once(), name="cor-bridge-check-ahead")

    async def _ahead_once(self) -> None:
        try:
            async with self._checking:
                if 2 * len(self._ready) <= self._ahead and self._unchecked:
                    await self._check_next()
        except Exception:
            # Not fatal: these jobs' claims are given up (the lease lapses, they go again).
            log.exception("detach_check_failed")
        finally:
            self._ahead_task = None

    async def aclose(self) -> None:
        """Wait for a check ahead under way (cancelled; its database read ends first), so
        nothing of the feed's outlives the worker."""
        task = self._ahead_task
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _check_next(self) -> None:
        chunk: list[list[Job]] = []
        while self._unchecked and len(chunk) < self._ahead:
            group = self._unchecked.popleft()
            key = (group[0].cor_user_id, group[0].source)
            if self._waiting.get(key) is group:
                del self._waiting[key]
            chunk.append(group)
        ids = {j.id for g in chunk for j in g}
        try:
            kept = await self._check(chunk)
        except BaseException:
            self.done(ids)  # its claim given up: the lease lapses, the jobs go again
            self._arrived.set()
            raise
        self.done(ids - {j.id for g in kept for j in g})  # called off: cancelled
        checked_at = time.monotonic()
        self._ready.extend((checked_at, g) for g in kept)
        self._arrived.set()  # senders waiting meanwhile take them
