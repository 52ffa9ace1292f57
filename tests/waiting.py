"""Waiting in tests: poll a probe until it returns something truthy, or fail at a deadline.

`wait_for` blocks (process tests, blocking portals); `wait_for_async` yields to the event
loop between tries (in-process tests, where the bridge runs on the same loop). Both share
the deadline and the failure message.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class _Deadline:
    def __init__(self, timeout: float, what: str) -> None:
        self.timeout = timeout
        self.what = what
        self.at = time.monotonic() + timeout

    def check(self, last: object) -> None:
        """Fail if the deadline has passed, naming what was awaited and the last answer."""
        if time.monotonic() >= self.at:
            raise AssertionError(
                f"timed out after {self.timeout:.1f}s waiting for {self.what}; last: {last!r}"
            )


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call `probe` until it returns something truthy, and return that."""
    deadline = _Deadline(timeout, what)
    while not (last := probe()):
        deadline.check(last)
        time.sleep(interval)
    return last


async def wait_for_async(
    probe: Callable[[], Awaitable[T | None] | T | None],
    *,
    timeout: float = 5.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """`wait_for` on the event loop: `probe` may be a plain or an async function."""
    deadline = _Deadline(timeout, what)
    while True:
        last = probe()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last  # type: ignore[return-value]
        deadline.check(last)
        await asyncio.sleep(interval)
