"""Background work in rounds: one round, then a pause that a wake-up cuts short."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import structlog

log = structlog.get_logger(__name__)


def utcnow() -> datetime:
    """Now, aware, in UTC: the background work's clock (tests pass their own)."""
    return datetime.now(UTC)


def is_due(last_success: datetime | None, every_seconds: float, now: datetime) -> bool:
    """Whether a periodic round is due: never done, or its last success `every_seconds` ago.
    Read from the database, so replicas and restarts agree on when the next one is."""
    return last_success is None or now - last_success >= timedelta(seconds=every_seconds)


class Tasks:
    """A service's background tasks, cancelled together when it stops."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run `work` in the background until `stop`."""
        self._tasks.append(asyncio.create_task(work, name=name))

    async def stop(self) -> None:
        """Cancel every task and wait until each has ended."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


class Rounds:
    """What the worker, the Graph resolver and the subscription renewer share."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last_beat: float | None = None  # monotonic time of the latest round, for /readyz
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New work was committed: start the next round now rather than after the pause."""
        self._wake.set()

    async def loop(self, one_round: Callable[[], Awaitable[float]], *, after_error: float) -> None:
        """Run rounds until cancelled; a round returns the seconds to pause, a failing one is
        logged and followed by `after_error` seconds, never fatal."""
        while True:
            self.last_beat = time.monotonic()
            # Clear before the round, not after: a wake() during the round is not lost.
            self._wake.clear()
            try:
                pause = await one_round()
            except Exception:
                log.exception(f"{self.name}_round_failed")
                pause = after_error
            if pause > 0:
                with anyio.move_on_after(pause):
                    await self._wake.wait()
