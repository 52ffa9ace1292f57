"""Background work in rounds: one round, then a pause that a wake-up cuts short."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import anyio
import structlog

log = structlog.get_logger(__name__)


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
