"""The retry policy: a pure decision, tested without a clock or a database."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.drain.retry import RetryPolicy, next_attempt_at
from app.errors import RetryableError

CREATED = datetime(2026, 3, 3, 20, 0, tzinfo=UTC)
NOW = CREATED + timedelta(minutes=1)
POLICY = RetryPolicy(max_attempts=15, max_age=timedelta(days=3), base_seconds=2, max_seconds=900)
UNAVAILABLE = RetryableError("COR answered 503", status=503)


def delay(
    attempts: int,
    *,
    policy: RetryPolicy = POLICY,
    error: RetryableError = UNAVAILABLE,
    now: datetime = NOW,
    seed: int = 1,
) -> float | None:
    """Seconds from `now` to the next try, or None for give up."""
    when = next_attempt_at(
        policy, error, attempts=attempts, created_at=CREATED, now=now, rand=random.Random(seed)
    )
    return None if when is None else (when - now).total_seconds()


@pytest.mark.parametrize("attempts", range(1, 10))
def test_backoff_grows_exponentially_with_equal_jitter(attempts):
    ceiling = 2 * 2 ** (attempts - 1)
    delays = [delay(attempts, seed=seed) for seed in range(200)]
    assert all(d is not None and ceiling / 2 <= d <= ceiling for d in delays)
    # Jitter really spreads the retries over the upper half of the window.
    assert min(delays) < ceiling * 0.6  # type: ignore[operator]
    assert max(delays) > ceiling * 0.9  # type: ignore[operator]


def test_the_same_seed_gives_the_same_delay():
    assert delay(4, seed=42) == delay(4, seed=42)
    assert delay(4, seed=42) != delay(4, seed=43)


def test_each_attempt_waits_at_least_as_long_as_the_last_could():
    # Equal jitter: the floor of attempt n+1 is the ceiling of attempt n.
    for attempts in range(1, 9):
        longest_now = max(delay(attempts, seed=s) for s in range(50))  # type: ignore[type-var]
        shortest_next = min(delay(attempts + 1, seed=s) for s in range(50))  # type: ignore[type-var]
        assert shortest_next >= longest_now


@pytest.mark.parametrize("attempts", [10, 11, 14])
def test_backoff_stops_at_the_ceiling(attempts):
    delays = [delay(attempts, seed=seed) for seed in range(100)]
    assert all(d is not None and 450 <= d <= 900 for d in delays)


def test_many_attempts_do_not_overflow():
    patient = RetryPolicy(max_attempts=10_000, max_age=timedelta(days=3650))
    assert 450 <= delay(5000, policy=patient) <= 900  # type: ignore[operator]


def test_zero_base_means_no_backoff():
    instant = RetryPolicy(base_seconds=0)
    assert [delay(n, policy=instant) for n in (1, 5, 14)] == [0.0, 0.0, 0.0]


def test_retry_after_is_a_floor_on_the_backoff():
    throttled = RetryableError("COR answered 429", status=429, retry_after=7)
    early = [delay(n, error=throttled, seed=s) for n, s in ((1, 1), (1, 2))]
    assert early == [7, 7]  # longer than the first backoffs: COR's word wins
    assert 256 <= delay(9, error=throttled, seed=3) <= 512  # type: ignore[operator]


def test_a_short_retry_after_does_not_burn_the_attempts():
    assert delay(1, error=RetryableError("x", retry_after=300)) == 300
    assert delay(1, error=RetryableError("x", retry_after=0)) >= 1  # type: ignore[operator]
    patient = RetryPolicy(max_seconds=60)
    assert delay(1, error=RetryableError("x", retry_after=3600), policy=patient) == 60


def test_retry_after_is_capped_at_the_ceiling():
    assert delay(1, error=RetryableError("x", retry_after=86_400)) == 900


def test_give_up_at_max_attempts():
    policy = RetryPolicy(max_attempts=3)
    assert delay(2, policy=policy) is not None
    assert delay(3, policy=policy) is None
    assert delay(4, policy=policy) is None


def test_give_up_at_max_attempts_even_with_retry_after():
    policy = RetryPolicy(max_attempts=3)
    assert delay(3, policy=policy, error=RetryableError("x", retry_after=1)) is None


def test_give_up_when_the_next_try_would_be_past_max_age():
    policy = RetryPolicy(max_age=timedelta(hours=1), base_seconds=60, max_seconds=60)
    # 60 s of backoff from 58:59 lands before the hour is up; from 59:31 it cannot.
    assert delay(1, policy=policy, now=CREATED + timedelta(minutes=58, seconds=59)) is not None
    assert delay(1, policy=policy, now=CREATED + timedelta(minutes=59, seconds=31)) is None


def test_give_up_when_already_past_max_age():
    policy = RetryPolicy(max_age=timedelta(hours=1), base_seconds=0)
    assert delay(1, policy=policy, now=CREATED + timedelta(hours=2)) is None


def test_retry_after_past_max_age_gives_up():
    policy = RetryPolicy(max_age=timedelta(minutes=5))
    assert delay(1, policy=policy, error=RetryableError("x", retry_after=600)) is None


def test_without_a_seeded_random_the_delay_stays_in_bounds():
    when = next_attempt_at(POLICY, UNAVAILABLE, attempts=3, created_at=CREATED, now=NOW)
    assert when is not None
    assert 4 <= (when - NOW).total_seconds() <= 8


@given(
    attempts=st.integers(min_value=1, max_value=40),
    base=st.floats(min_value=0, max_value=60),
    ceiling=st.floats(min_value=0, max_value=3600),
    retry_after=st.none() | st.floats(min_value=0, max_value=10_000),
    seed=st.integers(),
)
def test_the_next_try_is_never_early_nor_past_the_ceiling(
    attempts, base, ceiling, retry_after, seed
):
    policy = RetryPolicy(max_attempts=50, max_age=timedelta(days=30), base_seconds=base,
                         max_seconds=ceiling)  # fmt: skip
    error = RetryableError("x", retry_after=retry_after)
    d = delay(attempts, policy=policy, error=error, seed=seed)
    assert d is not None
    assert 0 <= d <= max(ceiling, 1.0) + 1e-6  # timedelta keeps microseconds
