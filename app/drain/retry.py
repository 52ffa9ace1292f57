"""The retry policy, as a pure decision: when to try a failed try again, or give up."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.errors import DeliveryError, RetryableError
from app.settings import Settings
from app.store.queue import Dead, Decision, Retry, Split


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts, age, and the exponential backoff's bounds."""

    max_attempts: int = 15
    max_age: timedelta = timedelta(days=3)
    base_seconds: float = 2.0
    max_seconds: float = 900.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """BRIDGE_MAX_ATTEMPTS, BRIDGE_MAX_AGE_SECONDS, BRIDGE_RETRY_BASE/MAX_SECONDS."""
        return cls(
            max_attempts=settings.bridge_max_attempts,
            max_age=timedelta(seconds=settings.bridge_max_age_seconds),
            base_seconds=settings.bridge_retry_base_seconds,
            max_seconds=settings.bridge_retry_max_seconds,
        )


DEFAULT_RETRY = RetryPolicy()


def next_attempt_at(
    policy: RetryPolicy,
    error: RetryableError,
    *,
    attempts: int,
    created_at: datetime,
    now: datetime,
    rand: random.Random | None = None,
) -> datetime | None:
    """When to try again after `attempts` failed tries; None means give up (dead letter)."""
    if attempts >= policy.max_attempts:
        return None
    # Cap the exponent: 2.0 * 2**1100 does not fit a float, and the ceiling wins long before.
    ceiling = min(policy.max_seconds, policy.base_seconds * 2 ** min(attempts - 1, 64))
    # "Equal jitter": at least half the backoff, so retries spread but still back off.
    delay = ceiling / 2 + (rand or random).uniform(0, ceiling / 2)
    if error.retry_after is not None:
        # Never sooner than COR asked (a short Retry-After must not burn the attempts in
        # seconds), and never later than the backoff ceiling.
        delay = max(delay, min(error.retry_after, max(policy.max_seconds, 1.0)))
    when = now + timedelta(seconds=delay)
    if when - created_at > policy.max_age:
        return None
    return when


def decide(
    policy: RetryPolicy,
    error: DeliveryError,
    *,
    attempts: int,
    created_at: datetime,
    now: datetime,
    together: bool = False,
    rand: random.Random | None = None,
) -> Decision:
    """What a failed try comes to, after `attempts` tries: Retry(at), Dead(why) or Split.

    A retryable error is tried again with backoff until the attempts or the age run out; any
    other refusal is final for a call that carried one job (`together` False), and a call
    that carried several is split: each tried alone, so one bad workspace sinks nothing else.
    """
    if isinstance(error, RetryableError):
        at = next_attempt_at(
            policy, error, attempts=attempts, created_at=created_at, now=now, rand=rand
        )
        if at is None:
            return Dead(f"gave up after {attempts} attempts: {error.message}", gave_up=True)
        return Retry(at)
    return Split() if together else Dead(error.message)
