"""A limit on failed authentications per client address; never on authenticated requests.

A request that presents the right secret is always served, whatever its address did before:
Okta and Graph call from shared addresses, and Okta does not retry a 4xx, so refusing a good
delivery would lose it. Only failures are counted; past the limit they are answered 429 with
Retry-After instead of 401, which slows a guesser that behaves and tells an operator.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0
MAX_CLIENTS = 10_000  # addresses tracked at once; the quietest are forgotten first


class FailureLimiter:
    """Counts failed authentications per client address over a sliding minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, client: str | None) -> float | None:
        """Note a failure; the seconds to wait when `client` is over the limit, else None."""
        if self.per_minute <= 0:
            return None
        now = self._clock()
        key = client or "unknown"
        with self._lock:
            times = self._failures.pop(key, None) or deque()
            while times and now - times[0] >= WINDOW_SECONDS:
                times.popleft()
            times.append(now)
            self._failures[key] = times
            while len(self._failures) > MAX_CLIENTS:
                self._failures.popitem(last=False)
            if len(times) <= self.per_minute:
                return None
            return max(1.0, math.ceil(WINDOW_SECONDS - (now - times[0])))
