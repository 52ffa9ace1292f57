"""When a failed Graph lookup is tried again: Graph's Retry-After, else capped backoff."""

from __future__ import annotations

import random

from app.errors import BridgeError, RetryableError

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 900.0


def retry_delay(error: BridgeError, attempts: int, rand: random.Random | None = None) -> float:
    """Seconds until a failed lookup is tried again: Retry-After, else capped backoff."""
    if isinstance(error, RetryableError) and error.retry_after is not None:
        return min(error.retry_after, BACKOFF_MAX_SECONDS)
    if not isinstance(error, RetryableError):
        # A missing permission or a bad secret waits for an operator: try now and then.
        return BACKOFF_MAX_SECONDS
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** min(attempts - 1, 20))
    jitter: float = (rand or random).uniform(0, ceiling / 2)
    return ceiling / 2 + jitter
